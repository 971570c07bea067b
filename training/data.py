"""From dataset rows to training batches: one text per image (the paper's mix, ``text_mix``) and
one augmented crop per image (``images``), both drawn from (seed, epoch, image id).

Rows arrive with the image column undecoded (``datasets.Image(decode=False)``: the JPEG bytes),
so decoding happens once, in the data-loader workers, at the scale the crop needs. A batch holds
uint8 pixels; ``training.images.normalize`` makes the model's input on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from entitynet.training.config import AugmentConfig, TextConfig
from entitynet.training.images import image_bytes, stack, train_image
from entitynet.training.text_mix import rng_for, sample_text

# what the trainer reads of a row: the rest (URLs, licences, ...) is never decoded
TRAIN_COLUMNS = ("image", "image_id", "alt_texts", "queries", "entities")


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
