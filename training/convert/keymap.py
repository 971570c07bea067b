"""The key map between open_clip's CLIP state dict and transformers' CLIPModel, in one table.

Each row names an open_clip key, the transformers key(s) it becomes and how:

- ``copy``: the same tensor;
- ``transpose``: open_clip keeps the two projections as ``x @ P`` matrices (width x embed),
  ``nn.Linear`` keeps ``embed x width``;
- ``qkv``: ``nn.MultiheadAttention`` packs query, key and value into one ``in_proj`` (3*width rows,
  in that order); transformers has three linear layers;
- ``scalar``: ``logit_scale``, a scalar in transformers and a scalar or 1-vector in open_clip.

The map is strict both ways: a source key no row places, or a row whose key is missing, is an error
naming the keys, so a checkpoint of another architecture never converts silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from entitynet.training.convert.errors import ConversionError

# Per residual block, open_clip suffix -> transformers suffix.
BLOCK = [
    ("ln_1.weight", "layer_norm1.weight"), ("ln_1.bias", "layer_norm1.bias"),
    ("attn.out_proj.weight", "self_attn.out_proj.weight"), ("attn.out_proj.bias", "self_attn.out_proj.bias"),
    ("ln_2.weight", "layer_norm2.weight"), ("ln_2.bias", "layer_norm2.bias"),
    ("mlp.c_fc.weight", "mlp.fc1.weight"), ("mlp.c_fc.bias", "mlp.fc1.bias"),
    ("mlp.c_proj.weight", "mlp.fc2.weight"), ("mlp.c_proj.bias", "mlp.fc2.bias"),
]
QKV = [("attn.in_proj_weight", "weight"), ("attn.in_proj_bias", "bias")]


@dataclass(frozen=True)
class Row:
    open_clip: str
    transformers: tuple[str, ...]
    how: str  # copy | transpose | qkv | scalar


def key_table(vision_layers: int, text_layers: int, text_prefix: str = "") -> list[Row]:
    """Every row for a model of these depths; ``text_prefix`` is ``"text."`` for open_clip's
    CustomTextCLIP, whose text tower lives under ``text``."""
    t = text_prefix
    rows = [
        Row("logit_scale", ("logit_scale",), "scalar"),
        Row("visual.class_embedding", ("vision_model.embeddings.class_embedding",), "copy"),
        Row("visual.positional_embedding", ("vision_model.embeddings.position_embedding.weight",), "copy"),
        Row("visual.conv1.weight", ("vision_model.embeddings.patch_embedding.weight",), "copy"),
        Row("visual.ln_pre.weight", ("vision_model.pre_layrnorm.weight",), "copy"),
        Row("visual.ln_pre.bias", ("vision_model.pre_layrnorm.bias",), "copy"),
        Row("visual.ln_post.weight", ("vision_model.post_layernorm.weight",), "copy"),
        Row("visual.ln_post.bias", ("vision_model.post_layernorm.bias",), "copy"),
        Row("visual.proj", ("visual_projection.weight",), "transpose"),
        Row(f"{t}token_embedding.weight", ("text_model.embeddings.token_embedding.weight",), "copy"),
        Row(f"{t}positional_embedding", ("text_model.embeddings.position_embedding.weight",), "copy"),
        Row(f"{t}ln_final.weight", ("text_model.final_layer_norm.weight",), "copy"),
        Row(f"{t}ln_final.bias", ("text_model.final_layer_norm.bias",), "copy"),
        Row(f"{t}text_projection", ("text_projection.weight",), "transpose"),
    ]
    towers = [("visual.transformer.resblocks", "vision_model.encoder.layers", vision_layers),
              (f"{t}transformer.resblocks", "text_model.encoder.layers", text_layers)]
    for source, target, layers in towers:
        for i in range(layers):
            rows += [Row(f"{source}.{i}.{a}", (f"{target}.{i}.{b}",), "copy") for a, b in BLOCK]
            rows += [Row(f"{source}.{i}.{a}", tuple(f"{target}.{i}.self_attn.{p}_proj.{kind}" for p in "qkv"), "qkv")
                     for a, kind in QKV]
    return rows


def to_transformers(state: dict[str, torch.Tensor], rows: list[Row]) -> dict[str, torch.Tensor]:
    _check_keys(state, {row.open_clip for row in rows}, "open_clip checkpoint")
    out: dict[str, torch.Tensor] = {}
    for row in rows:
        value = state[row.open_clip]
        if row.how == "qkv":
            if value.shape[0] % 3:
                raise ConversionError(f"{row.open_clip} has {value.shape[0]} rows, not query, key and value of equal size")
            out.update(zip(row.transformers, (part.clone() for part in value.chunk(3, dim=0))))
        elif row.how == "transpose":
            out[row.transformers[0]] = value.t().contiguous()
        elif row.how == "scalar":
            out[row.transformers[0]] = value.reshape(())
        else:
            out[row.transformers[0]] = value
    return out


def to_open_clip(state: dict[str, torch.Tensor], rows: list[Row]) -> dict[str, torch.Tensor]:
    # position_ids are buffers older transformers versions saved; they are arange(n), not weights
    state = {key: value for key, value in state.items() if not key.endswith("embeddings.position_ids")}
    _check_keys(state, {key for row in rows for key in row.transformers}, "CLIPModel")
    out: dict[str, torch.Tensor] = {}
    for row in rows:
        values = [state[key] for key in row.transformers]
        if row.how == "qkv":
            out[row.open_clip] = torch.cat(values, dim=0)
        elif row.how == "transpose":
            out[row.open_clip] = values[0].t().contiguous()
        else:
            out[row.open_clip] = values[0]
    return out


def _check_keys(state: dict[str, torch.Tensor], expected: set[str], what: str) -> None:
    missing, unplaced = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unplaced:
        parts = [f"missing {_some(missing)}" if missing else "", f"not placed by the key map {_some(unplaced)}" if unplaced else ""]
        raise ConversionError(f"the {what} does not match its config's architecture: " + "; ".join(p for p in parts if p))


def _some(keys: list[str], shown: int = 5) -> str:
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more
