"""One contrastive step, with or without accumulation: its forward and backward passes
(``contrastive_backward``) and the optimizer's update (``contrastive_step``).

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
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import TYPE_CHECKING, Any

import torch

from entitynet.training.images import normalize
from entitynet.training.loss import ClipLoss

if TYPE_CHECKING:
    from accelerate import Accelerator

Batch = dict[str, torch.Tensor]
Embeddings = tuple[torch.Tensor, torch.Tensor]  # (image_embeds, text_embeds)
MAX_LOGIT_SCALE = math.log(100)  # CLIP's clamp: the temperature's exp never passes 100


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


def contrastive_step(model: Any, group: Sequence[Batch], *, loss_fn: ClipLoss, logit_scale: torch.nn.Parameter,
                     accelerator: Accelerator, optimizer: torch.optim.Optimizer, lr: float,
                     max_grad_norm: float | None, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, float]:
    """One optimizer step over the whole contrastive batch of ``group`` (every micro-batch of the
    step, on this process): the accumulated gradient (``contrastive_backward``), clipped to
    ``max_grad_norm`` (0 or None: measured, not clipped), the update at rate ``lr`` and the
    temperature clamped. ``model`` is the prepared model and ``logit_scale`` the unwrapped model's
    parameter. Returns the batch's loss and the gradient norm before clipping."""
    loss = contrastive_backward(lambda batch: clip_embeddings(model, batch, mean, std), group, loss_fn,
                                logit_scale, accelerator.backward, lambda: accelerator.no_sync(model))
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm or float("inf"))
    for parameters in optimizer.param_groups:
        parameters["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if logit_scale.requires_grad:  # a frozen temperature (LoRA) stays the base model's, exactly
        with torch.no_grad():
            logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    return loss, float(grad_norm)
