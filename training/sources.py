"""What a training dataset is, found and checked before any work: a dataset in our Hub layout
(a local folder or a Hub id; parquet shards declared by its card's ``configs``), or webdataset tar
shards (a folder, or a URL pattern such as ``https://host/shards/{00000..00099}.tar``), as
``entitynet export --format webdataset`` and img2dataset write them.

Every problem a user can cause (no such folder or Hub id, no split of that name, rows without the
columns training needs, tars without images) is a ``DatasetProblem`` naming it: one line, no
traceback from inside datasets.
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")
# a row needs its image and something to pair it with
REQUIRED_COLUMNS = ("image", "image_id")
TEXT_COLUMNS = ("alt_texts", "queries")
DOMAIN_FOLDERS = {"livingthings": ("living",), "entitynet": ("living", "other")}
WIDS_INDEX = "index.json"


class DatasetProblem(ValueError):
    """The dataset cannot feed training; the message says what is wrong with it."""


@dataclass(frozen=True)
class Unit:
    """A piece of a dataset read on its own: a parquet row group, or a whole tar shard."""

    file: str
    index: int  # row group; -1 for a tar
    rows: int


@dataclass(frozen=True)
class Source:
    name: str  # what the user gave
    kind: Literal["parquet", "webdataset"]
    split: str
    files: tuple[str, ...]
    units: tuple[Unit, ...]
    size_bytes: int
    # the parquet columns; empty for tars, whose rows always have every field (``tar_rows``)
    columns: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return sum(unit.rows for unit in self.units)


def open_file(path: str) -> Any:
    """A binary file object for a local path or any fsspec URL (hf://, https://, s3://, ...)."""
    if "://" not in path:
        return open(path, "rb")
    import fsspec

    return fsspec.open(path, "rb").open()


def is_webdataset(dataset: str) -> bool:
    if ".tar" in dataset:
        return True
    folder = Path(dataset)
    return folder.is_dir() and not (folder / "README.md").exists() and any(folder.rglob("*.tar"))


def resolve(dataset: str, config_name: str, split: str) -> Source:
    """The files and readable units of ``split``; raises DatasetProblem."""
    if is_webdataset(dataset):
        return _webdataset(dataset, config_name, split)
    return _parquet(dataset, config_name, split)


# --- our Hub layout (parquet) -----------------------------------------------------------------
def data_files(dataset: str, config_name: str) -> dict[str, list[str]]:
    """Split -> files, as the dataset's card declares them (local folder or Hub repo)."""
    import datasets

    try:
        try:
            builder = datasets.load_dataset_builder(dataset, config_name)
        except ValueError as unknown:  # an unknown config name: a plain dataset has only "default"
            if "Available: ['default']" not in str(unknown):
                raise
            builder = datasets.load_dataset_builder(dataset)
    except ValueError as error:
        raise DatasetProblem(f"{dataset}: {str(error).splitlines()[0]}") from None
    except (FileNotFoundError, ConnectionError, OSError) as error:
        where = "folder" if Path(dataset).exists() or dataset.startswith((".", "/")) else "folder or Hub dataset id"
        raise DatasetProblem(f"{dataset}: no such dataset {where} ({str(error).splitlines()[0]})") from None
    files = builder.config.data_files or {}
    return {str(name): [str(path) for path in paths] for name, paths in files.items()}


def _parquet(dataset: str, config_name: str, split: str) -> Source:
    splits = data_files(dataset, config_name)
    files = splits.get(split)
    if not files:
        raise DatasetProblem(f"{dataset} ({config_name}) has no split {split!r}; it has: {', '.join(splits) or 'none'}")
    files = sorted(files)
    with ThreadPoolExecutor(max_workers=16) as pool:  # remote footers: one small read each
        metadata = list(pool.map(_parquet_metadata, files))
    columns = set(metadata[0][1])
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing or not columns & set(TEXT_COLUMNS):
        need = missing + ([" or ".join(TEXT_COLUMNS)] if not columns & set(TEXT_COLUMNS) else [])
        raise DatasetProblem(f"{files[0]}: rows lack the columns training needs: {', '.join(need)} "
                             f"(it has {', '.join(sorted(columns))}); is this an EntityNet dataset?")
    units = tuple(Unit(path, index, rows) for path, (groups, _) in zip(files, metadata) for index, rows in enumerate(groups))
    if not sum(unit.rows for unit in units):
        raise DatasetProblem(f"{dataset} ({config_name}): the {split} split is empty")
    return Source(dataset, "parquet", split, tuple(files), units, _sizes(files), tuple(sorted(columns)))


def _parquet_metadata(path: str) -> tuple[list[int], list[str]]:
    import pyarrow.parquet as pq

    try:
        with open_file(path) as handle:
            meta = pq.ParquetFile(handle).metadata
    except Exception as error:  # pyarrow and fsspec raise many kinds for a damaged or missing file
        raise DatasetProblem(f"{path}: not a readable parquet file ({error})") from None
    groups = [meta.row_group(index).num_rows for index in range(meta.num_row_groups)]
    return groups, [meta.schema.column(i).path.split(".")[0] for i in range(meta.num_columns)]


def _sizes(files: tuple[str, ...] | list[str]) -> int:
    total = 0
    for path in files:
        if "://" not in path:
            total += Path(path).stat().st_size
        else:
            import fsspec

            fs, inner = fsspec.core.url_to_fs(path)
            total += int(fs.info(inner).get("size") or 0)
    return total


# --- webdataset tars --------------------------------------------------------------------------
def expand_braces(pattern: str) -> list[str]:
    """webdataset's shard patterns: ``shard-{000..099}.tar`` (zero padding kept), ``{a,b}``."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    head, tail, body = pattern[:match.start()], pattern[match.end():], match.group(1)
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        first, last = numeric.groups()
        options = [str(n).zfill(len(first)) for n in range(int(first), int(last) + 1)]
    else:
        options = body.split(",")
    return [expanded for option in options for expanded in expand_braces(head + option + tail)]


def tar_files(dataset: str, config_name: str, split: str) -> list[str]:
    """The tars of ``split``: a folder from ``entitynet export`` (DOMAIN/SPLIT-NNNNN.tar), any other
    folder of tars (all train), or a URL/path pattern (all of it)."""
    folder = Path(dataset)
    if not folder.is_dir():
        return expand_braces(dataset)
    domains = [folder / name for name in DOMAIN_FOLDERS[config_name] if (folder / name).is_dir()]
    if domains:
        return sorted(str(path) for domain in domains for path in domain.glob(f"{split}-*.tar"))
    return sorted(str(path) for path in folder.rglob("*.tar")) if split == "train" else []


def _webdataset(dataset: str, config_name: str, split: str) -> Source:
    files = tar_files(dataset, config_name, split)
    if not files:
        raise DatasetProblem(f"{dataset}: no tar shards for the {split} split")
    counts = _indexed_counts(files)
    missing = [path for path in files if path not in counts]
    if any("://" in path for path in missing):
        raise DatasetProblem(f"{dataset}: remote tar shards need an {WIDS_INDEX} beside them with their sample "
                             "counts (wids format; `entitynet export` writes one)")
    for path in missing:
        counts[path] = _count_samples(path)
    units = tuple(Unit(path, -1, counts[path]) for path in files)
    if not sum(unit.rows for unit in units):
        raise DatasetProblem(f"{dataset}: the tar shards hold no images ({', '.join(IMAGE_SUFFIXES)})")
    _first_sample(next(unit.file for unit in units if unit.rows))
    return Source(dataset, "webdataset", split, tuple(files), units, _sizes(files))


def _first_sample(path: str) -> None:
    """Read one sample of ``path``, so tars without texts (img2dataset run without captions) are
    refused before any work rather than at their first batch."""
    with open_file(path) as handle:
        next(iter(tar_rows(handle, path)), None)


def _indexed_counts(files: list[str]) -> dict[str, int]:
    """Sample counts from ``index.json`` files beside the shards (webdataset's wids format:
    {"wids_version": 1, "shardlist": [{"url": ..., "nsamples": N}]}, urls relative to the index)."""
    counts: dict[str, int] = {}
    for parent in sorted({path.rsplit("/", 1)[0] for path in files}):
        try:
            with open_file(f"{parent}/{WIDS_INDEX}") as handle:
                index = json.load(handle)
        except (OSError, ValueError):
            continue
        for shard in index.get("shardlist", []):
            url = shard["url"] if "://" in shard["url"] or shard["url"].startswith("/") else f"{parent}/{shard['url']}"
            counts[url] = int(shard["nsamples"])
    return counts


def _count_samples(path: str) -> int:
    """Samples with an image in a local tar: headers only, the data is skipped."""
    keys = set()
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                stem, _, suffix = member.name.rpartition(".")
                if member.isfile() and suffix.lower() in IMAGE_SUFFIXES:
                    keys.add(stem)
    except (OSError, tarfile.TarError) as error:
        raise DatasetProblem(f"{path}: not a readable tar file ({error})") from None
    return len(keys)


def tar_rows(handle: Any, name: str = "") -> Any:
    """Samples of a tar stream as rows: ``{key}.jpg`` (or png/webp) is the image; ``{key}.json``
    our fields (image_id, alt_texts, queries, entities); ``{key}.txt`` an alt text."""
    current: dict[str, Any] = {}
    key = None
    with tarfile.open(fileobj=handle, mode="r|*") as archive:
        for member in archive:
            if not member.isfile():
                continue
            stem, _, suffix = member.name.rpartition(".")
            if stem != key and current:
                row = _tar_row(key, current, name)
                if row is not None:
                    yield row
                current = {}
            key = stem
            extracted = archive.extractfile(member)
            current[suffix.lower()] = extracted.read() if extracted else b""
    if current:
        row = _tar_row(key, current, name)
        if row is not None:
            yield row


def _tar_row(key: str | None, parts: dict[str, bytes], name: str = "") -> dict[str, Any] | None:
    image = next((parts[s] for s in IMAGE_SUFFIXES if s in parts), None)
    if image is None or key is None:
        return None
    fields = json.loads(parts["json"]) if "json" in parts else {}
    text = parts.get("txt", b"").decode("utf-8", "replace").strip()
    alt_texts = fields.get("alt_texts") or ([text] if text else [])
    if not alt_texts and not fields.get("queries"):  # nothing to pair the image with: say where, not mid-collate
        raise DatasetProblem(f"{name or 'a tar shard'}: sample {key} has an image but no text to pair it with "
                             "(a .txt, or alt_texts or queries in its .json)")
    return {"image": {"bytes": image, "path": None}, "image_id": fields.get("image_id") or key.rsplit("/", 1)[-1],
            "alt_texts": alt_texts, "queries": fields.get("queries") or [], "entities": fields.get("entities") or []}
