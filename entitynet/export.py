"""Export a built dataset as webdataset tar shards (for open_clip and webdataset users).

Each row becomes ``<key>.jpg`` (the stored bytes, not re-encoded), ``<key>.txt`` (its first alt
text, else its first query) and ``<key>.json`` (every other field), in
``OUT/<domain>/<split>-NNNNN.tar``; each shard is written atomically. ``OUT/<domain>/index.json``
lists the shards with their sample counts in webdataset's wids format, so a reader (the trainer
streaming them from a server, ``wids``) knows an epoch's size without reading the tars.
``load_dataset("webdataset", data_files=...)`` reads them back.

An export replaces its folder as a whole: the shards are written into a temporary folder beside
OUT, which then takes OUT's place, so no tar of an earlier export (another shard size, another
dataset) stays beside the new ones for a reader to stream. ``OUT/export.json`` marks a folder as
written by an export; a non-empty folder without it is refused before anything is written, since
replacing it would delete files the export never wrote.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from entitynet.builders.entitynet import SPLITS
from entitynet.rundir import StageError, atomic_path, swap_in, temporary_folder, write_text_atomic

INDEX = "index.json"
MANIFEST = "export.json"  # written last: the folder is an export's, which the next export may replace


class ExportProblem(StageError):
    """The export cannot be written where it was asked; nothing was written."""


def _rows(files: list[Path]) -> Iterator[dict[str, Any]]:
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
            yield from batch.to_pylist()


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible archives
    archive.addfile(info, io.BytesIO(data))


def _write_shard(path: Path, rows: list[dict[str, Any]]) -> None:
    with ExitStack() as stack:
        archive = stack.enter_context(tarfile.open(stack.enter_context(atomic_path(path)), "w"))
        for row in rows:
            key = row["image_id"]
            text = (row["alt_texts"] or [q["text"] for q in row["queries"]] or [""])[0]
            _add(archive, f"{key}.jpg", row["image"]["bytes"])
            _add(archive, f"{key}.txt", text.encode("utf-8"))
            _add(archive, f"{key}.json", json.dumps({k: v for k, v in row.items() if k != "image"}, ensure_ascii=False).encode())


def check_out(out: Path) -> None:
    """Refuse an ``out`` that holds files an export did not write (no ``export.json``)."""
    if out.exists() and not out.is_dir():
        raise ExportProblem(f"export: {out} is a file; --out takes a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ExportProblem(f"export: {out} is not empty and was not written by 'entitynet export' (no {MANIFEST}); "
                            "choose another --out, or empty it yourself")


def export_webdataset(dataset: Path, out: Path, samples_per_shard: int = 1000) -> dict[str, Any]:
    """The dataset's rows as tars in ``out``, replacing an earlier export there as a whole."""
    if samples_per_shard < 1:
        raise ExportProblem(f"export: samples per shard must be at least 1, got {samples_per_shard}")
    check_out(out)
    replaced = out.is_dir() and any(out.iterdir())
    staging = temporary_folder(out.parent, f".{out.name}.partial-")
    try:
        result = _export(dataset, staging, samples_per_shard)
        write_text_atomic(staging / MANIFEST, json.dumps({"format": "webdataset", "dataset": str(dataset),
                                                          "samples_per_shard": samples_per_shard, **result}, indent=1) + "\n")
        swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**result, "out": str(out), "replaced": replaced}


def _export(dataset: Path, out: Path, samples_per_shard: int) -> dict[str, Any]:
    written: dict[str, int] = {}
    for domain_dir in sorted(p for p in (dataset / "data").iterdir() if p.is_dir()):
        shards: dict[str, int] = {}
        for split in SPLITS:
            files = sorted(domain_dir.glob(f"{split}-*.parquet"))
            count, number, pending = 0, 0, []
            for row in _rows(files):
                pending.append(row)
                if len(pending) == samples_per_shard:
                    shards[_flush(out / domain_dir.name, split, number, pending)] = len(pending)
                    count, number, pending = count + len(pending), number + 1, []
            if pending:
                shards[_flush(out / domain_dir.name, split, number, pending)] = len(pending)
                count += len(pending)
            if count:
                written[f"{domain_dir.name}/{split}"] = count
        if shards:
            write_wids_index(out / domain_dir.name, shards)
    return {"samples": written, "total": sum(written.values())}


def _flush(folder: Path, split: str, number: int, rows: list[dict[str, Any]]) -> str:
    name = f"{split}-{number:05d}.tar"
    _write_shard(folder / name, rows)
    return name


def write_wids_index(folder: Path, counts: dict[str, int]) -> None:
    """``folder/index.json``: the tars in it with their sample counts (wids_version 1)."""
    shardlist = [{"url": name, "nsamples": count} for name, count in sorted(counts.items())]
    write_text_atomic(folder / INDEX, json.dumps({"wids_version": 1, "shardlist": shardlist}, indent=1) + "\n")
