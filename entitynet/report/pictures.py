"""The pictures of the report: a seeded sample of each split across entities, as thumbnails, each
with its entity, its alt text and three texts the trainer's text mix would pair it with.

Only the sampled rows' images are read: the other columns first, then the row groups that hold
a sampled row (a split of millions of images is not decoded to show two dozen).
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any

from PIL import Image

from entitynet.report.gather import dataset_files, first_entity_ids, read_columns, text_settings
from entitynet.rundir import RunDir

logger = logging.getLogger(__name__)

PER_SPLIT = 24
THUMB_SIDE = 192
TEXT_DRAWS = 3  # epochs 0, 1, 2 of the text mix
THUMBS = "thumbs"
SPLIT_ORDER = ("train", "validation", "test_seen", "test")


def _rank(seed: int, key: str) -> str:
    return hashlib.blake2b(f"{seed}|{key}".encode(), digest_size=8).hexdigest()


def sample(image_ids: list[str], entities: list[str | None], count: int, seed: int) -> list[int]:
    """Indices of up to ``count`` rows (given by image id and first entity), one per entity first
    (entities in a seeded order, each entity's row chosen by seed too), then more of the same
    entities if there are few."""
    by_entity: dict[str, list[int]] = {}
    for index, entity in enumerate(entities):
        by_entity.setdefault(entity or "", []).append(index)
    order = sorted(by_entity, key=lambda entity: _rank(seed, entity))[:count]
    queues = [sorted(by_entity[entity], key=lambda i: _rank(seed, image_ids[i]))[:count] for entity in order]
    chosen: list[int] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return chosen


def _column(path: Path, name: str) -> list[Any]:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=[name]).column(name).to_pylist()


def _rows(path: Path, indices: list[int]) -> list[dict[str, Any]]:
    """Rows ``indices`` of a dataset file, without their images."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["image_id", "alt_texts", "queries", "entities"])
    return table.take(indices).to_pylist()


def thumbnail(blob: bytes, path: Path) -> tuple[int, int]:
    image = Image.open(io.BytesIO(blob)).convert("RGB")
    image.thumbnail((THUMB_SIDE, THUMB_SIDE))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=80)
    return image.size


def _images(path: Path, indices: list[int]) -> dict[int, bytes]:
    """The image bytes of rows ``indices`` of one parquet file, reading only their row groups."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    wanted, start, found = sorted(indices), 0, {}
    for group in range(parquet.num_row_groups):
        size = parquet.metadata.row_group(group).num_rows
        inside = [i for i in wanted if start <= i < start + size]
        if inside:
            column = parquet.read_row_group(group, columns=["image"]).column(0).to_pylist()
            for i in inside:
                value = column[i - start]
                found[i] = value.get("bytes") if isinstance(value, dict) else value
        start += size
    return found


def texts(row: dict[str, Any], settings: tuple[Any, int] | None) -> list[str]:
    """What the text mix pairs the image with at epochs 0, 1, 2 (as the trainer would, with its seed)."""
    if settings is None:
        return []
    from entitynet.training.text_mix import sample_text

    config, seed = settings
    try:
        return [sample_text(row, config, seed, epoch) for epoch in range(TEXT_DRAWS)]
    except ValueError as error:  # an image with neither alt text nor query: the trainer refuses it too
        return [f"(no text: {error})"]


def splits(run: RunDir, out: Path, seed: int = 0, per_split: int = PER_SPLIT) -> dict[str, list[dict[str, Any]]] | None:
    """split -> its sampled pictures (thumbnail path relative to ``out``, entity, alt text, texts);
    None when the dataset is not built."""
    files = dataset_files(run)
    if not files:
        return None
    settings = text_settings(run)
    found: dict[str, list[dict[str, Any]]] = {}
    for split in sorted(files, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 99, s)):
        image_ids, entities, where = [], [], []
        for path in files[split]:
            ids = _column(path, "image_id")
            image_ids += ids
            entities += first_entity_ids(path)
            where += [(path, i) for i in range(len(ids))]
        chosen = sample(image_ids, entities, per_split, seed)
        per_file: dict[Path, list[int]] = {}
        for index in chosen:
            per_file.setdefault(where[index][0], []).append(where[index][1])
        blobs = {(path, i): blob for path, indices in per_file.items() for i, blob in _images(path, indices).items()}
        rows = {(path, i): row for path, indices in per_file.items() for i, row in zip(sorted(indices), _rows(path, sorted(indices)))}
        pictures = []
        for index in chosen:
            row = rows[where[index]]
            name = f"{THUMBS}/{split}-{row['image_id'][:16]}.jpg"
            width, height = thumbnail(blobs[where[index]], out / name)
            entity = (row.get("entities") or [{}])[0]
            pictures.append({"thumb": name, "width": width, "height": height, "image_id": row["image_id"],
                             "entity": entity.get("name") or entity.get("id"), "entity_id": entity.get("id"),
                             "natural_type": entity.get("natural_type"),
                             "alt_text": (row.get("alt_texts") or [None])[0], "texts": texts(row, settings)})
        found[split] = pictures
    return found


def entity_thumbnails(run: RunDir, out: Path, wanted: set[str]) -> dict[str, str]:
    """One thumbnail for each of the entities ``wanted`` (by id), from the dataset's test splits
    first: for the confusions table."""
    files = dataset_files(run)
    got: dict[str, str] = {}
    for split in ("test", "test_seen", "validation", "train"):
        for path in files.get(split, []):
            rows = read_columns(path, ["image_id", "entities"])
            picks: dict[int, str] = {}
            for index, row in enumerate(rows):
                for entity in row["entities"] or []:
                    if entity["id"] in wanted and entity["id"] not in got and entity["id"] not in picks.values():
                        picks[index] = entity["id"]
            for index, blob in _images(path, list(picks)).items():
                name = f"{THUMBS}/class-{hashlib.blake2b(picks[index].encode(), digest_size=8).hexdigest()}.jpg"
                thumbnail(blob, out / name)
                got[picks[index]] = name
    return got
