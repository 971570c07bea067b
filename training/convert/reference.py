"""open_clip's forward pass computed straight from its state dict, to check a conversion before saving.

The converted CLIPModel runs transformers' code on remapped weights; this runs open_clip's own
arithmetic (``nn.MultiheadAttention``'s kernel on the packed ``in_proj``, ``x @ proj``, pooling as
the config says) on the source weights, without open_clip installed. Both must give the same
normalised embeddings on the same inputs, or the conversion stops and nothing is written.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class OpenClipReference:
    def __init__(self, state: dict[str, torch.Tensor], model_cfg: dict[str, Any], text_prefix: str) -> None:
        self.state = {key: value.float() for key, value in state.items()}
        self.vision, self.text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
        self.quick_gelu = bool(model_cfg.get("quick_gelu", False))
        self.t = text_prefix

    @torch.no_grad()
    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        s, v = self.state, self.vision
        x = F.conv2d(pixels, s["visual.conv1.weight"], stride=s["visual.conv1.weight"].shape[-1])
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([s["visual.class_embedding"].expand(x.shape[0], 1, -1), x], dim=1) + s["visual.positional_embedding"]
        x = self._norm(x, "visual.ln_pre", v)
        heads = v.get("width", 768) // v.get("head_width", 64)
        for i in range(v.get("layers", 12)):
            x = self._block(x, f"visual.transformer.resblocks.{i}", heads, v, mask=None)
        return F.normalize(self._norm(x[:, 0], "visual.ln_post", v) @ s["visual.proj"], dim=-1)

    @torch.no_grad()
    def text_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        s, t, p = self.state, self.text, self.t
        x = s[f"{p}token_embedding.weight"][ids] + s[f"{p}positional_embedding"][: ids.shape[1]]
        mask = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)
        for i in range(t.get("layers", 12)):
            x = self._block(x, f"{p}transformer.resblocks.{i}", t.get("heads", 8), t, mask=mask)
        x = self._norm(x, f"{p}ln_final", t)
        if t.get("pool_type", "argmax") == "eos":
            at = (ids == t.get("eos_id", 2)).int().argmax(dim=-1)
        else:
            at = ids.argmax(dim=-1)
        return F.normalize(x[torch.arange(ids.shape[0]), at] @ s[f"{p}text_projection"], dim=-1)

    def _norm(self, x: torch.Tensor, name: str, tower: dict[str, Any]) -> torch.Tensor:
        eps = (tower.get("norm_kwargs") or {}).get("eps", 1e-5)
        return F.layer_norm(x, x.shape[-1:], self.state[f"{name}.weight"], self.state[f"{name}.bias"], eps)

    def _block(self, x: torch.Tensor, name: str, heads: int, tower: dict[str, Any], mask: torch.Tensor | None) -> torch.Tensor:
        s = self.state
        h = self._norm(x, f"{name}.ln_1", tower).transpose(0, 1)  # (sequence, batch, width), as the kernel expects
        attended, _ = F.multi_head_attention_forward(
            h, h, h, x.shape[-1], heads, s[f"{name}.attn.in_proj_weight"], s[f"{name}.attn.in_proj_bias"], None, None,
            False, 0.0, s[f"{name}.attn.out_proj.weight"], s[f"{name}.attn.out_proj.bias"], training=False,
            need_weights=False, attn_mask=mask)
        x = x + attended.transpose(0, 1)
        h = F.linear(self._norm(x, f"{name}.ln_2", tower), s[f"{name}.mlp.c_fc.weight"], s[f"{name}.mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h) if self.quick_gelu else F.gelu(h)
        return x + F.linear(h, s[f"{name}.mlp.c_proj.weight"], s[f"{name}.mlp.c_proj.bias"])
