"""Which rows of a dataset split training and evaluation read, and how: map-style (a local
dataset's Arrow copy, shuffled whole) or streamed (``stream.StreamedRows``), and the seeded sample
an evaluation scores. A library module: the trainer (``train.py``) and the eval stage
(``evaluation/stage.py``) both take their rows from here.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import datasets

from entitynet.training.config import TrainConfig
from entitynet.training.data import TRAIN_COLUMNS
from entitynet.training.sources import DatasetProblem, Source, resolve
from entitynet.training.stream import sample_rows

logger = logging.getLogger(__name__)
# below this, a local dataset is read map-style: datasets' Arrow copy takes seconds and the
# sampler shuffles the whole split; above it, the copy costs minutes and its size again on disk
STREAMING_ABOVE_BYTES = 2 * 1024**3
# what an evaluation reads of a row
EVAL_COLUMNS = ("image", "image_id", "alt_texts", "entities")


def load_split(config: TrainConfig, split: str) -> datasets.Dataset:
    return datasets.load_dataset(config.dataset, config.dataset_config, split=split)


def wants_streaming(config: TrainConfig, source: Source) -> bool:
    if source.kind == "webdataset":
        return True
    if config.streaming is not None:
        return config.streaming
    return not Path(config.dataset).exists() or source.size_bytes > STREAMING_ABOVE_BYTES


def map_style_rows(config: TrainConfig) -> datasets.Dataset:
    """The train split with only what training reads, images left as bytes (decoded in the workers)."""
    rows = load_split(config, "train")
    return rows.select_columns(list(TRAIN_COLUMNS)).cast_column("image", datasets.Image(decode=False))


def eval_rows(config: TrainConfig, split: str) -> list[dict[str, Any]] | None:
    """A seeded sample of at most ``eval.max_images`` rows of ``split`` across its entities (the
    files are grouped by entity, so the first rows would be a few entities only); streamed
    datasets are sampled without reading the whole split. The same rows on every process."""
    try:
        source = resolve(config.dataset, config.dataset_config, split)
    except DatasetProblem as error:  # most often: the dataset has no such split
        logger.warning("no evaluation on %s: %s", split, error)
        return None
    if wants_streaming(config, source):
        return sample_rows(source, config.eval.max_images, config.seed, EVAL_COLUMNS)
    table = load_split(config, split).select_columns(list(EVAL_COLUMNS))
    count = min(len(table), config.eval.max_images)
    return list(table.select(sorted(random.Random(config.seed).sample(range(len(table)), count))))
