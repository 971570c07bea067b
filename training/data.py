"""From dataset rows to training batches: one text per image (the paper's mix, ``text_mix``) and
one augmented crop per image (``images``), both drawn from (seed, epoch, image id).

Rows arrive with the image column undecoded (``datasets.Image(decode=False)``: the JPEG bytes),
so decoding happens once, in the data-loader workers, at the scale the crop needs. A batch holds
uint8 pixels; ``training.images.normalize`` makes the model's input on the device.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from entitynet.training.config import AugmentConfig, TextConfig
from entitynet.training.images import image_bytes, train_image
from entitynet.training.mix import DRAW, MixedRows
from entitynet.training.sources import DatasetProblem
from entitynet.training.stream import StreamedRows, to_device
from entitynet.training.text_mix import rng_for, sample_text

# what the trainer reads of a row: the rest (URLs, licences, ...) is never decoded
TRAIN_COLUMNS = ("image", "image_id", "alt_texts", "queries", "entities")
TEXT_ONLY = ("image_id", "alt_texts", "queries", "entities")


def _origin(row: dict[str, Any]) -> str:
    """Where a replay row comes from (its draw names the mix entry); nothing for the main dataset's."""
    draw = row.get(DRAW)
    return f" (replay source mix[{int(draw.split('.')[0].removeprefix('replay')) - 1}])" if draw else ""


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
    buffers: BatchBuffers = field(default_factory=lambda: BatchBuffers(), repr=False, compare=False)
    token_cache: TokenCache = field(default_factory=lambda: TokenCache(), repr=False, compare=False)

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        texts = [self.text_of(row) for row in rows]
        # each crop goes straight into the batch (no list of arrays, no np.stack copy)
        pixels = self.buffers.take((len(rows), self.image_size, self.image_size, 3))
        for n, row in enumerate(rows):
            pixels[n] = self.crop(row)
        input_ids, attention_mask = self.tokens(texts)
        return {"pixel_values": torch.from_numpy(pixels), "input_ids": input_ids, "attention_mask": attention_mask}

    def text_of(self, row: dict[str, Any]) -> str:
        try:
            return sample_text(row, self.text, self.seed, row.get(DRAW, self.epoch))
        except ValueError as error:  # neither an alt text nor a query
            raise DatasetProblem(f"{error}{_origin(row)}") from None  # train() says it in one line

    def tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) of ``texts``, padded to the context length. Padding to a
        fixed length makes a text's ids independent of the others, so each distinct text is
        tokenised once and kept (``TokenCache``): batches repeat their queries' and names' texts,
        within and across batches. Through numpy, which is cheaper than return_tensors="pt" and
        gives the same int64 ids."""
        cache = self.token_cache
        distinct = list(dict.fromkeys(texts))
        missing = [text for text in distinct if text not in cache.rows]
        if len(cache.rows) + len(missing) > cache.keep:  # full: start again with this batch's texts
            cache.__init__(cache.keep)
            missing = distinct
        if missing:
            tokens = self.tokenizer(missing, padding="max_length", truncation=True, max_length=self.context_length,
                                    return_tensors="np")
            cache.add(missing, tokens["input_ids"], tokens["attention_mask"])
        rows = np.fromiter((cache.rows[text] for text in texts), dtype=np.intp, count=len(texts))
        return torch.from_numpy(cache.input_ids[rows]), torch.from_numpy(cache.attention_mask[rows])

    def crop(self, row: dict[str, Any]) -> Any:
        data, path = image_bytes(row["image"])
        rng = rng_for(self.seed, row.get(DRAW, self.epoch), row["image_id"], "crop")
        try:
            return train_image(data, self.image_size, tuple(self.augment.scale), tuple(self.augment.ratio), rng, path)
        except (OSError, ValueError, SyntaxError) as error:  # PIL's ways of saying "not an image I can read"
            raise DatasetProblem(f"image {row['image_id']}{_origin(row)} cannot be decoded: {error}") from error


class PerProcess:
    """A bounded store each process fills for itself: pickled (to a data-loader worker) as its bound
    only, so a worker starts empty."""

    keep: int

    def __getstate__(self) -> dict[str, Any]:
        return {"keep": self.keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["keep"])


class BatchBuffers(PerProcess):
    """uint8 batch arrays, each reused once no tensor refers to it any more.

    A fresh 256 x 224 x 224 x 3 array per batch is 38 MB of new pages: the kernel zero-fills them
    on first touch, which cost ~0.2 ms per image, as much as a fifth of decoding a 256-px JPEG.
    ``torch.from_numpy`` keeps a reference to its array for as long as any tensor or view of it
    lives (a batch the trainer still holds, one Accelerate prefetched, one a data-loader worker
    has not yet moved to shared memory), so an array whose reference count is back to the pool's
    own is free to overwrite. At most ``keep`` arrays are kept; past that a batch gets a new one.
    Worker processes get their own, empty pool (the pool is not pickled)."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self.arrays: list[np.ndarray] = []
        self.unused = 0  # the reference count of a pooled array nothing else holds

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        for array in self.arrays:
            if array.shape == shape and self._references(array) <= self.unused:
                return array
        array = np.empty(shape, dtype=np.uint8)
        if len(self.arrays) < self.keep:
            self.arrays.append(array)
            self.unused = self._references(array)  # counted as in the loop: the list, the name, the call
        return array

    @staticmethod
    def _references(array: np.ndarray) -> int:
        return sys.getrefcount(array)


class TokenCache(PerProcess):
    """The ids and attention masks of texts already tokenised, as rows of two arrays.

    Tokenising was the largest per-sample cost past decoding (~0.04 ms of ~1 ms for a 256-px
    image); most texts of the paper's mix (queries, names, templates) recur across batches. At
    most ``keep`` texts are kept; a full cache starts again empty (a bound, not an LRU: texts are
    drawn at random, so recency predicts little). Worker processes get their own (not pickled)."""

    def __init__(self, keep: int = 65536) -> None:
        self.keep = keep
        self.rows: dict[str, int] = {}
        self.input_ids = np.empty((0, 0), dtype=np.int64)
        self.attention_mask = np.empty((0, 0), dtype=np.int64)

    def add(self, texts: list[str], input_ids: np.ndarray, attention_mask: np.ndarray) -> None:
        start = len(self.rows)
        end = start + len(texts)
        if end > len(self.input_ids):  # grow by doubling: appending never copies the whole cache per batch
            capacity = max(end, min(self.keep, max(2 * len(self.input_ids), 1024)))
            self.input_ids = self._grown(self.input_ids, capacity, input_ids)
            self.attention_mask = self._grown(self.attention_mask, capacity, attention_mask)
        self.input_ids[start:end], self.attention_mask[start:end] = input_ids, attention_mask
        self.rows.update((text, start + n) for n, text in enumerate(texts))

    @staticmethod
    def _grown(array: np.ndarray, capacity: int, like: np.ndarray) -> np.ndarray:
        grown = np.empty((capacity, like.shape[1]), dtype=like.dtype)
        if len(array):
            grown[:len(array)] = array
        return grown


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
    """Rows streamed from where they lie (``training.stream``), of one dataset or a mix
    (``training.mix``): no Arrow copy; each process reads its own part of every epoch."""

    streaming = True

    def __init__(self, rows: StreamedRows | MixedRows, loader: Any, collator: Collator, device: Any) -> None:
        self.rows, self.loader, self.collator, self.device = rows, loader, collator, device

    def batches_per_epoch(self) -> int:
        return self.rows.batches_per_epoch()

    def batches(self, epoch: int, skip: int) -> Iterator[dict[str, torch.Tensor]]:
        # read by the workers when the iterator starts them, so set first
        self.collator.epoch = self.rows.epoch = epoch
        self.rows.skip_batches = skip
        return (to_device(batch, self.device) for batch in self.loader)
