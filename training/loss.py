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


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums every process's gradient of the gathered tensor and
    hands each process the slice of its own rows (all_reduce, which every backend has: gloo
    lacks reduce_scatter)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 - autograd signature
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    return tensor if world_size == 1 else _GatherWithGrad.apply(tensor)


class ClipLoss:
    """Symmetric InfoNCE of this process's rows against the features of all processes.

    Every process must pass the same number of rows (the trainer drops incomplete batches).
    """

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        self.rank, self.world_size = rank, world_size

    def __call__(self, image_features: torch.Tensor, text_features: torch.Tensor,
                 logit_scale: torch.Tensor) -> torch.Tensor:
        images = F.normalize(image_features.float(), dim=-1)
        texts = F.normalize(text_features.float(), dim=-1)
        all_images = gather_with_grad(images, self.world_size)
        all_texts = gather_with_grad(texts, self.world_size)
        scale = logit_scale.float().exp()
        logits_per_image = scale * images @ all_texts.t()
        logits_per_text = scale * texts @ all_images.t()
        labels = torch.arange(len(images), device=images.device) + self.rank * len(images)
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
