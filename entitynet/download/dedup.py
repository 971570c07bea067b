"""Duplicates across all shards: identical bytes (same sha256) or near-identical pictures
(difference hashes within ``distance`` bits) become one group with one canonical image.

Near pairs are found by banding: the 64 hash bits are cut into ``distance + 1`` bands, and two
hashes within ``distance`` bits must agree on at least one whole band (pigeonhole), so only
images sharing a band are compared. Groups are closed transitively (union-find); the canonical
image is the first in shard order. The result, RUN/images/duplicates.parquet, maps every other
member to its canonical id; the dataset builder merges their URLs, queries and alt texts.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from entitynet.download.images import hamming
from entitynet.download.shards import image_rows
from entitynet.rundir import atomic_path

DUPLICATE_SCHEMA = pa.schema([("image_id", pa.string()), ("url", pa.string()), ("canonical_id", pa.string()),
                              ("canonical_url", pa.string()), ("kind", pa.string()), ("distance", pa.int8())])


def _bands(value: int, count: int) -> list[tuple[int, int]]:
    width = 64 // count
    bands = []
    for index in range(count):
        shift = index * width
        bits = width if index < count - 1 else 64 - shift
        bands.append((index, (value >> shift) & ((1 << bits) - 1)))
    return bands


def find_duplicates(images_dir: Path, output: Path, distance: int) -> dict[str, int]:
    rows = list(image_rows(images_dir, ["image_id", "url", "phash"]))
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
    for index, row in enumerate(rows):
        if row["image_id"] in first_by_id:
            union(first_by_id[row["image_id"]], index)
        else:
            first_by_id[row["image_id"]] = index
    if distance > 0:
        buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index in first_by_id.values():
            for band in _bands(rows[index]["phash"], distance + 1):
                buckets[band].append(index)
        for members in buckets.values():
            for a_position, a in enumerate(members):
                for b in members[a_position + 1:]:
                    if find(a) != find(b) and hamming(rows[a]["phash"], rows[b]["phash"]) <= distance:
                        union(a, b)
    duplicates = []
    for index, row in enumerate(rows):
        root = find(index)
        if root != index:
            canonical = rows[root]
            kind = "identical" if canonical["image_id"] == row["image_id"] else "near"
            duplicates.append({"image_id": row["image_id"], "url": row["url"], "canonical_id": canonical["image_id"],
                               "canonical_url": canonical["url"], "kind": kind,
                               "distance": hamming(row["phash"], canonical["phash"])})
    with atomic_path(output) as temporary:
        pq.write_table(pa.Table.from_pylist(duplicates, schema=DUPLICATE_SCHEMA), temporary)
    return {
        "images": len(rows),
        "unique": len(rows) - len(duplicates),
        "identical": sum(d["kind"] == "identical" for d in duplicates),
        "near": sum(d["kind"] == "near" for d in duplicates),
    }
