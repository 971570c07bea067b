"""open_clip's model and preprocessing configuration <-> transformers' CLIPConfig and image processor.

Everything is read from the source's ``open_clip_config.json`` (``model_cfg`` and
``preprocess_cfg``), never from a default architecture; the checkpoint's weights then settle what the
config leaves open (the context length is the text position embedding's length). A setting that
changes the network in a way ``CLIPModel`` cannot express (a timm or ResNet vision tower, a
Hugging Face text tower, layer scale, attentional pooling, SigLIP's logit bias, ...) is refused with
its key and value named. A tokenizer other than CLIP's BPE (``text_cfg.hf_tokenizer_name``, what
``to-open-clip`` writes for a model trained here) is taken only from the model's own folder: its
vocabulary size and special ids then set the CLIPConfig's. Keys that only matter in training (patch
dropout, ...) are ignored, unknown keys are logged and left to the strict weight check.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import CLIPConfig, PreTrainedTokenizerBase

try:  # transformers >= 5: the PIL implementation by name, whose resizing is the one open_clip's transforms do
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:  # transformers 4: CLIPImageProcessor is the PIL implementation
    from transformers import CLIPImageProcessor  # type: ignore[assignment]

from entitynet.training.convert.clip_tokenizer import END_ID, START_ID, VOCAB_SIZE
from entitynet.training.convert.errors import ConversionError

logger = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's PreprocessCfg defaults
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
RESAMPLE = {"bicubic": 3, "bilinear": 2, "random": 3}  # open_clip evaluates 'random' as bicubic
ARGMAX_EOS_ID = 2  # transformers' CLIPTextTransformer pools at the argmax id when eos_token_id == 2 (OpenAI's configs)
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which open_clip uses unless norm_kwargs says otherwise

# Settings that change the network, with the values the key map expresses and what they mean.
UNSUPPORTED_TOP = {
    "init_logit_bias": ((None,), "a logit bias (SigLIP's sigmoid loss)"),
    "multimodal_cfg": ((None,), "a text decoder (CoCa)"),
}
CUSTOM_BLOCK = {  # open_clip's CustomResidualAttentionBlock variants
    "block_type": ((None, "default"), "a custom attention block"),
    **{key: ((False,), "a custom attention block")
       for key in ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")},
}
UNSUPPORTED_VISION = {
    "timm_model_name": ((None,), "a timm vision tower"),
    "ls_init_value": ((None,), "layer scale"),
    "attentional_pool": ((False,), "attentional pooling"),
    "no_ln_pre": ((False,), "no layer norm before the vision transformer"),
    "pool_type": (("tok",), "pooling other than the class token"),
    "pos_embed_type": (("learnable", "sin_cos_2d"), "another position embedding"),
    "act_kwargs": ((None,), "activation arguments"),
    "input_patchnorm": ((False,), "patch normalisation"),
    "global_average_pool": ((False,), "average pooling"),
    **CUSTOM_BLOCK,
}
UNSUPPORTED_TEXT = {
    "hf_model_name": ((None,), "a Hugging Face text tower"),
    "hf_tokenizer_name": ((None,), "a tokenizer other than CLIP's BPE"),
    "tokenizer_mode": ((None,), "a tokenizer mode"),
    "tokenizer_kwargs": ((None, {}), "tokenizer arguments (cleaning, token masking)"),
    "ls_init_value": ((None,), "layer scale"),
    "embed_cls": ((False,), "a class token in the text tower"),
    "no_causal_mask": ((False,), "text attention without the causal mask"),
    "proj_bias": ((False,), "a text projection with bias"),
    "proj_type": (("linear",), "another text projection"),
    "pool_type": (("argmax", "eos"), "pooling other than at the end token"),
    "act_kwargs": ((None,), "activation arguments"),
    **CUSTOM_BLOCK,
}

READ_TOP = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "custom_text", "init_logit_scale", "nonscalar_logit_scale"}
READ_VISION = {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "norm_kwargs"}
READ_TEXT = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "norm_kwargs", "eos_id"}
# Inference is the same whatever these say: training-only switches, and the layer norm after the
# class-token pool, which acts per token and so equals the norm before it.
IGNORED_VISION = {"patch_dropout", "output_tokens", "final_ln_after_pool", "attn_pooler_queries", "attn_pooler_heads",
                  "timm_model_pretrained", "timm_pool", "timm_proj", "timm_proj_bias", "timm_drop", "timm_drop_path"}
IGNORED_TEXT = {"pad_id", "output_tokens", "final_ln_after_pool", "hf_model_pretrained", "hf_proj_type", "hf_pooler_type"}


def _refuse_unsupported(section: str, config: dict[str, Any], table: dict[str, tuple[tuple[Any, ...], str]]) -> None:
    for key, (supported, meaning) in table.items():
        if key in config and config[key] not in supported:
            raise ConversionError(f"unsupported open_clip architecture: {section}{key}={config[key]!r} ({meaning}) has no "
                                  "counterpart in transformers' CLIPModel")


def _warn_unknown(section: str, config: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(config) - known)
    if unknown:
        logger.warning("open_clip config keys not read: %s; the weights are still checked key by key and shape by shape",
                       ", ".join(section + key for key in unknown))


def _layer_norm_eps(section: str, config: dict[str, Any]) -> float:
    kwargs = config.get("norm_kwargs") or {}
    if set(kwargs) - {"eps"}:
        raise ConversionError(f"unsupported open_clip architecture: {section}norm_kwargs={kwargs!r} (only eps is expressible)")
    return float(kwargs.get("eps", LAYER_NORM_EPS))


def square_image_size(vision: dict[str, Any]) -> int:
    size = vision.get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ConversionError(f"unsupported open_clip architecture: vision_cfg.image_size={list(size)} (CLIPModel needs square images)")
        size = size[0]
    return int(size)


def own_tokenizer_name(model_cfg: dict[str, Any]) -> str | None:
    """``text_cfg.hf_tokenizer_name``: open_clip uses its HFTokenizer for any non-empty name."""
    return (model_cfg.get("text_cfg") or {}).get("hf_tokenizer_name") or None


def check_supported(model_cfg: dict[str, Any], tokenizer: PreTrainedTokenizerBase | None = None) -> None:
    """Refuse what the key map cannot express, naming it; log keys this converter does not know.
    ``tokenizer``: the model's own tokenizer, read from its folder, when text_cfg names one."""
    vision, text = model_cfg.get("vision_cfg"), model_cfg.get("text_cfg")
    if not isinstance(vision, dict) or not isinstance(text, dict) or "embed_dim" not in model_cfg:
        raise ConversionError("not an open_clip model config: model_cfg needs embed_dim, vision_cfg and text_cfg")
    if isinstance(vision.get("layers"), (list, tuple)):
        raise ConversionError(f"unsupported open_clip architecture: vision_cfg.layers={vision['layers']} (a ModifiedResNet "
                              "vision tower, as in RN50) has no counterpart in transformers' CLIPModel")
    _refuse_unsupported("", model_cfg, UNSUPPORTED_TOP)
    _refuse_unsupported("vision_cfg.", vision, UNSUPPORTED_VISION)
    own = own_tokenizer_name(model_cfg)
    if own and tokenizer is None:
        raise ConversionError(f"text_cfg.hf_tokenizer_name={own!r} names a tokenizer other than CLIP's BPE, and the "
                              "model's folder holds no tokenizer.json: put the tokenizer's files (tokenizer.json, "
                              "tokenizer_config.json) beside open_clip_config.json; the converter takes such a tokenizer "
                              "only from the model's own folder, never from the Hub")
    if own:
        _refuse_unsupported("text_cfg.", text, {k: v for k, v in UNSUPPORTED_TEXT.items() if k != "hf_tokenizer_name"})
        _check_own_tokenizer(text, tokenizer)
    else:
        _refuse_unsupported("text_cfg.", text, UNSUPPORTED_TEXT)
        if text.get("pool_type") == "eos" and text.get("eos_id", 2) != END_ID:
            raise ConversionError(f"unsupported open_clip architecture: text_cfg.eos_id={text.get('eos_id', 2)} with "
                                  f"pool_type 'eos' (CLIP's BPE ends texts with {END_ID})")
        if text.get("vocab_size", VOCAB_SIZE) != VOCAB_SIZE:
            raise ConversionError(f"unsupported open_clip architecture: text_cfg.vocab_size={text['vocab_size']} (CLIP's "
                                  f"BPE tokenizer has {VOCAB_SIZE} tokens)")
    _warn_unknown("", model_cfg, READ_TOP | set(UNSUPPORTED_TOP))
    _warn_unknown("vision_cfg.", vision, READ_VISION | IGNORED_VISION | set(UNSUPPORTED_VISION))
    _warn_unknown("text_cfg.", text, READ_TEXT | IGNORED_TEXT | set(UNSUPPORTED_TEXT))


def _check_own_tokenizer(text: dict[str, Any], tokenizer: Any) -> None:
    vocab_size = int(text.get("vocab_size", VOCAB_SIZE))
    if len(tokenizer) > vocab_size:
        raise ConversionError(f"the folder's tokenizer has {len(tokenizer)} tokens, text_cfg.vocab_size is {vocab_size}: "
                              "not the tokenizer this model was trained with")
    if tokenizer.pad_token_id is None:
        raise ConversionError("the folder's tokenizer has no pad token: open_clip's HFTokenizer pads every text to the "
                              "context length with it")
    if text.get("pool_type") == "eos" and text.get("eos_id", 2) == ARGMAX_EOS_ID:
        raise ConversionError(f"unsupported open_clip architecture: text_cfg.eos_id={ARGMAX_EOS_ID} with pool_type 'eos' "
                              f"(transformers' CLIPModel takes eos_token_id {ARGMAX_EOS_ID} to mean pooling at the highest id)")


def _text_ids(text: dict[str, Any], tokenizer: Any) -> dict[str, int]:
    """The CLIPTextConfig's vocabulary and special ids, pooling where open_clip pools."""
    if tokenizer is None:
        # pooling at the first end token = open_clip's argmax, since the end token is the highest id
        return {"vocab_size": VOCAB_SIZE, "bos_token_id": START_ID, "eos_token_id": END_ID, "pad_token_id": END_ID}
    pool_at = int(text.get("eos_id", 2)) if text.get("pool_type") == "eos" else ARGMAX_EOS_ID
    return {"vocab_size": int(text.get("vocab_size", VOCAB_SIZE)), "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": pool_at, "pad_token_id": tokenizer.pad_token_id}


def hf_config(model_cfg: dict[str, Any], context_length: int, tokenizer: PreTrainedTokenizerBase | None = None) -> CLIPConfig:
    """The CLIPConfig of an open_clip model; ``context_length`` comes from its weights, ``tokenizer``
    is the model's own when its text_cfg names one (``hf_tokenizer_name``)."""
    check_supported(model_cfg, tokenizer)
    # An absent key means open_clip's own default (CLIPVisionCfg / CLIPTextCfg), as open_clip reads it.
    vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    own = tokenizer if own_tokenizer_name(model_cfg) else None
    act = "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"
    vision_width, text_width = int(vision.get("width", 768)), int(text.get("width", 512))
    head_width = int(vision.get("head_width", 64))
    if vision_width % head_width:
        raise ConversionError(f"vision_cfg.width={vision_width} is not a multiple of vision_cfg.head_width={head_width}")
    embed_dim = int(model_cfg["embed_dim"])
    return CLIPConfig(
        text_config={
            **_text_ids(text, own), "hidden_size": text_width,
            "intermediate_size": int(text_width * text.get("mlp_ratio", 4.0)),
            "num_hidden_layers": int(text.get("layers", 12)), "num_attention_heads": int(text.get("heads", 8)),
            "max_position_embeddings": context_length, "hidden_act": act,
            "layer_norm_eps": _layer_norm_eps("text_cfg.", text), "projection_dim": embed_dim,
        },
        vision_config={
            "hidden_size": vision_width, "intermediate_size": int(vision_width * vision.get("mlp_ratio", 4.0)),
            "num_hidden_layers": int(vision.get("layers", 12)), "num_attention_heads": vision_width // head_width,
            "image_size": square_image_size(vision), "patch_size": int(vision.get("patch_size", 16)),
            "hidden_act": act, "layer_norm_eps": _layer_norm_eps("vision_cfg.", vision), "projection_dim": embed_dim,
        },
        projection_dim=embed_dim,
    )


def image_processor(preprocess_cfg: dict[str, Any], image_size: int) -> CLIPImageProcessor:
    """open_clip's evaluation transform as a CLIPImageProcessor (resize, centre crop, scale, normalise)."""
    interpolation = preprocess_cfg.get("interpolation") or "bicubic"
    resize_mode = preprocess_cfg.get("resize_mode") or "shortest"
    if interpolation not in RESAMPLE:
        raise ConversionError(f"unsupported open_clip preprocessing: preprocess_cfg.interpolation={interpolation!r}")
    if preprocess_cfg.get("mode", "RGB") != "RGB":
        raise ConversionError(f"unsupported open_clip preprocessing: preprocess_cfg.mode={preprocess_cfg['mode']!r}")
    mean = preprocess_cfg.get("mean") or OPENAI_MEAN
    std = preprocess_cfg.get("std") or OPENAI_STD
    mean, std = ([m] * 3 if isinstance(m, (int, float)) else list(m) for m in (mean, std))
    square = {"height": image_size, "width": image_size}
    if resize_mode == "shortest":
        layout = {"size": {"shortest_edge": image_size}, "crop_size": square, "do_center_crop": True}
    elif resize_mode == "squash":
        layout = {"size": square, "crop_size": square, "do_center_crop": False}
    else:
        raise ConversionError(f"unsupported open_clip preprocessing: preprocess_cfg.resize_mode={resize_mode!r} "
                              "(padding to a square has no CLIPImageProcessor counterpart)")
    return CLIPImageProcessor(**layout, resample=RESAMPLE[interpolation], image_mean=mean, image_std=std,
                              do_resize=True, do_rescale=True, rescale_factor=1 / 255, do_normalize=True, do_convert_rgb=True)


def open_clip_config(config: CLIPConfig, processor: Any) -> dict[str, Any]:
    """``open_clip_config.json`` for a CLIPModel: the reverse of ``hf_config`` and ``image_processor``."""
    text, vision = config.text_config, config.vision_config
    acts = {text.hidden_act, vision.hidden_act}
    if len(acts) != 1 or not acts <= {"gelu", "quick_gelu"}:
        raise ConversionError(f"open_clip needs one activation, gelu or quick_gelu, for both towers; this model has "
                              f"text {text.hidden_act!r}, vision {vision.hidden_act!r}")
    if vision.hidden_size % vision.num_attention_heads or vision.num_channels != 3:
        raise ConversionError("open_clip needs 3 image channels and a vision width divisible by its heads")
    vision_cfg: dict[str, Any] = {"image_size": vision.image_size, "layers": vision.num_hidden_layers,
                                  "width": vision.hidden_size, "patch_size": vision.patch_size}
    head_width = vision.hidden_size // vision.num_attention_heads
    if head_width != 64:
        vision_cfg["head_width"] = head_width
    text_cfg: dict[str, Any] = {"context_length": text.max_position_embeddings, "vocab_size": text.vocab_size,
                                "width": text.hidden_size, "heads": text.num_attention_heads, "layers": text.num_hidden_layers}
    for section, tower in ((vision_cfg, vision), (text_cfg, text)):
        ratio = _mlp_ratio(tower.hidden_size, tower.intermediate_size)
        if ratio != 4.0:
            section["mlp_ratio"] = ratio
        if tower.layer_norm_eps != LAYER_NORM_EPS:
            section["norm_kwargs"] = {"eps": tower.layer_norm_eps}
    # transformers pools at the argmax id when eos_token_id == 2 (OpenAI's convention) and otherwise
    # at the first end token, which is also the argmax when the end token is the highest id.
    if text.eos_token_id not in (2, text.vocab_size - 1):
        text_cfg.update(pool_type="eos", eos_id=text.eos_token_id)
    model_cfg: dict[str, Any] = {"embed_dim": config.projection_dim}
    if vision.hidden_act == "quick_gelu":
        model_cfg["quick_gelu"] = True
    model_cfg.update(vision_cfg=vision_cfg, text_cfg=text_cfg)
    return {"model_cfg": model_cfg, "preprocess_cfg": _preprocess_cfg(processor, vision.image_size)}


def _mlp_ratio(width: int, intermediate: int) -> float:
    """A ratio with int(width * ratio) == intermediate, as open_clip computes the MLP width."""
    ratio = intermediate / width
    for candidate in (ratio, round(ratio, 4), ratio + 1e-9):
        if int(width * candidate) == intermediate:
            return candidate
    raise ConversionError(f"open_clip cannot express an MLP of {intermediate} for width {width}")


def _preprocess_cfg(processor: Any, image_size: int) -> dict[str, Any]:
    resample = {3: "bicubic", 2: "bilinear"}.get(int(processor.resample))
    size, crop = dict(processor.size), dict(processor.crop_size or {})
    square = {"height": image_size, "width": image_size}
    if processor.do_center_crop and size == {"shortest_edge": image_size} and crop == square:
        resize_mode = "shortest"
    elif not processor.do_center_crop and size == square:
        resize_mode = "squash"
    else:
        resize_mode = None
    if resample is None or resize_mode is None or not (processor.do_rescale and processor.do_normalize):
        raise ConversionError(f"open_clip's evaluation transform cannot express this image processor (resample "
                              f"{processor.resample}, size {size}, crop {crop}, centre crop {processor.do_center_crop}); "
                              f"it resizes the shortest edge to {image_size} and centre-crops, or squashes to {image_size}")
    return {"mean": list(processor.image_mean), "std": list(processor.image_std), "interpolation": resample,
            "resize_mode": resize_mode}
