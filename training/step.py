"""One contrastive step's forward and backward passes, with or without accumulation.

With ``accumulation_steps`` > 1 the step is open_clip's ``--accum-freq``: the embeddings of every
micro-batch are computed once without gradient and cached, then each micro-batch is recomputed
with gradient and its loss taken against the cached embeddings of all the others, so the summed
gradient is the whole contrastive batch's. The cache keeps only those embeddings (two
``(batch, projection_dim)`` tensors per micro-batch), never the model's outputs: a CLIPOutput also
holds both towers' last hidden states and the logits, which at ViT-B/32 shapes are ~100x the
embeddings' size and which the second pass recomputes anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, ContextManager

import torch

from entitynet.training.images import normalize
from entitynet.training.loss import ClipLoss

Batch = dict[str, torch.Tensor]
Embeddings = tuple[torch.Tensor, torch.Tensor]  # (image_embeds, text_embeds)


def clip_embeddings(model: Any, batch: Batch, mean: tuple[float, ...], std: tuple[float, ...]) -> Embeddings:
    """The model's (image, text) embeddings of a batch of uint8 pixels and token ids; the rest of
    its output (hidden states, logits) is dropped here, when the call returns."""
    outputs = model(pixel_values=normalize(batch["pixel_values"], mean, std), input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"])
    return outputs.image_embeds, outputs.text_embeds


def cached_embeddings(forward: Callable[[Batch], Embeddings], group: Sequence[Batch]) -> list[Embeddings]:
    """The first pass of an accumulated step: each micro-batch's embeddings, without gradient."""
    with torch.no_grad():
        return [tuple(tensor.detach() for tensor in forward(batch)) for batch in group]  # type: ignore[misc]


def contrastive_backward(forward: Callable[[Batch], Embeddings], group: Sequence[Batch], loss_fn: ClipLoss,
                         logit_scale: torch.Tensor, backward: Callable[[torch.Tensor], None],
                         no_sync: Callable[[], ContextManager[Any]]) -> torch.Tensor:
    """Accumulate the gradient of the contrastive loss over all of ``group`` (one optimizer step);
    returns the loss (the last micro-batch's, which is the whole batch's loss: every micro-batch's
    loss is over the same full set of embeddings). ``no_sync`` skips DDP's gradient all-reduce on
    every micro-batch but the last; the temperature takes its gradient once, on the last."""
    if len(group) == 1:
        images, texts = forward(group[0])
        loss = loss_fn(images, texts, logit_scale)
        backward(loss)
        return loss.detach()
    cache = cached_embeddings(forward, group)
    for index, batch in enumerate(group):
        last = index == len(group) - 1
        with contextlib.nullcontext() if last else no_sync():
            images, texts = forward(batch)
            scale = logit_scale if last else logit_scale.detach()
            loss = loss_fn(torch.cat([e[0] for e in cache[:index]] + [images] + [e[0] for e in cache[index + 1:]]),
                           torch.cat([e[1] for e in cache[:index]] + [texts] + [e[1] for e in cache[index + 1:]]), scale)
            backward(loss)
            del images, texts  # this micro-batch's graph is freed by backward; let go of its outputs too
    return loss.detach()
