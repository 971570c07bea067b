"""The download plan: candidates grouped by URL, in order of first appearance, cut into shards.

One fetch per URL: every candidate that named it (query, engine, rank, alt text, page, licence,
split) is kept as a source, in candidate order. A candidate's alternatives (an import's other links
to the same picture) stay its own: each distinct list is a tail of the URL, and each source names
its tail, so two released rows that share a dead first link are each tried down their own links. Shard k holds URLs [k S, (k+1) S) of that order
for S = ``urls_per_shard``, written to RUN/cache/download/plan/shard-NNNNN.parquet.

Memory is bounded whatever the number of candidates (an imported release has tens of millions):

1. the candidates are streamed into buckets by a hash of the URL, each row with its place in
   the candidate order, so every candidate of a URL lands in the same bucket;
2. each bucket (at most about ``bucket_rows`` rows) is grouped in Arrow: a URL's first place,
   rows sorted by (first place, place), written back;
3. the sorted buckets are merged by first place, a batch at a time, and cut into shards.

Grouping all candidates in one Python pass, as the first version did, held about 2 KB per
candidate (400,000 took 770 MB; an imported EntityNet's 70 million would have taken 130 GB).
With buckets of 200,000 rows, 400,000 candidates peaked at 390 MB and 2.4 million at 430 MB
(about 30 s per million on one core).
"""

from __future__ import annotations

import heapq
import itertools
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from entitynet import layout
from entitynet.rundir import atomic_path
from entitynet.tables import PLAN_SCHEMA, SOURCE_FIELDS, SOURCE_TYPE

BUCKET_ROWS = 1_000_000  # candidates grouped in memory at once: about 0.6 GB at the peak
_BUCKET_SCHEMA = pa.schema([("url", pa.string()), ("order", pa.int64()), *SOURCE_TYPE,
                            ("alternatives", pa.list_(pa.string()))])


def make_plan(candidate_parts: list[Path], plan_dir: Path, urls_per_shard: int, bucket_rows: int = BUCKET_ROWS) -> int:
    """Write the plan files; returns the number of shards. Deterministic for the same candidates,
    and the same whatever ``bucket_rows``."""
    plan_dir.mkdir(parents=True, exist_ok=True)
    total = sum(pq.ParquetFile(part).metadata.num_rows for part in candidate_parts)
    if not total:
        return 0
    work = plan_dir / "buckets"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    buckets = _spread(candidate_parts, work, -(-total // bucket_rows))
    shards = _cut([_group(bucket) for bucket in buckets], plan_dir, urls_per_shard)
    shutil.rmtree(work)
    return shards


def _spread(candidate_parts: list[Path], work: Path, count: int) -> list[Path]:
    """Pass 1: every candidate, with its place in the candidate order, into the bucket of its URL."""
    paths = [work / f"bucket-{number:05d}.parquet" for number in range(count)]
    writers = [pq.ParquetWriter(path, _BUCKET_SCHEMA) for path in paths]
    order = 0
    try:
        for part in candidate_parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=65_536):
                table = pa.Table.from_batches([batch])
                table = table.append_column("order", pa.array(range(order, order + table.num_rows), pa.int64()))
                table = table.select(_BUCKET_SCHEMA.names).cast(_BUCKET_SCHEMA)
                order += table.num_rows
                if count == 1:
                    writers[0].write_table(table)
                    continue
                keys = pa.array([zlib.crc32(url.encode()) % count for url in table.column("url").to_pylist()], pa.int32())
                for number, writer in enumerate(writers):
                    writer.write_table(table.filter(pc.equal(keys, number)))
    finally:
        for writer in writers:
            writer.close()
    return paths


def _group(bucket: Path) -> Path:
    """Pass 2: one bucket's rows sorted by their URL's first place, then their own."""
    table = pq.read_table(bucket).sort_by("order")  # written in order already; places are unique
    first = table.group_by("url", use_threads=False).aggregate([("order", "min")]).rename_columns(["url", "first"])
    # Arrow joins no list columns: join the keys alone, then line them up with the rows by place.
    keyed = table.select(["url", "order"]).join(first, "url", use_threads=False).sort_by("order")
    table = table.append_column("first", keyed.column("first")).sort_by([("first", "ascending"), ("order", "ascending")])
    grouped = bucket.with_name(f"{bucket.stem}.grouped.parquet")
    pq.write_table(table, grouped, row_group_size=10_000)
    bucket.unlink()
    return grouped


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1_000):  # per bucket: memory grows with their number
        yield from batch.to_pylist()


def _planned(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One URL's plan row: its candidates as sources, each with the index of its tail (its other links)."""
    tails: list[list[str]] = []
    tail_of = []
    for row in rows:
        tail = row["alternatives"] or []
        if tail not in tails:
            tails.append(tail)
        tail_of.append(tails.index(tail))
    return {"url": rows[0]["url"], "sources": [{name: row[name] for name in SOURCE_FIELDS} for row in rows],
            "alternatives": tails[0], "tails": tails, "tail_of": tail_of}


def _cut(grouped: list[Path], plan_dir: Path, urls_per_shard: int) -> int:
    """Pass 3: the buckets merged by first place (a URL's rows stay together), cut into shards."""
    merged = heapq.merge(*map(_rows, grouped), key=lambda row: (row["first"], row["order"]))
    planned = (_planned(list(group)) for _, group in itertools.groupby(merged, key=lambda row: row["first"]))
    shards = 0
    for shard in iter(lambda: list(itertools.islice(planned, urls_per_shard)), []):
        with atomic_path(plan_dir / layout.shard_images(shards)) as temporary:
            pq.write_table(pa.Table.from_pylist(shard, schema=PLAN_SCHEMA), temporary)
        shards += 1
    return shards
