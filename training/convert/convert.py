"""open_clip model -> CLIPModel folder, CLIPModel folder -> open_clip folder.

Each direction reads the source's config, builds the target's config from it, moves the weights
through the key map and checks the result before anything is written: open_clip -> transformers
compares the new CLIPModel's embeddings with open_clip's arithmetic on the source weights
(``reference.py``); transformers -> open_clip maps the weights back and requires the identical
CLIPModel. Output is assembled in a temporary folder beside OUT and renamed into place, so OUT is
either complete or absent.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, PreTrainedTokenizerBase

from entitynet.hub_cards.converted_card import write_converted_card
from entitynet.rundir import apply_umask, swap_in, temporary_folder
from entitynet.training.convert.clip_tokenizer import clip_tokenizer
from entitynet.training.convert.errors import ConversionError
from entitynet.training.convert.keymap import key_table, to_open_clip, to_transformers
from entitynet.training.convert.open_clip_config import hf_config, image_processor, open_clip_config, own_tokenizer_name
from entitynet.training.convert.open_clip_files import CONFIG, WEIGHTS, OpenClipModel, read_open_clip
from entitynet.training.convert.reference import OpenClipReference
from entitynet.training.model_files import MissingTokenizer, require_tokenizer

logger = logging.getLogger(__name__)

TOLERANCE = 1e-4  # max abs difference of normalised fp32 embeddings
PROBE_TEXTS = ["a photo of a lion.", "It's Tom &amp; Jerry, “quoted” ﬁne", "a bird " * 40]
WHITESPACE_PROBE = ("Spotted  leopard!! ", "Spotted leopard!!")
HTML_PROBE = ("Tom &amp; Jerry", "Tom & Jerry")
# What each direction writes into OUT (glob patterns): --force replaces a folder holding these and nothing else.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "chat_template.jinja")
TRANSFORMERS_FILES = ("config.json", "model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json",
                      "generation_config.json", "preprocessor_config.json", "README.md", *TOKENIZER_FILES)
OPEN_CLIP_FILES = (CONFIG, WEIGHTS[0], *TOKENIZER_FILES)
PLAIN_TEXTS = ["a photo of a lion.", "It's 3 big dogs; they'd run!"]  # any CLIP BPE tokenizer agrees on these


@dataclass(frozen=True)
class Converted:
    folder: Path
    source: str
    context_length: int
    image_size: int
    activation: str
    max_abs_diff: float


def convert_open_clip(source: str, out: str | Path, model_name: str | None = None, force: bool = False) -> Converted:
    """An open_clip model (Hub repo, folder or training checkpoint) as a CLIPModel folder in ``out``."""
    out = Path(out)
    if Path(source).exists():  # a local folder or checkpoint file; a Hub id names no local path
        refuse_overlap(out, Path(source))
    refuse_existing(out, force, TRANSFORMERS_FILES)
    model = read_open_clip(source, model_name)
    own = own_tokenizer(model)
    clip, text_prefix = build_clip(model, own)
    config = clip.config
    if own is not None:
        own.model_max_length = config.text_config.max_position_embeddings  # open_clip pads and cuts at its context length
    tokenizer = own if own is not None else clip_tokenizer(config.text_config.max_position_embeddings)
    processor = image_processor(model.preprocess_cfg, config.vision_config.image_size)
    reference = OpenClipReference(model.state, model.model_cfg, text_prefix)
    diff = verify(clip, tokenizer, processor, reference, pads_with_zero=own is None)
    clip.to(model.state["visual.conv1.weight"].dtype)  # saved in the source's precision (checked in fp32)
    result = Converted(out, model.name, config.text_config.max_position_embeddings, config.vision_config.image_size,
                       config.text_config.hidden_act, diff)

    def write(folder: Path) -> None:
        clip.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        processor.save_pretrained(folder)
        write_converted_card(folder, model, result, config, processor, own_tokenizer=own is not None)

    _write_atomically(out, write, TRANSFORMERS_FILES)
    return result


def own_tokenizer(model: OpenClipModel) -> PreTrainedTokenizerBase | None:
    """The tokenizer a model names in ``text_cfg.hf_tokenizer_name`` (one trained here, after
    ``to-open-clip``), read from the model's own folder, as open_clip reads it for ``local-dir:``;
    None for CLIP's BPE. A name without the files in the folder is refused by ``hf_config``."""
    name = own_tokenizer_name(model.model_cfg)
    if not name or model.tokenizer_dir is None:
        return None
    logger.info("text_cfg.hf_tokenizer_name=%r: taking the tokenizer from %s's own files (never from the Hub)",
                name, model.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model.tokenizer_dir, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ConversionError(f"{model.name}: its tokenizer files do not load: {str(error).splitlines()[0]}") from None
    if not cleans_as_open_clip(tokenizer):
        logger.warning("the tokenizer does not clean texts as open_clip's HFTokenizer does before tokenizing (whitespace "
                       "collapsed, HTML unescaped): the converted model will give other ids than open_clip for texts "
                       "such as %r", WHITESPACE_PROBE[0])
    return tokenizer


def build_clip(model: OpenClipModel, tokenizer: PreTrainedTokenizerBase | None = None) -> tuple[CLIPModel, str]:
    """The CLIPModel holding ``model``'s weights (fp32), and the text tower's key prefix; ``tokenizer``
    is the model's own, when its config names one."""
    text_prefix = "text." if model.model_cfg.get("custom_text") else ""
    positions = model.state.get(f"{text_prefix}positional_embedding")
    if positions is None:
        raise ConversionError(f"{model.name} has no text position embedding ({text_prefix}positional_embedding): "
                              "not the weights of an open_clip CLIP model")
    context_length = positions.shape[0]
    configured = model.model_cfg.get("text_cfg", {}).get("context_length", context_length)
    if configured != context_length:
        logger.warning("%s: the config says context_length %s, the text position embeddings have %s rows; using %s "
                       "(open_clip would interpolate the embeddings to %s)", model.name, configured, context_length,
                       context_length, configured)
    config = hf_config(model.model_cfg, context_length, tokenizer)
    vision = config.vision_config
    grid = vision.image_size // vision.patch_size
    patches = model.state.get("visual.positional_embedding")
    if patches is not None and patches.shape[0] != grid * grid + 1:
        raise ConversionError(f"vision_cfg.image_size {vision.image_size} with patch size {vision.patch_size} needs "
                              f"{grid * grid + 1} position embeddings, the weights have {patches.shape[0]} (open_clip "
                              "would interpolate them; transformers' CLIPModel cannot)")
    rows = key_table(vision.num_hidden_layers, config.text_config.num_hidden_layers, text_prefix)
    weights = {key: value.float() for key, value in to_transformers(model.state, rows).items()}
    with init_empty_weights(include_buffers=False):  # no time spent drawing random weights that are replaced
        clip = CLIPModel(config)
    try:
        clip.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as error:
        mismatches = [line.strip() for line in str(error).splitlines() if "size mismatch" in line]
        raise ConversionError(f"the weights do not fit the architecture open_clip_config.json describes: "
                              f"{'; '.join(mismatches[:3]) or str(error).splitlines()[0]}") from None
    return clip.eval(), text_prefix


def verify(clip: CLIPModel, tokenizer: PreTrainedTokenizerBase, processor: Any, reference: OpenClipReference,
           pads_with_zero: bool = True) -> float:
    """The largest difference between the CLIPModel's and open_clip's normalised embeddings on the same
    probe image and texts; above ``TOLERANCE`` the conversion stops. ``pads_with_zero``: open_clip's
    own tokenizer pads with 0; its HFTokenizer (a model's own tokenizer) pads as that tokenizer does."""
    size = clip.config.vision_config.image_size
    pixels = processor(images=probe_image(size + 37, size + 11), return_tensors="pt")["pixel_values"]
    batch = tokenizer(PROBE_TEXTS, padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        ours_image = torch.nn.functional.normalize(_pooled(clip.get_image_features(pixel_values=pixels)), dim=-1)
        ours_text = torch.nn.functional.normalize(_pooled(clip.get_text_features(**batch)), dim=-1)
    ids = batch["input_ids"] * batch["attention_mask"] if pads_with_zero else batch["input_ids"]
    theirs_text = reference.text_embeddings(ids)
    diff = max((ours_image - reference.image_embeddings(pixels)).abs().max().item(), (ours_text - theirs_text).abs().max().item())
    if not diff <= TOLERANCE:
        raise ConversionError(f"the converted model's embeddings differ from open_clip's by {diff:.2e} (tolerance "
                              f"{TOLERANCE:g}); nothing was written")
    logger.info("converted embeddings match open_clip's arithmetic: max abs difference %.2e", diff)
    return diff


def probe_image(width: int, height: int) -> Image.Image:
    """A deterministic picture with edges, gradients and every channel in use."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    rgb = torch.stack([(x * 255 // width), (y * 255 // height), ((x // 7 + y // 5) % 2) * 200 + 20], dim=-1)
    return Image.fromarray(rgb.to(torch.uint8).numpy(), "RGB")


def _pooled(output: Any) -> torch.Tensor:
    """transformers 5 returns an output object whose pooler_output is the projected embedding."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def convert_to_open_clip(model_dir: str | Path, out: str | Path, repo: str | None = None, force: bool = False) -> Path:
    """A CLIPModel folder (``save_pretrained`` with tokenizer and image processor) in open_clip's Hub
    layout. A tokenizer other than CLIP's BPE travels as files beside, named by ``repo`` in the config."""
    out, model_dir = Path(out), Path(model_dir)
    refuse_overlap(out, model_dir)
    refuse_existing(out, force, OPEN_CLIP_FILES)
    if not (model_dir / "config.json").is_file():
        raise ConversionError(f"{model_dir} is not a transformers model folder (no config.json)")
    try:
        require_tokenizer(model_dir)  # the open_clip model would carry the wrong one, or none
    except MissingTokenizer as error:
        raise ConversionError(str(error)) from None
    clip = CLIPModel.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    processor = AutoImageProcessor.from_pretrained(model_dir)
    config = open_clip_config(clip.config, processor)
    rows = key_table(clip.config.vision_config.num_hidden_layers, clip.config.text_config.num_hidden_layers)
    state = to_open_clip(clip.state_dict(), rows)
    # the round trip must give back the very same weights
    back = to_transformers(state, rows)
    if any(not torch.equal(back[key], value) for key, value in clip.state_dict().items() if key in back):
        raise ConversionError("internal error: the key map does not round-trip this model")
    clip_bpe = is_clip_bpe(tokenizer, clip.config.text_config.max_position_embeddings)
    if not clip_bpe and not cleans_as_open_clip(tokenizer):
        logger.warning("the tokenizer does not clean texts as open_clip's HFTokenizer does before tokenizing (whitespace "
                       "collapsed, HTML unescaped: trained by an older version): open_clip will give other ids for "
                       "texts such as %r", WHITESPACE_PROBE[0])
    if not clip_bpe:
        # open_clip's HFTokenizer loads it; with local-dir: any non-empty name means "this folder"
        config["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = repo or str(out.resolve())
        if not repo:
            logger.warning("the tokenizer is not CLIP's BPE: open_clip will load it from %s; pass --repo ORG/NAME "
                           "before pushing the folder to the Hub", out.resolve())

    def write(folder: Path) -> None:
        from safetensors.torch import save_file

        save_file({key: value.contiguous() for key, value in state.items()}, str(folder / WEIGHTS[0]))
        (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        if not clip_bpe:
            tokenizer.save_pretrained(folder)

    _write_atomically(out, write, OPEN_CLIP_FILES)
    return out


def is_clip_bpe(tokenizer: PreTrainedTokenizerBase, context_length: int) -> bool:
    """Whether ``tokenizer`` gives CLIP's BPE ids, so open_clip's own tokenizer can replace it."""
    if len(tokenizer) != 49408:
        return False
    ours = clip_tokenizer(context_length)
    return all(tokenizer(text).input_ids == ours(text).input_ids for text in PLAIN_TEXTS)


def cleans_as_open_clip(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether ``tokenizer`` gives a raw text the ids open_clip's HFTokenizer gives it after its cleaning
    (``clean='whitespace'``), on a few probes."""
    def ids(text: str) -> list[int]:
        return tokenizer(text, truncation=True, max_length=256).input_ids

    return all(ids(raw) == ids(cleaned) for raw, cleaned in [WHITESPACE_PROBE, HTML_PROBE])


def refuse_overlap(out: Path, source: Path) -> None:
    """OUT may be neither the input, nor a folder holding it, nor a place inside it (links resolved):
    replacing OUT would delete the input, or the folder it lies in (a whole run directory)."""
    target, model = out.resolve(), source.resolve()
    if target == model:
        relation = "is the input"
    elif target in model.parents:
        relation = "holds the input"
    elif model in target.parents:
        relation = "lies inside the input"
    else:
        return
    raise ConversionError(f"OUT {out} {relation} {source}; write the converted model to a folder of its own")


def refuse_existing(out: Path, force: bool, written: tuple[str, ...]) -> None:
    """An existing OUT is replaced only with ``force``, and only when it holds nothing but files this
    direction writes (``written``, glob patterns): --force never deletes what the converter did not make."""
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise ConversionError(f"{out} already exists; pass --force to replace it")
    if out.is_symlink() or not out.is_dir():
        raise ConversionError(f"{out} is {'a link' if out.is_symlink() else 'a file'}, not a folder the converter "
                              "wrote; --force replaces only such a folder: name another OUT")
    foreign = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in out.iterdir()
                     if entry.is_dir() or not any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in written))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConversionError(f"{out} holds what this conversion does not write ({shown}); --force replaces only a "
                              "folder of its own output: name another OUT, or move those away first")


def _write_atomically(out: Path, write: Callable[[Path], None], written: tuple[str, ...]) -> None:
    """``write(folder)`` into a temporary folder beside ``out``, then rename it to ``out`` (an ``out``
    already there, checked again now: only files of ``written``, is replaced)."""
    staging = temporary_folder(out.parent, f".{out.name}.partial-")
    try:
        write(staging)
        apply_umask(staging)  # safetensors writes the weights 0600 whatever the umask
        if out.exists():
            refuse_existing(out, True, written)
        swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
