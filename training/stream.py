"""Streamed training rows that resume exactly.

The dataset is read where it lies (local parquet or tars, or the Hub through fsspec), a unit at a
time (a parquet row group, or a whole tar); nothing is copied into a cache. Per epoch:

1. the units are put in an order drawn from (seed, epoch) and seen as one sequence of N rows;
2. process r of R takes the rows [r N/R, (r+1) N/R), data-loader worker w of W an equal, contiguous
   part of that, cut to whole batches. Every process and worker gets the same number of batches,
   so no process waits at a collective for one that ran out, the surplus of an uneven shard count
   is spread evenly (it is rows that are split, not shards), and the DataLoader hands out the
   workers' batches strictly in turn;
3. each worker passes its rows through a rolling shuffle buffer (datasets' algorithm: fill,
   shuffle, hand out half) driven by a generator of its own (seed, epoch, process, worker).

Steps 1-3 are arithmetic on positions, so a resume does not need the buffer's contents from the
checkpoint (datasets' ``IterableDataset.state_dict`` does not keep them: its resumed order
differs): the checkpoint records the epoch and the batches consumed in it; each worker replays
its shuffle over positions alone, reads back the rows its buffer held, and carries on with exactly
the samples an uninterrupted run would have seen.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import random
from collections import deque
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from entitynet.training.sources import Source, Unit, open_file, tar_rows

logger = logging.getLogger(__name__)


def _rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


class ShuffleOrder:
    """Positions [start, stop) through a rolling shuffle buffer of ``size``; plain integers, so a
    resumed run fast-forwards it without reading data."""

    def __init__(self, start: int, stop: int, size: int, rng: random.Random) -> None:
        self.next, self.stop, self.size, self.rng = start, stop, max(1, size), rng
        self.buffer: list[int] = []
        self.ready: deque[int] = deque()

    def __iter__(self) -> ShuffleOrder:
        return self

    def __next__(self) -> int:
        while not self.ready:
            if self.next >= self.stop:
                if not self.buffer:
                    raise StopIteration
                self.rng.shuffle(self.buffer)
                self.ready.extend(self.buffer)
                self.buffer = []
                break
            self.buffer.append(self.next)
            self.next += 1
            if len(self.buffer) >= self.size:
                self.rng.shuffle(self.buffer)
                handed = len(self.buffer) - self.size // 2
                self.ready.extend(self.buffer[:handed])
                self.buffer = self.buffer[handed:]
        return self.ready.popleft()

    def pending(self) -> set[int]:
        """Positions read but not yet handed out."""
        return set(self.buffer) | set(self.ready)


class StreamedRows(IterableDataset):
    """The rows of ``source`` for one process, as ``DataLoader(..., batch_size=batch_size,
    drop_last=True)`` workers read them. Set ``epoch`` and ``skip_batches`` before iterating."""

    def __init__(self, source: Source, columns: tuple[str, ...], batch_size: int, seed: int, rank: int,
                 world_size: int, workers: int, buffer_size: int) -> None:
        # a column the source lacks is left out (a plain image-text replay set has no queries nor entities):
        # the rows miss the key, which the text mix reads as empty
        self.source = source
        self.columns = tuple(c for c in columns if not source.columns or c in source.columns)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.workers, self.buffer_size = max(1, workers), buffer_size
        self.epoch = 0
        self.skip_batches = 0

    # --- the plan: pure arithmetic -----------------------------------------------------------
    def rows_per_worker(self) -> int:
        per_worker = self.source.rows // self.world_size // self.workers
        return per_worker - per_worker % self.batch_size

    def batches_per_epoch(self) -> int:
        """Batches this process's loader yields per epoch (equal on every process)."""
        return self.workers * (self.rows_per_worker() // self.batch_size)

    def units(self, epoch: int) -> list[Unit]:
        order = list(self.source.units)
        _rng(self.seed, epoch, "units").shuffle(order)
        return order

    def worker_range(self, worker: int) -> tuple[int, int]:
        per_process = self.source.rows // self.world_size
        start = self.rank * per_process + worker * (per_process // self.workers)
        return start, start + self.rows_per_worker()

    def worker_skip_rows(self, worker: int, skip_batches: int) -> int:
        """Rows the worker handed out in the first ``skip_batches`` batches of the epoch (its batches
        are every ``workers``-th of the loader's)."""
        consumed = max(0, skip_batches - worker + self.workers - 1) // self.workers
        return consumed * self.batch_size

    # --- reading ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        if (info.num_workers if info else 1) != self.workers:
            raise RuntimeError(f"StreamedRows planned for {self.workers} workers, iterated by {info.num_workers if info else 1}")
        # The DataLoader takes batches from its workers in turn, starting with worker 0; resumed
        # after ``skip_batches``, the next batch is the turn of part (skip_batches mod workers),
        # so the workers take the parts rotated by that much.
        yield from self.part_rows(self.epoch, ((info.id if info else 0) + self.skip_batches) % self.workers,
                                  self.skip_batches)

    def part_rows(self, epoch: int, worker: int, skip_batches: int) -> Iterator[dict[str, Any]]:
        """The rows of part ``worker`` of ``epoch`` that are left after the epoch's first
        ``skip_batches`` batches (a part's batches are every ``workers``-th of the epoch's)."""
        start, stop = self.worker_range(worker)
        order = ShuffleOrder(start, stop, self.buffer_size // self.workers, _rng(self.seed, epoch, self.rank, worker))
        for _ in range(self.worker_skip_rows(worker, skip_batches)):
            next(order)
        live, resume_at = order.pending(), order.next
        reader = self._read_from(min(live) if live else resume_at, self.units(epoch))
        held: dict[int, dict[str, Any]] = {}
        try:
            for wanted in order:
                while wanted not in held:
                    position, row = next(reader)
                    if position >= resume_at or position in live:  # earlier ones were handed out before a resume
                        held[position] = row
                yield held.pop(wanted)
        finally:
            reader.close()

    def _read_from(self, position: int, units: list[Unit]) -> Iterator[tuple[int, dict[str, Any]]]:
        """(position, row) from ``position`` on, over the epoch's sequence of units."""
        starts = [0]
        for unit in units:
            starts.append(starts[-1] + unit.rows)
        index = bisect.bisect_right(starts, position) - 1
        handles: dict[str, Any] = {}
        try:
            while index < len(units):
                unit, first = units[index], starts[index]
                skip = max(0, position - first)
                for offset, row in enumerate(self._unit_rows(unit, skip, handles), start=skip):
                    yield first + offset, row
                index += 1
        finally:
            for handle in handles.values():
                handle.close()

    def _unit_rows(self, unit: Unit, skip: int, handles: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if unit.index < 0:  # a tar: read through, skipping what is before ``skip``
            with open_file(unit.file) as handle:
                for number, row in enumerate(tar_rows(handle, unit.file)):
                    if number >= skip:
                        yield row
            return
        yield from parquet_rows(unit, list(self.columns), handles)[skip:]


def parquet_rows(unit: Unit, columns: list[str], handles: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a parquet row group; ``handles`` keeps the current file open between calls
    (a file's row groups are mostly read one after another)."""

    if unit.file not in handles:
        for old in list(handles):
            handles.pop(old).close()
        handles[unit.file] = _OpenParquet(open_file(unit.file))
    return handles[unit.file].file.read_row_group(unit.index, columns=columns).to_pylist()


class _OpenParquet:
    def __init__(self, handle: Any) -> None:
        import pyarrow.parquet as pq

        self.handle, self.file = handle, pq.ParquetFile(handle)

    def close(self) -> None:
        self.handle.close()


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def sample_rows(source: Source, count: int, seed: int, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """A seeded sample of about ``count`` rows spread over the source (a few rows from each of many
    units chosen at random: rows within a unit are mostly of the same few entities), read without
    holding the whole split."""
    units = list(source.units)
    rng = _rng(seed, "sample")
    rng.shuffle(units)
    per_unit = max(8, -(-count // max(1, len(units))))
    chosen: list[dict[str, Any]] = []
    handles: dict[str, Any] = {}
    try:
        for unit in units:
            if len(chosen) >= count:
                break
            take = sorted(rng.sample(range(unit.rows), min(per_unit, unit.rows, count - len(chosen))))
            if unit.index < 0:
                with open_file(unit.file) as handle:
                    rows = list(tar_rows(handle, unit.file))
            else:
                rows = parquet_rows(unit, list(columns), handles)
            chosen.extend(rows[i] for i in take if i < len(rows))
    finally:
        for handle in handles.values():
            handle.close()
    return chosen
