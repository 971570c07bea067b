"""The model, its tokenizer and its image processor: presets for training from scratch, or any
``CLIPModel.from_pretrained`` id or folder for finetuning.

From scratch, the tokenizer is a byte-level BPE trained on the training texts (no download,
nothing to license), wrapped as a ``PreTrainedTokenizerFast`` so ``AutoTokenizer`` and the
zero-shot pipeline load it back from the saved folder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from entitynet.rundir import apply_umask
from entitynet.training.convert.clip_tokenizer import cleaning

try:  # transformers >= 5 names the PIL implementation (torchvision does not import here; asking for the
    # plain name prints a warning and falls back to it anyway); it saves as "CLIPImageProcessor"
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:  # transformers 4: CLIPImageProcessor is the PIL implementation
    from transformers import CLIPImageProcessor  # type: ignore[assignment]

logger = logging.getLogger(__name__)

# The end token is not id 2: CLIP's text model pools at the argmax of the ids when eos_token_id == 2
# (the original checkpoints' convention), and at the first end token otherwise.
SPECIAL_TOKENS = ["<|pad|>", "<|unk|>", "<|startoftext|>", "<|endoftext|>"]
# How train_tokenizer makes a tokenizer; a change here makes tokenizers recorded under another recipe be remade
TOKENIZER_RECIPE = "byte-level BPE; open_clip's cleaning, NFKC, lower case"


@dataclass(frozen=True)
class Preset:
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    text_width: int
    text_layers: int
    text_heads: int
    embed_dim: int


PRESETS = {
    # for tests and the demo: trains on a CPU at tens of milliseconds per step
    "tiny": Preset(64, 16, 64, 2, 2, 64, 2, 2, 64),
    "vit-s-32": Preset(224, 32, 384, 12, 6, 384, 12, 6, 384),
    "vit-b-32": Preset(224, 32, 768, 12, 12, 512, 12, 8, 512),
    "vit-b-16": Preset(224, 16, 768, 12, 12, 512, 12, 8, 512),
}


def scratch_normalizer() -> normalizers.Normalizer:
    """open_clip's cleaning (as CLIP's BPE here has it: HTML references, quotes, ligatures, control
    characters, whitespace collapsed and stripped), then NFKC and lower case.

    open_clip's ``HFTokenizer``, which loads our tokenizer after ``to-open-clip``, cleans every text
    before tokenizing it (``clean='whitespace'``: ftfy, HTML unescaping, ``" ".join(text.split())``).
    A tokenizer that cleans the same way itself gives the same ids on both sides, since cleaning a
    cleaned text changes nothing. Tokenizers saved by older versions keep the normaliser they were
    saved with (NFKC and lower case only)."""
    return normalizers.Sequence([cleaning(), normalizers.NFKC(), normalizers.Lowercase()])


def train_tokenizer(texts: Iterable[str], vocab_size: int, context_length: int) -> PreTrainedTokenizerFast:
    """A lower-casing byte-level BPE over ``texts`` that frames every text as <start> ... <end>."""
    tokenizer = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tokenizer.normalizer = scratch_normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    start, end = tokenizer.token_to_id("<|startoftext|>"), tokenizer.token_to_id("<|endoftext|>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", start), ("<|endoftext|>", end)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|pad|>",
        unk_token="<|unk|>", model_max_length=context_length,
    )


def scratch_model(preset_name: str, tokenizer: PreTrainedTokenizerBase, context_length: int = 32,
                  activation: str = "gelu") -> CLIPModel:
    """A randomly initialised CLIPModel of a preset whose text tower fits ``tokenizer``; it pools
    at the tokenizer's end token. ``activation`` is set on both towers explicitly: CLIPConfig's
    default is quick_gelu (OpenAI's checkpoints), while open_clip's ViT-B-32, the paper's model,
    uses gelu."""
    preset = PRESETS[preset_name]
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": preset.text_width, "num_hidden_layers": preset.text_layers,
            "num_attention_heads": preset.text_heads, "intermediate_size": 4 * preset.text_width,
            "max_position_embeddings": context_length, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
            "hidden_act": activation,
        },
        vision_config={
            "image_size": preset.image_size, "patch_size": preset.patch_size, "hidden_size": preset.vision_width,
            "num_hidden_layers": preset.vision_layers, "num_attention_heads": preset.vision_heads,
            "intermediate_size": 4 * preset.vision_width, "hidden_act": activation,
        },
        projection_dim=preset.embed_dim,
    )
    return CLIPModel(config)


def enable_checkpointing(model: CLIPModel) -> None:
    """Recompute activations in the backward pass (non-reentrant), under transformers 5's name or 4's."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def image_processor(image_size: int) -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})


def load_pretrained(name_or_path: str) -> tuple[CLIPModel, PreTrainedTokenizerBase, CLIPImageProcessor]:
    """A CLIPModel with its own tokenizer and image processor, for finetuning."""
    from transformers import AutoImageProcessor

    model = CLIPModel.from_pretrained(name_or_path)
    tokenizer = load_tokenizer(name_or_path)
    processor = AutoImageProcessor.from_pretrained(name_or_path)
    return model, tokenizer, processor


def load_tokenizer(name_or_path: str, context_length: int | None = None) -> PreTrainedTokenizerBase:
    """A pretrained tokenizer (Hub id or folder), e.g. ``openai/clip-vit-base-patch32``'s."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if context_length is not None:
        tokenizer.model_max_length = context_length
    if tokenizer.pad_token is None:  # CLIP pools at the first end token: padding with it is safe
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def input_geometry(processor: CLIPImageProcessor) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """The model's input side and normalisation, as its image processor states them."""
    crop = processor.crop_size or {}
    size = crop.get("height") or (processor.size or {}).get("shortest_edge") or 224
    return int(size), tuple(processor.image_mean), tuple(processor.image_std)


def save(folder: Path, model: CLIPModel, tokenizer: PreTrainedTokenizerBase, processor: CLIPImageProcessor) -> None:
    """What ``CLIPModel.from_pretrained`` and ``pipeline("zero-shot-image-classification")`` load."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)
    apply_umask(folder)  # safetensors writes the weights 0600 whatever the umask
