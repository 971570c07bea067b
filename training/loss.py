"""The contrastive (InfoNCE) loss of CLIP over the batch of every process.

Each process gathers the embeddings of all processes without gradient and puts its own, with
gradient, back in its slot; every process then computes the full loss. Gradients reach only local
embeddings, and the data-parallel average over N processes makes up the rest: the gradient is
the one of the global batch loss divided by N, which the learning rate absorbs (the scheme of
open_clip's default), at the cost of one all-gather of embeddings.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def gather_keeping_local_gradient(local: torch.Tensor, accelerator: Any) -> torch.Tensor:
    if accelerator.num_processes == 1:
        return local
    gathered = list(accelerator.gather(local.detach().contiguous()).chunk(accelerator.num_processes))
    gathered[accelerator.process_index] = local
    return torch.cat(gathered)


def clip_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor,
              accelerator: Any) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy; embeddings need not be normalised."""
    images = gather_keeping_local_gradient(F.normalize(image_embeds.float(), dim=-1), accelerator)
    texts = gather_keeping_local_gradient(F.normalize(text_embeds.float(), dim=-1), accelerator)
    logits = logit_scale.float().exp().clamp(max=100) * images @ texts.t()
    labels = torch.arange(len(images), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
