"""A source's rows cut into candidate parts that a killed import resumes without duplicates.

Rows are numbered across the whole source in order (files, row groups, rows); part k holds the
candidates of rows [k R, (k+1) R) for R = ``rows_per_part``, so the same source always gives the
same parts. A part is written atomically to RUN/candidates/part-NNNNN.parquet, then its counts to
part-NNNNN.json, its completion mark. A rerun passes the rows of complete parts by; a parquet row
group whose rows all lie in complete parts is not even read.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from entitynet import layout
from entitynet.records import Candidate
from entitynet.rundir import write_text_atomic
from entitynet.tables import CANDIDATE_SCHEMA, RecordWriter, candidate_to_row


@dataclass(frozen=True)
class Piece:
    """A unit the source is read in: a parquet row group, or a whole text file."""

    path: Path
    row_group: int | None  # None: the whole file
    rows: int | None  # known from a parquet footer; None: known only by reading
    split: str | None  # a release's split name, for the counts


@dataclass(frozen=True)
class Skipped:
    """A source row that is not imported, and the count it goes to (a key of ``COUNTS``)."""

    reason: str


NOT_HTTP_URL = "rows_not_http_url"  # a URL the downloader cannot fetch: ftp:, file:, no scheme
# a piece's rows, each as its candidates ([]: no URL) or why it was skipped
Reader = Callable[[Piece], Iterable[list[Candidate] | Skipped]]


class PartWriter:
    """Takes rows in source order, one list of candidates each, and writes the parts not yet complete."""

    def __init__(self, folder: Path, rows_per_part: int) -> None:
        self.folder = folder
        self.size = rows_per_part
        self.row = 0  # the number of the next row
        self.part: int | None = None  # the part rows are going to
        self.writer: RecordWriter[Candidate] | None = None  # None while passing a complete part by
        self.counts: Counter[str] = Counter()
        self.splits: Counter[str] = Counter()
        self.written = 0

    def complete(self, part: int) -> bool:
        return (self.folder / layout.part_stats(part)).exists() and (self.folder / layout.part(part)).exists()

    def covered(self, rows: int) -> bool:
        """Whether the next ``rows`` rows all belong to complete parts (and need not be read)."""
        first, last = self.row // self.size, (self.row + rows - 1) // self.size
        return all(self.complete(part) for part in range(first, last + 1))

    def skip(self, rows: int) -> None:
        """Pass by ``rows`` rows of complete parts without reading them."""
        if rows > 0:
            self._enter((self.row + rows - 1) // self.size)
            self.row += rows

    def add(self, split: str | None, candidates: list[Candidate] | Skipped) -> None:
        """One source row, as its candidates ([]: a row without a URL) or why it is skipped."""
        self._enter(self.row // self.size)
        self.row += 1
        if self.writer is None:
            return
        counts = self.counts  # plain additions: this runs once per source row
        counts["rows"] += 1
        if isinstance(candidates, Skipped):
            counts[candidates.reason] += 1
            return
        self.writer.write_all(candidates)
        counts["candidates"] += len(candidates)
        if not candidates:
            counts["rows_without_url"] += 1
        elif candidates[0].alternatives:
            counts["rows_with_alternatives"] += 1
        if split:
            self.splits[split] += 1

    def _enter(self, part: int) -> None:
        if part == self.part:
            return
        self._finish()
        self.part = part
        if not self.complete(part):
            self.writer = RecordWriter[Candidate](self.folder / layout.part(part), CANDIDATE_SCHEMA, candidate_to_row)
            self.writer.__enter__()

    def _finish(self) -> None:
        """The open part's file, then its counts: the mark that it is complete."""
        if self.writer is None or self.part is None:
            return
        self.writer.__exit__(None, None, None)
        self.writer = None
        counts = {**{key: self.counts[key] for key in COUNTS}, "splits": dict(sorted(self.splits.items()))}
        write_text_atomic(self.folder / layout.part_stats(self.part), json.dumps(counts) + "\n")
        self.counts, self.splits = Counter(), Counter()
        self.written += 1

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self._finish()
        elif self.writer is not None:
            self.writer.abort()  # an interrupted part leaves no file behind

    @property
    def parts(self) -> int:
        return (self.row + self.size - 1) // self.size


COUNTS = ("rows", "candidates", "rows_without_url", NOT_HTTP_URL, "rows_with_alternatives")


def write_parts(pieces: list[Piece], read: Reader, folder: Path, rows_per_part: int) -> dict[str, Any]:
    """Every piece's rows into parts of ``folder``; the totals over all parts, reused ones too."""
    with PartWriter(folder, rows_per_part) as writer:
        for piece in tqdm(pieces, desc="import", unit="piece", disable=None, leave=False):
            if piece.rows is not None and writer.covered(piece.rows):
                writer.skip(piece.rows)
                continue
            for candidates in read(piece):
                writer.add(piece.split, candidates)
    return totals(folder, writer.parts, writer.written)


def totals(folder: Path, parts: int, written: int) -> dict[str, Any]:
    sums: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    for part in range(parts):
        counts = json.loads((folder / layout.part_stats(part)).read_text())
        sums.update({key: counts[key] for key in COUNTS})
        splits.update(counts["splits"])
    return {**{key: sums[key] for key in COUNTS}, "rows_per_split": dict(splits), "parts": parts,
            "parts_written": written, "parts_reused": parts - written}

