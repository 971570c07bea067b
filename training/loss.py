"""CLIP's contrastive loss over the batch of every process, exact on any number of processes.

open_clip's "local loss with gather-with-grad": each process gathers the features of all
processes (the gather passes gradients back to their owners), and computes the loss of its own
rows only: its images against every text and its texts against every image. Each process's loss
is the mean over its rows, so the data-parallel mean of the processes' gradients is exactly the
gradient of the global batch's loss, for every parameter, the temperature included; gradient
clipping then means the same on 1 or 64 GPUs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

# backends whose reduce_scatter was found missing (gloo before torch 2.6 or so); they use all_reduce
_NO_REDUCE_SCATTER: set[str] = set()


def sum_own_rows(grad: torch.Tensor, rank: int, rows: int, reduce_scatter: bool = True) -> torch.Tensor:
    """Every process's ``grad`` (world * rows, ...) summed, this process's ``rows`` rows of it.

    reduce_scatter sends and receives (world - 1) / world of the tensor per process, all_reduce
    twice that; all_reduce (then a slice) is the fallback for a backend without reduce_scatter,
    found by trying it once: an unsupported collective fails on every process alike, before
    exchanging anything."""
    backend = dist.get_backend()
    if reduce_scatter and backend not in _NO_REDUCE_SCATTER:
        own = torch.empty((rows, *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
        try:
            dist.reduce_scatter_tensor(own, grad)
            return own
        except (RuntimeError, NotImplementedError, AttributeError):
            _NO_REDUCE_SCATTER.add(backend)
    dist.all_reduce(grad)
    return grad[rank * rows:(rank + 1) * rows]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums every process's gradient of the gathered tensor and
    hands each process the rows of its own tensor (``sum_own_rows``)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, reduce_scatter: bool) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.rows, ctx.reduce_scatter = rank, tensor.shape[0], reduce_scatter
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return sum_own_rows(grad.contiguous(), ctx.rank, ctx.rows, ctx.reduce_scatter), None


def gather_with_grad(tensor: torch.Tensor, world_size: int, reduce_scatter: bool = True) -> torch.Tensor:
    return tensor if world_size == 1 else _GatherWithGrad.apply(tensor, reduce_scatter)


class ClipLoss:
    """Symmetric InfoNCE of this process's rows against the features of all processes.

    Every process must pass the same number of rows (the trainer drops incomplete batches).
    ``reduce_scatter=False`` sums the features' gradients with all_reduce instead (the same
    result, twice the bytes; kept to compare the two).
    """

    def __init__(self, rank: int = 0, world_size: int = 1, reduce_scatter: bool = True) -> None:
        self.rank, self.world_size, self.reduce_scatter = rank, world_size, reduce_scatter

    def __call__(self, image_features: torch.Tensor, text_features: torch.Tensor,
                 logit_scale: torch.Tensor) -> torch.Tensor:
        images = F.normalize(image_features.float(), dim=-1)
        texts = F.normalize(text_features.float(), dim=-1)
        all_images = gather_with_grad(images, self.world_size, self.reduce_scatter)
        all_texts = gather_with_grad(texts, self.world_size, self.reduce_scatter)
        scale = logit_scale.float().exp()
        logits_per_image = scale * images @ all_texts.t()
        logits_per_text = scale * texts @ all_images.t()
        labels = torch.arange(len(images), device=images.device) + self.rank * len(images)
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
