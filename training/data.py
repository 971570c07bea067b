"""From dataset rows to training batches: one text per image (the paper's mix, ``text_mix``) and
one augmented crop per image (``images``), both drawn from (seed, epoch, image id).

Rows arrive with the image column undecoded (``datasets.Image(decode=False)``: the JPEG bytes),
so decoding happens once, in the data-loader workers, at the scale the crop needs. A batch holds
uint8 pixels; ``training.images.normalize`` makes the model's input on the device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from entitynet.training.config import AugmentConfig, TextConfig
from entitynet.training.images import image_bytes, stack, train_image
from entitynet.training.stream import StreamedRows, to_device
from entitynet.training.text_mix import rng_for, sample_text

# what the trainer reads of a row: the rest (URLs, licences, ...) is never decoded
TRAIN_COLUMNS = ("image", "image_id", "alt_texts", "queries", "entities")
TEXT_ONLY = ("image_id", "alt_texts", "queries", "entities")


@dataclass
class Collator:
    """Rows -> {pixel_values (uint8), input_ids, attention_mask}. ``epoch`` is set by the trainer
    before each pass over the data (workers are made per pass, so they see it)."""

    tokenizer: Any
    text: TextConfig
    augment: AugmentConfig
    image_size: int
    seed: int
    context_length: int
    epoch: int = 0

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        texts = [sample_text(row, self.text, self.seed, self.epoch) for row in rows]
        pixels = [self.crop(row) for row in rows]
        tokens = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.context_length,
                                return_tensors="pt")
        return {"pixel_values": stack(pixels), "input_ids": tokens["input_ids"],
                "attention_mask": tokens["attention_mask"]}

    def crop(self, row: dict[str, Any]) -> Any:
        data, path = image_bytes(row["image"])
        rng = rng_for(self.seed, self.epoch, row["image_id"], "crop")
        try:
            return train_image(data, self.image_size, tuple(self.augment.scale), tuple(self.augment.ratio), rng, path)
        except (OSError, ValueError, SyntaxError) as error:  # PIL's ways of saying "not an image I can read"
            raise ValueError(f"image {row['image_id']} cannot be decoded: {error}") from error


class MapStyleData:
    """A small local dataset, converted by datasets into its Arrow cache and shuffled whole each
    epoch by Accelerate's seedable sampler (the batches of process r are every R-th)."""

    streaming = False

    def __init__(self, rows: Any, loader: Any, collator: Collator, accelerator: Any) -> None:
        self.rows, self.loader, self.collator, self.accelerator = rows, loader, collator, accelerator

    def batches_per_epoch(self) -> int:
        return len(self.loader)

    def batches(self, epoch: int, skip: int) -> Iterator[dict[str, torch.Tensor]]:
        self.collator.epoch = epoch
        self.loader.set_epoch(epoch)
        return iter(self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader)


class StreamedData:
    """Rows streamed from where they lie (``training.stream``): no Arrow copy; each process reads
    its own part of every epoch."""

    streaming = True

    def __init__(self, rows: StreamedRows, loader: Any, collator: Collator, device: Any) -> None:
        self.rows, self.loader, self.collator, self.device = rows, loader, collator, device

    def batches_per_epoch(self) -> int:
        return self.rows.batches_per_epoch()

    def batches(self, epoch: int, skip: int) -> Iterator[dict[str, torch.Tensor]]:
        # read by the workers when the iterator starts them, so set first
        self.collator.epoch = self.rows.epoch = epoch
        self.rows.skip_batches = skip
        return (to_device(batch, self.device) for batch in self.loader)
