"""Image preprocessing for training and evaluation, with PIL and torch only (torchvision does not
import beside the CPU torch wheel these machines use, and is not needed).

- Training: RandomResizedCrop (torchvision's sampling: ten tries at a random area share and
  log-uniform aspect ratio, then a centre crop clamped to the ratio range), bicubic resize to the
  model's input size. The crop is drawn from (seed, epoch, image id), like the text, so any
  number of processes and workers produce the same batch.
- Evaluation: resize the shorter side to the input size, centre crop (CLIP's own).
- JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still leaves the crop at
  least the output size: decoding is most of the cost, and the stored 512-px images crop to
  224 px in one resize.
- The result stays uint8 (a quarter of float32's bytes between worker processes);
  ``normalize`` turns a batch into the model's input on its device.
"""

from __future__ import annotations

import io
import math
import random
from typing import Any

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
Box = tuple[float, float, float, float]  # left, top, right, bottom in source pixels


def random_resized_crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
                            rng: random.Random) -> Box:
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return (left, top, left + w, top + h)
    # fallback: the whole image's centre, clamped to the ratio range
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return (left, top, left + w, top + h)


def open_image(data: bytes | None, path: str | None = None) -> Image.Image:
    if data is None:
        if path is None:
            raise ValueError("an image row holds neither bytes nor a path")
        with open(path, "rb") as handle:
            data = handle.read()
    return Image.open(io.BytesIO(data))


def _draft(image: Image.Image, box: Box, size: int) -> tuple[Image.Image, Box]:
    """Ask the JPEG decoder for a reduced scale when the crop stays >= ``size`` px at that scale."""
    if image.format != "JPEG":
        return image, box
    crop = min(box[2] - box[0], box[3] - box[1])
    factor = 1
    while factor < 8 and crop / (factor * 2) >= size:
        factor *= 2
    if factor == 1:
        return image, box
    width, height = image.size
    image.draft("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
    sx, sy = image.size[0] / width, image.size[1] / height
    return image, (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def crop_to_array(image: Image.Image, box: Box, size: int) -> np.ndarray:
    """``box`` of ``image`` resized to size x size (bicubic), as an (H, W, 3) uint8 array."""
    image, box = _draft(image, box, size)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC, box=box))


def train_image(data: bytes | None, size: int, scale: tuple[float, float], ratio: tuple[float, float],
                rng: random.Random, path: str | None = None) -> np.ndarray:
    image = open_image(data, path)
    return crop_to_array(image, random_resized_crop_box(*image.size, scale, ratio, rng), size)


def image_bytes(value: Any) -> tuple[bytes | None, str | None]:
    """(bytes, path) of an image cell read with ``Image(decode=False)`` (or a PIL image)."""
    if isinstance(value, dict):
        return value.get("bytes"), value.get("path")
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.convert("RGB").save(buffer, "PNG")
        return buffer.getvalue(), None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    raise TypeError(f"not an image cell: {type(value).__name__}")


def stack(arrays: list[np.ndarray]) -> torch.Tensor:
    """(B, H, W, 3) uint8, as decoded: the transpose to channels-first happens on the device, in
    ``normalize``, where it costs nothing next to the model."""
    return torch.from_numpy(np.stack(arrays))


def normalize(pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, H, W, 3) on any device -> the model's normalised (B, 3, H, W) float input."""
    mean_t = torch.tensor(mean, device=pixels.device, dtype=torch.float32).view(1, 3, 1, 1) * 255
    std_t = torch.tensor(std, device=pixels.device, dtype=torch.float32).view(1, 3, 1, 1) * 255
    return ((pixels.permute(0, 3, 1, 2).float() - mean_t) / std_t).to(dtype)
