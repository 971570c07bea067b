"""Duplicates across all shards: identical bytes (same sha256) or near-identical pictures
(difference hashes within ``distance`` bits) become one group with one canonical image.

Near pairs are found by banding (``NearIndex``): the 64 hash bits are cut into ``distance + 1``
bands, and two hashes within ``distance`` bits must agree on at least one whole band
(pigeonhole), so only images sharing a band are compared. Groups are closed transitively
(union-find); the canonical image is the first in plan order (shard, then position). The result,
RUN/images/duplicates.parquet, maps every other member to its canonical id; the dataset builder
merges their URLs, queries and alt texts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from entitynet import layout
from entitynet.download.images import hamming
from entitynet.records import Duplicate
from entitynet.tables import DUPLICATE_SCHEMA, RecordWriter, duplicate_to_row, image_shard


class NearIndex:
    """Which of many 64-bit hashes lie within ``distance`` bits of a given one, without comparing
    all pairs: candidates share at least one of ``distance + 1`` bands."""

    def __init__(self, distance: int) -> None:
        self.distance = distance
        self.buckets: dict[tuple[int, int], list[int]] = defaultdict(list)  # band -> keys
        self.hashes: list[int] = []

    def _bands(self, value: int) -> Iterator[tuple[int, int]]:
        count = self.distance + 1
        width = 64 // count
        for index in range(count):
            shift = index * width
            bits = width if index < count - 1 else 64 - shift
            yield index, (value >> shift) & ((1 << bits) - 1)

    def add(self, value: int) -> int:
        """Index ``value``; returns its key (0, 1, 2, ... in the order added)."""
        key = len(self.hashes)
        self.hashes.append(value)
        for band in self._bands(value):
            self.buckets[band].append(key)
        return key

    def near(self, value: int) -> set[int]:
        """Keys of the indexed hashes within ``distance`` bits of ``value``."""
        found = {key for band in self._bands(value) for key in self.buckets.get(band, ())}
        return {key for key in found if hamming(self.hashes[key], value) <= self.distance}


def image_keys(images_dir: Path) -> Iterator[tuple[str, str, int]]:
    """(image_id, url, dhash) of every stored image, in plan order."""
    for path in sorted(images_dir.glob(layout.IMAGE_SHARD_GLOB)):
        table = image_shard(path, ["image_id", "url", "dhash"])
        yield from zip(table.column("image_id").to_pylist(), table.column("url").to_pylist(), table.column("dhash").to_pylist())


def find_duplicates(images_dir: Path, output: Path, distance: int) -> dict[str, int]:
    rows = list(image_keys(images_dir))
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)  # the earliest image stays canonical

    first_by_id: dict[str, int] = {}
    for index, (image_id, _, _) in enumerate(rows):
        if image_id in first_by_id:
            union(first_by_id[image_id], index)
        else:
            first_by_id[image_id] = index
    if distance > 0:
        index = NearIndex(distance)
        unique = list(first_by_id.values())
        for row in unique:
            index.add(rows[row][2])
        for key, row in enumerate(unique):
            for other in index.near(rows[row][2]):
                if other > key:
                    union(row, unique[other])
    duplicates = list(_duplicates(rows, [find(i) for i in range(len(rows))]))
    with RecordWriter[Duplicate](output, DUPLICATE_SCHEMA, duplicate_to_row) as writer:
        writer.write_all(duplicates)
    return {
        "images": len(rows),
        "unique": len(rows) - len(duplicates),
        "identical": sum(d.kind == "identical" for d in duplicates),
        "near": sum(d.kind == "near" for d in duplicates),
    }


def _duplicates(rows: list[tuple[str, str, int]], roots: Iterable[int]) -> Iterator[Duplicate]:
    for index, root in enumerate(roots):
        if root != index:
            (image_id, url, value), (canonical_id, canonical_url, canonical_value) = rows[index], rows[root]
            kind = "identical" if canonical_id == image_id else "near"
            yield Duplicate(image_id, url, canonical_id, canonical_url, kind, hamming(value, canonical_value))
