"""Shards: the unit of download work, of output and of resume.

The plan (plan.py) groups the candidates by URL and cuts them into shards of ``urls_per_shard``,
written once to RUN/cache/download/plan/shard-NNNNN.parquet. A URL may come with alternatives
(``entitynet import``: a release's other links to the same picture): they are tried in order
when it fails, and the first that gives an image is the image. Each released row's links are a
chain of their own: rows that share a first link but not the rest are tried down their own links,
so a row gets only an image its own links reached (its texts and split go to nothing else), and
a row none of whose links works is a failure of its own. A worker turns one plan file
into RUN/images/shard-NNNNN.parquet (stored images), shard-NNNNN.failures.parquet (every URL
that did not make it, with its reason) and, last, shard-NNNNN.json (counts, bytes, seconds): the
JSON is the shard's completion marker, so a shard is either finished or redone from scratch.

Memory does not grow with the shard: at most ``2 x threads`` URLs are in flight per process (as
img2dataset's semaphore does), and each image is written to its shard's parquet file (a small
row group at a time) as soon as it is ready, in the order downloads finish; every row carries
its ``position`` in the plan, which readers that need the plan's order sort by.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from entitynet import layout
from entitynet.config import DownloadConfig
from entitynet.download.fetch import TRANSIENT, Fetched, Fetcher
from entitynet.download.images import Processed, process
from entitynet.http import display_url
from entitynet.records import Failure, Finding, PlannedUrl, StoredImage
from entitynet.rundir import write_text_atomic
from entitynet.tables import (
    FAILURE_SCHEMA,
    IMAGE_SCHEMA,
    RecordWriter,
    failure_to_row,
    image_to_row,
    read_plan,
    read_rows,
)

IMAGES_PER_ROW_GROUP = 32  # a few MB of JPEGs: what a writer holds before it flushes


@dataclass(frozen=True)
class ShardJob:
    number: int
    plan: Path
    out_dir: Path
    config: DownloadConfig
    only: frozenset[str] | None = None  # a retry: only these URLs (the shard's transient failures)


def shard_done(out_dir: Path, number: int) -> bool:
    names = (layout.shard_stats(number), layout.shard_images(number), layout.shard_failures(number))
    return all((out_dir / name).exists() for name in names)


@dataclass(frozen=True)
class _Result:
    """What became of one planned URL: an image per link its chains reached, a failure per chain
    that reached none (a URL without alternatives: one or the other)."""

    shard: int
    position: int
    url: str
    images: list[StoredImage]
    failures: list[Failure]
    bytes_fetched: int


class _ShardOutput:
    """One shard being written: images go to its parquet file as they come; when its last URL is
    done, the failures follow, then the JSON that marks the shard complete."""

    def __init__(self, job: ShardJob, expected: int, retried: frozenset[int] = frozenset()) -> None:
        self.job = job
        self.retried = retried  # plan positions fetched again: their earlier images are dropped
        self.expected = expected
        self.started = time.monotonic()
        self.failures: list[tuple[int, Failure]] = []
        self.counts: Counter[str] = Counter()
        out = job.out_dir
        out.mkdir(parents=True, exist_ok=True)
        (out / layout.shard_stats(job.number)).unlink(missing_ok=True)  # incomplete until the end
        self.images = RecordWriter[StoredImage](out / layout.shard_images(job.number), IMAGE_SCHEMA, image_to_row,
                                                IMAGES_PER_ROW_GROUP, compression="none")  # JPEG bytes do not compress
        self.images.__enter__()
        if job.only is not None:
            self._keep_earlier()

    def _keep_earlier(self) -> None:
        """A retry keeps what the last run stored and the failures it does not retry."""
        earlier = self.job.out_dir / layout.shard_images(self.job.number)
        for batch in pq.ParquetFile(earlier).iter_batches(batch_size=IMAGES_PER_ROW_GROUP):
            table = pa.Table.from_batches([batch])
            # a retried URL is redone whole: an image one of its chains reached comes again
            table = table.filter(pc.invert(pc.is_in(table.column("position"), pa.array(sorted(self.retried), pa.int32()))))
            self.images.write_table(table)
            self.counts.update(stored=table.num_rows, bytes_stored=pc.sum(pc.binary_length(table.column("image"))).as_py() or 0)
        for row in read_rows(self.job.out_dir / layout.shard_failures(self.job.number)):
            if row["url"] not in self.job.only:  # type: ignore[operator]
                self.failures.append((-1, Failure(**row)))

    def add(self, result: _Result) -> None:
        self.counts["done"] += 1
        self.counts["bytes_fetched"] += result.bytes_fetched
        for image in result.images:
            self.images.write(image)
            self.counts.update(stored=1, bytes_stored=len(image.image))
        self.failures += [(result.position, failure) for failure in result.failures]

    @property
    def complete(self) -> bool:
        return self.counts["done"] == self.expected

    def finish(self) -> dict[str, Any]:
        number, out = self.job.number, self.job.out_dir
        self.images.__exit__(None, None, None)
        failures = [failure for _, failure in sorted(self.failures, key=lambda item: item[0])]
        with RecordWriter[Failure](out / layout.shard_failures(number), FAILURE_SCHEMA, failure_to_row) as writer:
            writer.write_all(failures)
        stats = {
            "shard": number,
            "urls": self.counts["stored"] + len(failures),
            "stored": self.counts["stored"],
            "failed": len(failures),
            "reasons": dict(sorted(Counter(f.reason for f in failures).items())),
            "bytes_fetched": self.counts["bytes_fetched"],
            "bytes_stored": self.counts["bytes_stored"],
            "seconds": round(time.monotonic() - self.started, 3),
            "retried": self.expected if self.job.only is not None else 0,
        }
        write_text_atomic(out / layout.shard_stats(number), json.dumps(stats, indent=2) + "\n")
        return stats

    def abort(self) -> None:
        """An interrupted shard leaves no file behind (the temporary one is removed)."""
        self.images.abort()


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
    """Runs shards in one process on one thread pool. URLs of the next shard start while the last
    ones of the current shard finish, so no thread idles at shard boundaries; at most
    ``2 x threads`` are in flight, so memory stays flat whatever the shard size."""

    def __init__(self, config: DownloadConfig) -> None:
        self.config = config
        self.fetcher = Fetcher(config)
        self.limits = _HostLimits(config.per_host)
        self.window = 2 * config.threads

    def run(self, jobs: list[ShardJob]) -> Iterator[dict[str, Any]]:
        """Each finished shard's statistics, as it finishes."""
        outputs: dict[int, _ShardOutput] = {}
        pending: set[Future[_Result]] = set()
        with ThreadPoolExecutor(max_workers=self.config.threads, thread_name_prefix="download") as pool:
            try:
                for job in jobs:
                    todo = [(position, planned) for position, planned in enumerate(read_plan(job.plan))
                            if job.only is None or planned.url in job.only]
                    retried = frozenset(position for position, _ in todo) if job.only is not None else frozenset()
                    outputs[job.number] = _ShardOutput(job, len(todo), retried)
                    for position, planned in todo:
                        pending.add(pool.submit(self._one, job.number, position, planned))
                        while len(pending) >= self.window:
                            done, pending = wait(pending, return_when=FIRST_COMPLETED)
                            yield from self._collect(done, outputs)
                    if not todo:
                        yield outputs.pop(job.number).finish()
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from self._collect(done, outputs)
            except BaseException:  # interrupted: no queued download starts, no unfinished shard file stays
                pool.shutdown(wait=False, cancel_futures=True)
                for output in outputs.values():
                    output.abort()
                raise

    def _collect(self, done: set[Future[_Result]], outputs: dict[int, _ShardOutput]) -> Iterator[dict[str, Any]]:
        for future in done:
            result = future.result()
            output = outputs[result.shard]
            output.add(result)
            if output.complete:
                yield outputs.pop(result.shard).finish()

    def _one(self, shard: int, position: int, planned: PlannedUrl) -> _Result:
        """Each chain of the planned URL (the URL, then one row's other links) in order: the first
        link that gives an image is that chain's image; when none does, one failure for the chain
        says what happened to each link. A link is fetched once however many chains name it, and
        chains that reach the same link share its image (with the sources of those chains only)."""
        outcomes: dict[str, tuple[Fetched, Processed] | Failure] = {}
        reached: dict[str, tuple[list[str], list[Finding]]] = {}  # link -> the links and sources of chains that reached it
        failures: list[Failure] = []
        fetched_bytes = 0
        for links, sources in planned.chains():
            tried: list[Failure] = []
            for link in links:
                if link not in outcomes:
                    outcomes[link], size = self._attempt(link, shard)
                    fetched_bytes += size
                outcome = outcomes[link]
                if isinstance(outcome, Failure):
                    tried.append(outcome)
                    continue
                chain_links, chain_sources = reached.setdefault(link, ([], []))
                chain_links += [other for other in links if other not in chain_links]
                chain_sources += sources
                break
            else:
                failures.append(tried[0] if len(tried) == 1 else _every_link_failed(planned.url, tried, shard))
        images = [_stored(outcomes[link], link, links, sources, position)  # type: ignore[arg-type]
                  for link, (links, sources) in reached.items()]
        return _Result(shard, position, planned.url, images, failures, fetched_bytes)

    def _attempt(self, url: str, shard: int) -> tuple[tuple[Fetched, Processed] | Failure, int]:
        """One link: fetched and processed, or why not; and the bytes fetched."""
        with self.limits(url):
            fetched = self.fetcher.fetch(url)
        if not fetched.ok:
            return _failure(url, fetched.reason or "connection", fetched.detail, fetched.status, fetched.attempts, shard), 0
        size = len(fetched.data)  # type: ignore[arg-type]
        image = process(fetched.data, self.config, fetched.format)  # type: ignore[arg-type]
        if not image.ok:
            return _failure(url, image.reason or "corrupt_image", image.detail, fetched.status, fetched.attempts, shard), size
        return (fetched, image), size


def _stored(outcome: tuple[Fetched, Processed], link: str, links: list[str], sources: list[Finding], position: int) -> StoredImage:
    """The image ``link`` gave; the other links of the chains that reached it are its alternatives."""
    fetched, image = outcome
    return StoredImage(
        image_id=image.sha256, image=image.data, width=image.width, height=image.height,  # type: ignore[arg-type]
        original_width=image.original_width, original_height=image.original_height, dhash=image.dhash,
        source_format=fetched.format, url=link, final_url=fetched.final_url, sources=sources,
        position=position, alternatives=[other for other in links if other != link],
    )


def _every_link_failed(url: str, failures: list[Failure], shard: int) -> Failure:
    """One failure for a URL and its alternatives, under the planned URL (what --retry-failures
    refetches, all links again). Its reason is the first transient one, if any link failed for a
    transient reason (so a retry is worth it), else the first link's; the detail names every link's."""
    transient = [failure for failure in failures if failure.transient]
    reason = (transient or failures)[0].reason
    detail = "; ".join(f"link {index}/{len(failures)} {display_url(f.url)}: {f.reason} ({f.detail})"
                       for index, f in enumerate(failures, 1))
    return Failure(url, "download", reason, detail[:1000], failures[-1].status, sum(f.attempts for f in failures),
                   shard, bool(transient))


def run_shards(jobs: list[ShardJob]) -> list[dict[str, Any]]:
    """All of one process's shards (the entry point of a worker process)."""
    if not jobs:
        return []
    return list(ShardWorker(jobs[0].config).run(jobs))


def _failure(url: str, reason: str, detail: str, status: int | None, attempts: int, shard: int) -> Failure:
    return Failure(url, "download", reason, detail, status, attempts, shard, reason in TRANSIENT)


def write_shard(out_dir: Path, number: int, images: list[StoredImage], failures: list[Failure], stats: dict[str, Any]) -> None:
    """A whole shard at once (a shard made elsewhere, or by hand): images, failures, then the
    JSON that marks it complete, each atomically."""
    (out_dir / layout.shard_stats(number)).unlink(missing_ok=True)
    with RecordWriter[StoredImage](out_dir / layout.shard_images(number), IMAGE_SCHEMA, image_to_row,
                                   IMAGES_PER_ROW_GROUP, compression="none") as writer:
        writer.write_all(images)
    with RecordWriter[Failure](out_dir / layout.shard_failures(number), FAILURE_SCHEMA, failure_to_row) as writer:
        writer.write_all(failures)
    write_text_atomic(out_dir / layout.shard_stats(number), json.dumps(stats, indent=2) + "\n")


def transient_failures(out_dir: Path, number: int) -> frozenset[str]:
    table = pq.read_table(out_dir / layout.shard_failures(number), columns=["url", "transient"])
    return frozenset(table.filter(pc.field("transient")).column("url").to_pylist())
