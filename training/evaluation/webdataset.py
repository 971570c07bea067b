"""CLIP_benchmark's webdataset layout, local or on the Hub (``clip-benchmark/wds_imagenet1k``)::

    ROOT/classnames.txt                           one class name per line (classification)
    ROOT/zeroshot_classification_templates.txt    one template per line, {c} for the name
    ROOT/dataset_type.txt                         "retrieval" for image-text datasets
    ROOT/SPLIT/nshards.txt                        the number of shards
    ROOT/SPLIT/0.tar, 1.tar, ...                  samples: KEY.jpg|png|webp, KEY.cls (label) or KEY.txt (captions)

Shards are read as streams (``tarfile`` over fsspec: the local disk or ``hf://``), so nothing is
downloaded whole or cached; samples come in shard order, as CLIP_benchmark reads them.
"""

from __future__ import annotations

import logging
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# CLIP_benchmark takes the first of these a sample has
IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")
MARKERS = ("classnames.txt", "zeroshot_classification_templates.txt", "dataset_type.txt")


class WebDatasetError(ValueError):
    """A webdataset folder that lacks what the layout needs."""


@dataclass(frozen=True, slots=True)
class Sample:
    key: str
    where: str  # "ROOT/test/0.tar:KEY" for error messages
    image: bytes
    label: int | None
    captions: tuple[str, ...]


@dataclass(frozen=True)
class WebDataset:
    """One split of a CLIP_benchmark webdataset on a filesystem (local, or HfFileSystem)."""

    fs: Any
    root: str
    split: str

    def text(self, name: str) -> str | None:
        path = f"{self.root}/{name}"
        if not self.fs.isfile(path):
            return None
        with self.fs.open(path, "rb") as handle:
            return handle.read().decode("utf-8")

    def lines(self, name: str) -> list[str] | None:
        text = self.text(name)
        return None if text is None else [line.strip() for line in text.splitlines() if line.strip()]

    @property
    def kind(self) -> str:
        kind = (self.text("dataset_type.txt") or "classification").strip().lower()
        if kind not in ("classification", "retrieval"):
            raise WebDatasetError(f"{self.root}: dataset_type.txt says {kind!r}; only classification and retrieval "
                                  "webdatasets can be evaluated")
        return kind

    def shards(self) -> list[str]:
        count = self.text(f"{self.split}/nshards.txt")
        if count is None:
            splits = sorted(p.rsplit("/", 2)[-2] for p in self.fs.glob(f"{self.root}/*/nshards.txt"))
            raise WebDatasetError(f"{self.root}: no split {self.split!r} ({self.split}/nshards.txt is missing); "
                                  f"splits here: {', '.join(splits) or 'none'}")
        try:
            return [f"{self.root}/{self.split}/{n}.tar" for n in range(int(count.strip()))]
        except ValueError:
            raise WebDatasetError(f"{self.root}/{self.split}/nshards.txt: expected a number, got {count.strip()!r}") from None

    def samples(self) -> Iterator[Sample]:
        for shard in self.shards():
            if not self.fs.isfile(shard):
                raise WebDatasetError(f"{shard}: missing (nshards.txt promises it)")
            with self.fs.open(shard, "rb") as handle:
                yield from _samples(handle, shard)


def _samples(handle: Any, shard: str) -> Iterator[Sample]:
    key, fields = None, {}
    try:
        with tarfile.open(fileobj=handle, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, _, base = member.name.rpartition("/")
                stem, _, extension = base.partition(".")
                member_key = f"{folder}/{stem}" if folder else stem
                if member_key != key and key is not None:
                    yield _sample(key, fields, shard)
                    fields = {}
                key = member_key
                fields[extension.lower()] = tar.extractfile(member).read()
    except tarfile.TarError as error:
        raise WebDatasetError(f"{shard}: not a readable tar file ({error})") from None
    if key is not None:
        yield _sample(key, fields, shard)


def _sample(key: str, fields: dict[str, bytes], shard: str) -> Sample:
    where = f"{shard}:{key}"
    image = next((fields[ext] for ext in IMAGE_EXTENSIONS if ext in fields), None)
    if image is None:
        raise WebDatasetError(f"{where}: no image ({', '.join(IMAGE_EXTENSIONS)}) among {', '.join(sorted(fields))}")
    label = None
    if "cls" in fields:
        try:
            label = int(fields["cls"].decode().strip())
        except ValueError:
            raise WebDatasetError(f"{where}.cls: expected an integer label") from None
    captions = tuple(line for line in fields["txt"].decode("utf-8").splitlines() if line.strip()) if "txt" in fields else ()
    return Sample(key, where, image, label, captions)


def local_or_hub(location: str) -> tuple[Any, str]:
    """(filesystem, root) for a local folder or a Hub dataset id."""
    from pathlib import Path

    import fsspec

    if Path(location).is_dir():
        return fsspec.filesystem("file"), str(Path(location).resolve())
    if hub_offline():
        raise WebDatasetError(f"{location}: HF_HUB_OFFLINE is set, so a Hub dataset cannot be read; "
                              "give a local copy")
    from huggingface_hub import HfFileSystem

    return HfFileSystem(), f"datasets/{location.strip('/')}"


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now: huggingface_hub reads it once, at import, and HfFileSystem
    does not honour it at all."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def looks_like_webdataset(fs: Any, root: str) -> bool:
    return any(fs.isfile(f"{root}/{name}") for name in MARKERS) or bool(fs.glob(f"{root}/*/nshards.txt"))
