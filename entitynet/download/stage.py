"""The download stage: RUN/candidates -> RUN/images/ (shards, failures, duplicates, stats).

Work is split by shard: ``shards[rank::world_size]``. On one machine ``--processes N`` starts N
worker processes (each with its own thread pool); across machines, ``accelerate launch`` (or
torchrun) sets RANK and WORLD_SIZE and every rank takes its share, with the same code. Rank 0
then waits for every shard, merges the failures and the stats, finds duplicates and marks the
stage done. Finished shards are skipped on rerun; ``--retry-failures`` refetches only URLs that
failed for transient reasons.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from entitynet import layout
from entitynet.config import Config, DownloadConfig
from entitynet.download.dedup import find_duplicates
from entitynet.download.plan import make_plan
from entitynet.download.shards import (
    ShardJob,
    ShardWorker,
    run_shards,
    shard_done,
    transient_failures,
)
from entitynet.rundir import Context, RunDir, StageError, atomic_path, rank_and_world, write_text_atomic
from entitynet.tables import FAILURE_SCHEMA

logger = logging.getLogger(__name__)



def prepare(config: DownloadConfig, run_dir: RunDir, cache: Path, key: str, rank: int) -> tuple[Path, int]:
    """The plan for these candidates and settings, and the number of shards.

    Rank 0 makes the plan (once; other settings clear plan and images first); the other ranks
    wait (bounded) for its stamp, and never delete anything.
    """
    plan_dir = cache / layout.PLAN
    out_dir = run_dir.path(layout.IMAGES)
    stamp = plan_dir / layout.FINGERPRINT
    if rank == 0:
        if not stamp.exists() or stamp.read_text() != key:
            import shutil

            shutil.rmtree(plan_dir, ignore_errors=True)
            shutil.rmtree(out_dir, ignore_errors=True)  # shards of another plan must not mix with these
            parts = sorted(run_dir.path(layout.CANDIDATES).glob(layout.PART_GLOB))
            make_plan(parts, plan_dir, config.urls_per_shard)
            write_text_atomic(stamp, key)
        out_dir.mkdir(parents=True, exist_ok=True)
    else:
        deadline = time.monotonic() + float(os.environ.get("ENTITYNET_RANK_WAIT", "86400"))
        while not (stamp.exists() and stamp.read_text() == key):
            if time.monotonic() > deadline:
                raise StageError(f"download: rank {rank} waited in vain for rank 0's plan in {plan_dir}")
            time.sleep(0.2)
    return plan_dir, len(list(plan_dir.glob(layout.IMAGE_SHARD_GLOB)))


def download_shards(config: DownloadConfig, run_dir: RunDir, cache: Path, key: str,
                    retry_failures: bool = False) -> dict[str, Any]:
    """This rank's shards; rank 0 also waits for the others and finishes the stage."""
    rank, world = rank_and_world()
    plan_dir, shards = prepare(config, run_dir, cache, key, rank)
    out_dir = run_dir.path(layout.IMAGES)
    mine = list(range(shards))[rank::world]
    jobs: list[ShardJob] = []
    for number in mine:
        for stale in out_dir.glob(f".{layout.shard(number)}.*.tmp"):  # this rank's leftovers of a kill -9
            stale.unlink(missing_ok=True)
        plan = plan_dir / layout.shard_images(number)
        if not shard_done(out_dir, number):
            jobs.append(ShardJob(number, plan, out_dir, config))
        elif retry_failures:
            retry = transient_failures(out_dir, number)
            if retry:
                jobs.append(ShardJob(number, plan, out_dir, config, retry))
    _run_jobs(jobs, config.processes)
    if rank != 0:
        return {}
    _wait_for_shards(out_dir, shards)
    return _finish(config, run_dir, out_dir, shards)


def _run_jobs(jobs: list[ShardJob], processes: int) -> None:
    totals: Counter[str] = Counter()
    started = time.monotonic()
    with tqdm(total=len(jobs), desc="download", unit="shard", disable=None) as progress:
        def done(stats: dict[str, Any]) -> None:
            totals.update(stored=stats["stored"], urls=stats["urls"])
            seconds = max(time.monotonic() - started, 1e-9)
            progress.set_postfix(images_per_s=f"{totals['stored'] / seconds:.1f}",
                                 success=f"{totals['stored'] / max(totals['urls'], 1):.0%}")
            progress.update(1)

        if not jobs:
            return
        if processes <= 1 or len(jobs) <= 1:
            for stats in ShardWorker(jobs[0].config).run(jobs):
                done(stats)
            return
        # One list of shards per process (shards[i::processes]); this process works the first
        # list itself, so N processes means N interpreters, not N + an idle parent. Spawned
        # workers start clean, without copies of this process's threads and locks.
        shares = [jobs[index::processes] for index in range(processes)]
        with ProcessPoolExecutor(max_workers=processes - 1, mp_context=multiprocessing.get_context("spawn")) as pool:
            remote = [pool.submit(run_shards, share) for share in shares[1:] if share]
            for stats in ShardWorker(jobs[0].config).run(shares[0]):
                done(stats)
            for finished in as_completed(remote):
                for stats in finished.result():
                    done(stats)


def _wait_for_shards(out_dir: Path, shards: int, timeout: float | None = None) -> None:
    """Rank 0 waits (bounded) for the other ranks' shards."""
    timeout = timeout if timeout is not None else float(os.environ.get("ENTITYNET_RANK_WAIT", "86400"))
    deadline = time.monotonic() + timeout
    while True:
        missing = [n for n in range(shards) if not shard_done(out_dir, n)]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise StageError(f"download: {len(missing)} shards never finished (first: {layout.shard(missing[0])}); rerun to resume")
        time.sleep(1.0)


def _finish(config: DownloadConfig, run_dir: RunDir, out_dir: Path, shards: int) -> dict[str, Any]:
    reasons: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for number in range(shards):
        stats = json.loads((out_dir / layout.shard_stats(number)).read_text())
        reasons.update(stats["reasons"])
        totals.update({k: stats[k] for k in ("urls", "stored", "failed", "bytes_fetched", "bytes_stored")})
    failures = [pq.read_table(out_dir / layout.shard_failures(n)) for n in range(shards)]
    with atomic_path(out_dir / layout.FAILURES) as temporary:
        pq.write_table(pa.concat_tables(failures) if failures else FAILURE_SCHEMA.empty_table(), temporary)
    duplicates = find_duplicates(out_dir, out_dir / layout.DUPLICATES, config.dedup_distance)
    return {"shards": shards, **dict(totals), "reasons": dict(sorted(reasons.items())), "duplicates": duplicates}


def settings(config: Config, context: Context) -> dict[str, Any]:
    return {"download": config.download}


def again(context: Context) -> bool:
    """--retry-failures: same settings, same plan: only the failed URLs are fetched again."""
    return bool(context.options.get("retry_failures"))


def make(config: Config, context: Context) -> dict[str, Any]:
    # Settings that change what is fetched or stored make a new plan (the stage's fingerprint);
    # processes and threads do not.
    return download_shards(config.download, context.run_dir, context.cache, context.fingerprint,
                           bool(context.options.get("retry_failures")))


def summary(stats: dict[str, Any]) -> str:
    if not stats:
        return "this rank's shards are done; rank 0 merges and reports"
    lines = [
        f"{stats.get('stored', 0)} images stored, {stats.get('failed', 0)} URLs failed, of {stats.get('urls', 0)} "
        f"in {stats.get('shards', 0)} shards ({stats.get('bytes_stored', 0) / 1e6:.1f} MB stored)",
    ]
    if stats.get("reasons"):
        lines.append("  failures: " + ", ".join(f"{k}: {v}" for k, v in stats["reasons"].items()))
    dup = stats.get("duplicates") or {}
    if dup:
        lines.append(f"  duplicates: {dup.get('identical', 0)} identical, {dup.get('near', 0)} near; {dup.get('unique', 0)} unique images")
    return "\n".join(lines)
