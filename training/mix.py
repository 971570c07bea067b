"""Replay: the training batches of a weighted mix of datasets (``TrainConfig.mix``).

Every source is streamed (``stream.StreamedRows``, one per source, each with its own rows per batch
as batch size), and each process's batch is the main dataset's share followed by each replay
source's share (``train_config.mix_rows``). The main dataset's epochs are the trainer's; a replay
source runs through epochs of its own, as a function of the batches drawn so far: batch ``b`` of
main epoch ``e`` is the process's batch ``n = e x P`` (``P`` its batches per main epoch) since the
start, and takes batch ``n mod Q`` of the source's epoch ``n // Q`` (``Q`` the source's batches per
epoch). Both are arithmetic on the position a checkpoint keeps, so a resume reads exactly the rows
an uninterrupted run would.

A DataLoader worker yields the rows of whole batches, so ``DataLoader(batch_size=batch_size)``
batches have the exact composition: the DataLoader takes the workers' batches strictly in turn,
and batch ``n`` is worker part ``n mod W`` of every source (each source's batches per epoch are a
multiple of the W workers), which is the part ``StreamedRows`` gives the same batch alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from entitynet.training.sources import Source
from entitynet.training.stream import StreamedRows

logger = logging.getLogger(__name__)
# a replay row's key that stands in for the epoch in its crop's and text's seeds (training/data.py)
DRAW = "_draw"


class MixedRows(IterableDataset):
    """The rows of one process's batches of a mix, batch by batch: ``rows_per_batch[0]`` rows of
    ``sources[0]`` (the main dataset), then ``rows_per_batch[i]`` of each replay source. Set
    ``epoch`` and ``skip_batches`` (the main epoch's batches consumed) before iterating, as for
    ``StreamedRows``."""

    def __init__(self, sources: list[Source], rows_per_batch: list[int], columns: tuple[str, ...], seed: int,
                 rank: int, world_size: int, workers: int, buffer_size: int) -> None:
        batch = sum(rows_per_batch)
        # each source's buffer in proportion to its share: the same reach in batches, the memory of one buffer
        self.streams = [StreamedRows(source, columns, rows, seed, rank, world_size, workers,
                                     max(1, buffer_size * rows // batch))
                        for source, rows in zip(sources, rows_per_batch)]
        self.batch_size, self.workers = batch, max(1, workers)
        self.epoch = 0
        self.skip_batches = 0

    @property
    def main(self) -> StreamedRows:
        return self.streams[0]

    def batches_per_epoch(self) -> int:
        """Batches per main epoch of this process's loader (equal on every process)."""
        return self.main.batches_per_epoch()

    def short_sources(self) -> list[tuple[int, Source, int]]:
        """(index, source, rows per batch) of each source with less than one batch per worker per epoch."""
        return [(index, stream.source, stream.batch_size) for index, stream in enumerate(self.streams)
                if stream.batches_per_epoch() == 0]

    def position(self, source: int, batch: int) -> tuple[int, int]:
        """(epoch, batch in that epoch) of ``source`` at the process's ``batch``-th batch since the start."""
        return divmod(batch, self.streams[source].batches_per_epoch())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        if (info.num_workers if info else 1) != self.workers:
            raise RuntimeError(f"MixedRows planned for {self.workers} workers, iterated by {info.num_workers if info else 1}")
        part = ((info.id if info else 0) + self.skip_batches) % self.workers  # as StreamedRows turns its workers
        main = self.main.part_rows(self.epoch, part, self.skip_batches)
        start = self.epoch * self.batches_per_epoch() + self.skip_batches
        replays = [self._replay(index, part, start) for index in range(1, len(self.streams))]
        try:
            while True:
                rows = [row for _, row in zip(range(self.main.batch_size), main)]
                if len(rows) < self.main.batch_size:  # the main epoch's end is the mixed epoch's
                    return
                for stream, replay in zip(self.streams[1:], replays):
                    rows.extend(next(replay) for _ in range(stream.batch_size))
                yield from rows
        finally:
            main.close()
            for replay in replays:
                replay.close()

    def _replay(self, index: int, part: int, start: int) -> Iterator[dict[str, Any]]:
        """Part ``part``'s rows of replay source ``index`` from the process's batch ``start`` on, epoch
        after epoch of that source."""
        stream = self.streams[index]
        epoch, skip = self.position(index, start)
        while True:
            # the row's own draw (source and epoch) seeds its crop and text: a small replay set runs
            # through several of its epochs in one main epoch, and each pass must look different
            for row in stream.part_rows(epoch, part, skip):
                yield {**row, DRAW: f"replay{index}.{epoch}"}
            epoch, skip = epoch + 1, 0
