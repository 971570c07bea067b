"""From dataset rows to training batches: one text per image per step, sampled from its alt texts,
the queries that found it and its entities, with configured weights.

The sample depends only on (seed, epoch, image_id), not on the process, the worker or the order,
so a resumed run and a run on another number of processes pair every image with the same text.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from typing import Any

import torch

from entitynet.training.config import TextConfig


def entity_text(entity: dict[str, Any], template: str) -> str:
    return template.format(name=entity["name"], natural_type=entity.get("natural_type") or "thing",
                           description=entity.get("description") or "").strip()


def candidates(row: dict[str, Any], text: TextConfig) -> list[tuple[float, list[str]]]:
    """(weight, texts) per kind that this row has; kinds it lacks drop out and the rest share."""
    kinds = [
        (text.alt_text, [t for t in row.get("alt_texts") or [] if t and t.strip()]),
        (text.query, sorted({q["text"] for q in row.get("queries") or [] if q.get("text")})),
        (text.entity, [entity_text(e, text.entity_template) for e in row.get("entities") or [] if e.get("name")]),
    ]
    return [(weight, texts) for weight, texts in kinds if weight > 0 and texts]


def sample_text(row: dict[str, Any], text: TextConfig, seed: int, epoch: int) -> str:
    key = hashlib.blake2b(f"{seed}|{epoch}|{row['image_id']}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(key, "big"))
    kinds = candidates(row, text)
    if not kinds:  # cannot happen for built rows (each has a query); say which row if it does
        raise ValueError(f"image {row['image_id']} has no alt text, query or entity to pair with")
    weights = [weight for weight, _ in kinds]
    texts = rng.choices([texts for _, texts in kinds], weights=weights)[0]
    return rng.choice(texts)


class Collator:
    """Rows -> pixel_values, input_ids, attention_mask. ``epoch`` is set by the trainer before
    each pass over the data (workers are made per pass, so they see it)."""

    def __init__(self, tokenizer: Any, processor: Any, text: TextConfig, seed: int, max_length: int) -> None:
        self.tokenizer, self.processor, self.text = tokenizer, processor, text
        self.seed, self.max_length = seed, max_length
        self.epoch = 0

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        texts = [sample_text(row, self.text, self.seed, self.epoch) for row in rows]
        return self.encode([row["image"].convert("RGB") for row in rows], texts)

    def encode(self, images: Iterable[Any], texts: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


def training_texts(rows: Iterable[dict[str, Any]], text: TextConfig) -> Iterable[str]:
    """Every text an image may be paired with: what the tokenizer is trained on."""
    for row in rows:
        for _, texts in candidates(row, text):
            yield from texts
