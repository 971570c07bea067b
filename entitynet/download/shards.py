"""Shards: the unit of download work, of output and of resume.

The plan groups the candidates by URL (one fetch per URL, every query and alt text that found it
kept as a source) in order of first appearance and cuts them into shards of ``urls_per_shard``;
it is written once to RUN/cache/download/plan/shard-NNNNN.parquet. A worker turns one plan file
into RUN/images/shard-NNNNN.parquet (stored images), shard-NNNNN.failures.parquet (every URL
that did not make it, with its reason) and, last, shard-NNNNN.json (counts, bytes, seconds): the
JSON is the shard's completion marker, so a shard is either finished or redone from scratch.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from entitynet import layout
from entitynet.config import DownloadConfig
from entitynet.download.fetch import TRANSIENT, Fetcher
from entitynet.download.images import ImagePolicy, process
from entitynet.rundir import atomic_path, write_text_atomic

SOURCE_FIELDS = ["query_id", "engine", "rank", "text", "page_url", "license", "license_url", "attribution"]
SOURCE_TYPE = pa.struct([
    ("query_id", pa.string()), ("engine", pa.string()), ("rank", pa.int32()), ("text", pa.string()),
    ("page_url", pa.string()), ("license", pa.string()), ("license_url", pa.string()), ("attribution", pa.string()),
])
PLAN_SCHEMA = pa.schema([("url", pa.string()), ("sources", pa.list_(SOURCE_TYPE))])
IMAGE_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("image", pa.binary()), ("width", pa.int32()), ("height", pa.int32()),
    ("original_width", pa.int32()), ("original_height", pa.int32()), ("phash", pa.uint64()),
    ("source_format", pa.string()), ("url", pa.string()), ("final_url", pa.string()),
    ("sources", pa.list_(SOURCE_TYPE)),
], metadata={"entitynet.record": "StoredImage"})
FAILURE_SCHEMA = pa.schema([
    ("url", pa.string()), ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
    ("status", pa.int32()), ("attempts", pa.int32()), ("shard", pa.int32()), ("transient", pa.bool_()),
], metadata={"entitynet.record": "Failure"})


def make_plan(candidate_parts: list[Path], plan_dir: Path, urls_per_shard: int) -> int:
    """Write the plan files; returns the number of shards. Deterministic for the same candidates."""
    tables = [pq.read_table(part) for part in candidate_parts]
    plan_dir.mkdir(parents=True, exist_ok=True)
    if not tables or not sum(t.num_rows for t in tables):
        return 0
    table = pa.concat_tables(tables, promote_options="default").combine_chunks()
    table = table.append_column("order", pa.array(range(table.num_rows), pa.int64()))
    first = table.group_by("url", use_threads=False).aggregate([("order", "min")]).sort_by("order_min")
    position = {url: index for index, url in enumerate(first.column("url").to_pylist())}
    sources: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in table.select(["url", *SOURCE_FIELDS]).to_pylist():
        sources[position[row.pop("url")]].append(row)
    urls = first.column("url").to_pylist()
    shards = (len(urls) + urls_per_shard - 1) // urls_per_shard
    for number in range(shards):
        chunk = range(number * urls_per_shard, min(len(urls), (number + 1) * urls_per_shard))
        rows = [{"url": urls[i], "sources": sources[i]} for i in chunk]
        with atomic_path(plan_dir / layout.shard_images(number)) as temporary:
            pq.write_table(pa.Table.from_pylist(rows, schema=PLAN_SCHEMA), temporary)
    return shards


@dataclass(frozen=True)
class ShardJob:
    number: int
    plan: Path
    out_dir: Path
    fetch: DownloadConfig
    image: ImagePolicy
    threads: int
    per_host: int


def shard_done(out_dir: Path, number: int) -> bool:
    names = (layout.shard_stats(number), layout.shard_images(number), layout.shard_failures(number))
    return all((out_dir / name).exists() for name in names)


class _HostLimits:
    """At most ``limit`` requests in flight per host, whatever the size of the thread pool."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.semaphores: dict[str, threading.Semaphore] = {}

    def __call__(self, url: str) -> threading.Semaphore:
        host = urllib.parse.urlsplit(url).hostname or ""
        with self.lock:
            return self.semaphores.setdefault(host, threading.Semaphore(self.limit))


class ShardWorker:
    """Runs shards in one process on one thread pool, the next shard's downloads starting while
    the current one finishes, so no thread idles at shard boundaries."""

    def __init__(self, threads: int, per_host: int, fetch: DownloadConfig, image: ImagePolicy) -> None:
        self.threads = threads
        self.fetcher = Fetcher(fetch)
        self.image = image
        self.limits = _HostLimits(per_host)

    def run(self, jobs: list[tuple[ShardJob, set[str] | None]]) -> Iterator[dict[str, Any]]:
        in_flight: deque[tuple[ShardJob, set[str] | None, list[dict[str, Any]], list[Future[Any]], float]] = deque()
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="download") as pool:
            for job, only in jobs:
                plan = pq.read_table(job.plan).to_pylist()
                todo = [row for row in plan if only is None or row["url"] in only]
                futures = [pool.submit(self._one, row, job.number) for row in todo]
                in_flight.append((job, only, plan, futures, time.monotonic()))
                while len(in_flight) > 1:
                    yield self._finish(*in_flight.popleft())
            while in_flight:
                yield self._finish(*in_flight.popleft())

    def _one(self, row: dict[str, Any], shard: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None, int]:
        with self.limits(row["url"]):
            fetched = self.fetcher.fetch(row["url"])
        if not fetched.ok:
            return None, _failure(row["url"], fetched.reason, fetched.detail, fetched.status, fetched.attempts, shard), 0
        image = process(fetched.data, self.image, fetched.format)  # type: ignore[arg-type]
        size = len(fetched.data)  # type: ignore[arg-type]
        if not image.ok:
            return None, _failure(row["url"], image.reason, image.detail, fetched.status, fetched.attempts, shard), size  # type: ignore[arg-type]
        stored = {
            "image_id": image.sha256, "image": image.data, "width": image.width, "height": image.height,
            "original_width": image.original_width, "original_height": image.original_height, "phash": image.phash,
            "source_format": fetched.format, "url": row["url"], "final_url": fetched.final_url, "sources": row["sources"],
        }
        return stored, None, size

    def _finish(self, job: ShardJob, only: set[str] | None, plan: list[dict[str, Any]],
                futures: list[Future[Any]], started: float) -> dict[str, Any]:
        results = [future.result() for future in futures]
        images = [stored for stored, _, _ in results if stored]
        failures = [failure for _, failure, _ in results if failure]
        if only is not None:  # a retry: keep what the last run stored, replace the retried failures
            images = pq.read_table(job.out_dir / layout.shard_images(job.number)).to_pylist() + images
            kept = [f for f in pq.read_table(job.out_dir / layout.shard_failures(job.number)).to_pylist() if f["url"] not in only]
            failures = kept + failures
            order = {row["url"]: index for index, row in enumerate(plan)}
            images.sort(key=lambda row: order[row["url"]])
            failures.sort(key=lambda row: order[row["url"]])
        stats = {
            "shard": job.number,
            "urls": len(plan),
            "stored": len(images),
            "failed": len(failures),
            "reasons": dict(sorted(Counter(f["reason"] for f in failures).items())),
            "bytes_fetched": sum(size for _, _, size in results),
            "bytes_stored": sum(len(row["image"]) for row in images),
            "seconds": round(time.monotonic() - started, 3),
            "retried": len(results) if only is not None else 0,
        }
        write_shard(job.out_dir, job.number, images, failures, stats)
        return stats


def run_shards(jobs: list[tuple[ShardJob, set[str] | None]]) -> list[dict[str, Any]]:
    """All of one process's shards (the entry point of a worker process)."""
    if not jobs:
        return []
    first = jobs[0][0]
    worker = ShardWorker(first.threads, first.per_host, first.fetch, first.image)
    return list(worker.run(jobs))


def _failure(url: str, reason: str, detail: str, status: int | None, attempts: int, shard: int) -> dict[str, Any]:
    return {"url": url, "stage": "download", "reason": reason, "detail": detail, "status": status,
            "attempts": attempts, "shard": shard, "transient": reason in TRANSIENT}


def write_shard(out_dir: Path, number: int, images: list[dict], failures: list[dict], stats: dict) -> None:
    """Images, then failures, then the JSON that marks the shard complete: each atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / layout.shard_stats(number)).unlink(missing_ok=True)  # a retry rewrites: incomplete until the end
    with atomic_path(out_dir / layout.shard_images(number)) as temporary:
        pq.write_table(pa.Table.from_pylist(images, schema=IMAGE_SCHEMA), temporary, compression="none")
    with atomic_path(out_dir / layout.shard_failures(number)) as temporary:
        pq.write_table(pa.Table.from_pylist(failures, schema=FAILURE_SCHEMA), temporary)
    write_text_atomic(out_dir / layout.shard_stats(number), json.dumps(stats, indent=2) + "\n")


def transient_failures(out_dir: Path, number: int) -> set[str]:
    table = pq.read_table(out_dir / layout.shard_failures(number), columns=["url", "transient"])
    return set(table.filter(pc.field("transient")).column("url").to_pylist())


def image_rows(out_dir: Path, columns: list[str]) -> Iterator[dict[str, Any]]:
    for path in sorted(out_dir.glob(layout.IMAGE_SHARD_GLOB)):
        for batch in pq.ParquetFile(path).iter_batches(columns=columns):
            yield from batch.to_pylist()
