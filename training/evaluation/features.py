"""Image and text embeddings, batch by batch: only the normalised embeddings (and each image's
labels and captions) are kept, never the images.

On a GPU, decoding and preprocessing run in a small thread pool a few batches ahead of the model
(Pillow and numpy release the GIL for the heavy parts), so the GPU is rarely left waiting; on the
CPU they run between batches, because there the model's own threads already use every core and
decoding beside them stalls both (benchmarks/eval.py). Device and precision come from Accelerate; with several processes each takes every N-th image and the
embeddings are gathered back into the input order, so the result does not depend on the number
of processes. An image that cannot be decoded stops the pass (``UnreadableImage`` names it) unless
``skip_unreadable`` is set: then it is left out and its message kept in ``ImageFeatures.skipped``.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from entitynet.training.evaluation.images import UnreadableImage, decode
from entitynet.training.evaluation.inputs import Example

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class ImageFeatures:
    """What one pass over a dataset keeps: embeddings in input order and what the rows said."""

    embeddings: torch.Tensor  # (images, dim), float32, L2-normalised, on the CPU
    labels: list[tuple[str, ...]]
    captions: list[tuple[str, ...]]
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # class id -> names carried by rows
    fields: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # class id -> the first row's fields
    skipped: list[str] = field(default_factory=list)  # why each unreadable image was left out, in input order
    lineages: dict[str, Mapping[str, str]] = field(default_factory=dict)  # class id -> {rank: ancestor id} (ranks.py)

    def __len__(self) -> int:
        return len(self.labels)


def default_accelerator() -> Any:
    from accelerate import Accelerator

    return Accelerator()


def output_tensor(output: Any) -> torch.Tensor:
    # transformers 5 returns an output object whose pooler_output is the projected embedding; 4.x a tensor
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def embed_images(model: Any, processor: Any, examples: Iterable[Example], accelerator: Any = None,
                 batch_size: int = 64, workers: int | None = None, total: int | None = None,
                 progress: bool = True, description: str = "images", skip_unreadable: bool = False) -> ImageFeatures:
    """Normalised image embeddings of ``examples`` (any iterable, read once)."""
    accelerator = accelerator or default_accelerator()
    rank, world = accelerator.process_index, accelerator.num_processes
    dtype = next(model.parameters()).dtype
    mine = itertools.islice(enumerate(examples), rank, None, world)
    batches = _chunks(mine, batch_size)
    indices: list[int] = []
    embeddings: list[torch.Tensor] = []
    labels: list[tuple[str, ...]] = []
    captions: list[tuple[str, ...]] = []
    names: dict[str, tuple[str, ...]] = {}
    fields: dict[str, Mapping[str, Any]] = {}
    lineages: dict[str, Mapping[str, str]] = {}
    skipped: list[tuple[int, str]] = []
    was_training = model.training
    model.eval()
    bar = tqdm(total=total, desc=description, unit="img", disable=not progress or not accelerator.is_main_process)
    threads = _threads(accelerator.device) if workers is None else workers
    try:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            work = partial(_pixels, processor, skip_unreadable=skip_unreadable)
            for batch, (kept, pixels, unreadable) in _ahead(pool, work, batches, depth=2 * threads):
                skipped.extend(unreadable)
                bar.update(len(batch) * world)
                if not kept:
                    continue
                with accelerator.autocast():
                    output = model.get_image_features(pixel_values=pixels.to(accelerator.device, dtype))
                embeddings.append(F.normalize(output_tensor(output).float(), dim=-1).cpu())
                for index, example in kept:
                    indices.append(index)
                    labels.append(example.labels)
                    captions.append(example.captions)
                    for label in example.labels:
                        if example.names and label in example.names:
                            names.setdefault(label, example.names[label])
                        if example.fields is not None:
                            fields.setdefault(label, example.fields)
                        if example.lineages and label in example.lineages:
                            lineages.setdefault(label, example.lineages[label])
    finally:
        bar.close()
        model.train(was_training)
    stacked = torch.cat(embeddings) if embeddings else torch.zeros(0, _projection_dim(model))
    if world > 1:
        indices, stacked, labels, captions, names, fields, skipped = _gather(accelerator, indices, stacked, labels,
                                                                             captions, names, fields, skipped)
        lineages = _merged(accelerator, lineages)
    for _, why in skipped if accelerator.is_main_process else ():
        logger.warning("skipped %s", why)
    return ImageFeatures(stacked, labels, captions, names, fields, [why for _, why in sorted(skipped)], lineages)


@torch.no_grad()
def embed_texts(model: Any, tokenizer: Any, texts: Sequence[str], accelerator: Any = None,
                batch_size: int = 256) -> torch.Tensor:
    """Normalised text embeddings, (len(texts), dim) float32 on the CPU."""
    accelerator = accelerator or default_accelerator()
    max_length = model.config.text_config.max_position_embeddings
    out = [torch.zeros(0, _projection_dim(model))]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                               max_length=max_length, return_tensors="pt")
            with accelerator.autocast():
                output = model.get_text_features(input_ids=tokens["input_ids"].to(accelerator.device),
                                                 attention_mask=tokens["attention_mask"].to(accelerator.device))
            out.append(F.normalize(output_tensor(output).float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def _pixels(processor: Any, batch: list[tuple[int, Example]], skip_unreadable: bool
            ) -> tuple[list[tuple[int, Example]], torch.Tensor | None, list[tuple[int, str]]]:
    """(the examples kept, their pixels, (index, why) of those skipped): every one is kept or raises,
    unless ``skip_unreadable``."""
    kept, images, skipped = [], [], []
    for index, example in batch:
        try:
            images.append(decode(example.image, example.where))
            kept.append((index, example))
        except UnreadableImage as error:
            if not skip_unreadable:
                raise
            skipped.append((index, str(error)))
    pixels = processor(images=images, return_tensors="pt")["pixel_values"] if images else None
    return kept, pixels, skipped


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _ahead(pool: ThreadPoolExecutor, work: Callable[[T], R], items: Iterable[T], depth: int) -> Iterator[tuple[T, R]]:
    """(item, work(item)) in input order, with up to ``depth`` items being worked on ahead
    (none with depth 0: each item is worked on when it is needed, in this thread)."""
    if depth == 0:
        yield from ((item, work(item)) for item in items)
        return
    pending: deque[tuple[T, Future[R]]] = deque()
    for item in items:
        pending.append((item, pool.submit(work, item)))
        if len(pending) >= depth:
            first, future = pending.popleft()
            yield first, future.result()
    while pending:
        first, future = pending.popleft()
        yield first, future.result()


def _threads(device: Any) -> int:
    """Decoding threads ahead of the model. None on the CPU: there the model's own threads use
    every core, and decoding beside them only makes both wait (measured in benchmarks/eval.py)."""
    return 0 if torch.device(device).type == "cpu" else max(1, min(8, os.cpu_count() or 2))


def _projection_dim(model: Any) -> int:
    return int(model.config.projection_dim)


def _merged(accelerator: Any, mapping: dict) -> dict:
    """Every process's ``mapping`` in one (the first process's value of a key kept)."""
    from accelerate.utils import gather_object

    merged: dict = {}
    for part in gather_object([mapping]):
        for key, value in part.items():
            merged.setdefault(key, value)
    return merged


def _gather(accelerator: Any, indices: list[int], embeddings: torch.Tensor, labels: list, captions: list,
            names: dict, fields: dict, skipped: list) -> tuple:
    from accelerate.utils import gather_object

    parts = gather_object([(indices, embeddings, labels, captions, names, fields, skipped)])
    skipped = [entry for part in parts for entry in part[6]]
    parts = [part[:6] for part in parts]
    order = sorted((index, part, row) for part, (ids, *_rest) in enumerate(parts) for row, index in enumerate(ids))
    merged_names: dict = {}
    merged_fields: dict = {}
    for *_rest, part_names, part_fields in parts:
        for key, value in part_names.items():
            merged_names.setdefault(key, value)
        for key, value in part_fields.items():
            merged_fields.setdefault(key, value)
    return ([index for index, _, _ in order],
            torch.stack([parts[part][1][row] for _, part, row in order]) if order else embeddings,
            [parts[part][2][row] for _, part, row in order],
            [parts[part][3][row] for _, part, row in order],
            merged_names, merged_fields, skipped)
