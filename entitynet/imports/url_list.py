"""Plain URL lists, as img2dataset users have them, as candidates for ``entitynet download``.

A file (or a glob of files) by suffix: ``.parquet``, ``.csv``, ``.tsv``, ``.jsonl`` (one JSON
object per line) or ``.txt`` (one URL per line). The URL column is ``--url-column``, else the first
of url, URL, image_url; the caption column ``--caption-column``, else the first of text, caption,
TEXT, alt, alt_text, if there is one (the names the pool engine reads too). Each row becomes one
candidate, its caption the alt text; rows without a URL are counted, and so are rows whose URL is
not http(s) (``ftp:``, ``file:``, no scheme: ``rows_not_http_url``), which are not imported; every
other URL that is not an image ends as a download failure with its reason.

A malformed file is refused with its line number before anything is written (text files are
parsed once in full when the list is opened), never read some other way: CSV/TSV go through
Python's ``csv`` reader in strict mode (a quote left open to the end of the file, text after a
closing quote, a row with another number of fields than the header), and a quoted caption that
runs over lines which read as rows of their own (a stray quote closed by another one rows later)
is refused too; pyarrow's reader took such a file as one long caption. A JSON line that is not
an object is refused.
"""

from __future__ import annotations

import csv
import glob
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from entitynet.imports import ImportProblem
from entitynet.imports.parts import NOT_HTTP_URL, Piece, Skipped
from entitynet.imports.release import UNKNOWN_RANK, open_parquet
from entitynet.records import Candidate
from entitynet.search.pool import TEXT_COLUMNS, URL_COLUMNS

SUFFIXES = (".parquet", ".csv", ".tsv", ".jsonl", ".txt")
ENGINE = "url-list"


@dataclass(frozen=True)
class UrlList:
    files: list[Path]
    url_column: str | None
    caption_column: str | None

    @classmethod
    def open(cls, source: str, url_column: str | None = None, caption_column: str | None = None) -> UrlList:
        """The files of ``source``, each checked to have the URL (and a named caption) column."""
        files = [Path(name) for name in sorted(glob.glob(source))] if glob.has_magic(source) else [Path(source)]
        if not files:
            raise ImportProblem(f"{source}: no file matches")
        for path in files:
            if path.suffix not in SUFFIXES:
                raise ImportProblem(f"{path}: a URL list is {', '.join(SUFFIXES)}; a release is a folder with images_metadata/")
            if not path.is_file():
                raise ImportProblem(f"{path}: no such file")
        listed = cls(files, url_column, caption_column)
        for path in files:
            listed.columns(path)
        for piece in listed.pieces():  # text files are parsed once before anything is written
            if piece.row_group is None:
                for _ in _rows(piece, *listed.columns(piece.path)):
                    pass
        return listed

    def columns(self, path: Path) -> tuple[str, str | None]:
        """The URL column and the caption column (None: no captions) of one file."""
        if path.suffix == ".txt":
            return "url", None
        names = _column_names(path)
        url = self.url_column or next((c for c in URL_COLUMNS if c in names), None)
        if url is None or url not in names:
            wanted = self.url_column or " or ".join(URL_COLUMNS)
            raise ImportProblem(f"{path}: no URL column {wanted} (it has {', '.join(names) or 'none'}); name it with --url-column")
        caption = self.caption_column or next((c for c in TEXT_COLUMNS if c in names), None)
        if self.caption_column and self.caption_column not in names:
            raise ImportProblem(f"{path}: no caption column {self.caption_column} (it has {', '.join(names)})")
        return url, caption

    def pieces(self) -> list[Piece]:
        """Parquet files by row group (so a rerun skips finished ones unread), others whole."""
        pieces = []
        for path in self.files:
            if path.suffix == ".parquet":
                metadata = pq.ParquetFile(path).metadata
                pieces += [Piece(path, g, metadata.row_group(g).num_rows, None) for g in range(metadata.num_row_groups)]
            else:
                pieces.append(Piece(path, None, None, None))
        return pieces

    def read(self, piece: Piece) -> Iterator[list[Candidate] | Skipped]:
        url, caption = self.columns(piece.path)
        for link, text in _rows(piece, url, caption):
            link = link.strip() if isinstance(link, str) else None
            text = text.strip() if isinstance(text, str) and text.strip() else None
            if not link:
                yield []
            elif not is_http_url(link):
                yield Skipped(NOT_HTTP_URL)
            else:
                yield [Candidate(url=link, query_id="", engine=ENGINE, rank=UNKNOWN_RANK, text=text)]


def is_http_url(link: str) -> bool:
    """An absolute http(s) URL with a host: what the downloader can fetch."""
    try:
        parts = urllib.parse.urlsplit(link)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc) and not any(c.isspace() for c in link)


def _column_names(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        return open_parquet(path, ()).schema_arrow.names
    if path.suffix in (".csv", ".tsv"):
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                return next(csv.reader(handle, delimiter=_delimiter(path), strict=True), [])
        except (csv.Error, UnicodeDecodeError) as error:
            raise ImportProblem(f"{path}: line 1: not a readable {path.suffix[1:].upper()} header ({error})") from None
    with path.open(encoding="utf-8") as lines:  # JSON lines: the keys of the first object
        for line in lines:
            try:
                first = json.loads(line) if line.strip() else None
            except ValueError:
                continue
            if isinstance(first, dict):
                return list(first)
    return []


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix == ".tsv" else ","


def _csv_rows(path: Path, url: str, caption: str | None) -> Iterator[tuple[object, object]]:
    """(url, caption) of every record, or ImportProblem naming the line where a bad record starts."""
    kind = path.suffix[1:].upper()
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=_delimiter(path), strict=True)
        header = next(reader, [])
        at, text_at = header.index(url), header.index(caption) if caption else None
        start = reader.line_num + 1  # the line the next record starts on
        try:
            for record in reader:
                if record:  # blank lines hold no record
                    if len(record) != len(header):
                        raise ImportProblem(f"{path}: line {start}: {len(record)} fields where the header has "
                                            f"{len(header)}; is a quote or {'a tab' if kind == 'TSV' else 'a comma'} "
                                            "misplaced? Fix the file and import again")
                    if reader.line_num > start:
                        _refuse_swallowed_rows(path, start, record, at, len(header))
                    yield record[at], record[text_at] if text_at is not None else None
                start = reader.line_num + 1
        except csv.Error as error:
            raise ImportProblem(f"{path}: line {start}: malformed {kind} record ({error}); a quote is probably "
                                "left open: fix the file and import again") from None


def _refuse_swallowed_rows(path: Path, start: int, record: list[str], at: int, fields: int) -> None:
    """A quoted value over several lines is legal CSV, but when one of its lines reads as a row of
    the file with an http(s) URL, a stray quote has most likely swallowed rows: refuse to guess."""
    for value in record:
        for offset, line in enumerate(value.split("\n")[1:], 1):
            inner = next(csv.reader([line], delimiter=_delimiter(path)), [])
            if len(inner) == fields and is_http_url(inner[at].strip()):
                raise ImportProblem(f"{path}: line {start}: a quoted value runs over {offset} line(s) to one that reads "
                                    f"as a row of its own ({inner[at].strip()!r}); is a quote left open? Fix the file "
                                    "and import again")


def _rows(piece: Piece, url: str, caption: str | None) -> Iterator[tuple[object, object]]:
    path, columns = piece.path, [url] + ([caption] if caption else [])
    try:
        if path.suffix == ".parquet":
            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=10_000, row_groups=[piece.row_group], columns=columns):
                yield from _pairs(batch, url, caption)
        elif path.suffix in (".csv", ".tsv"):
            yield from _csv_rows(path, url, caption)
        elif path.suffix == ".txt":
            with path.open(encoding="utf-8") as lines:
                yield from ((line, None) for line in lines if line.strip())
        else:
            with path.open(encoding="utf-8") as lines:
                yield from (_json_row(path, number, line, url, caption) for number, line in enumerate(lines, 1) if line.strip())
    except (pa.ArrowException, UnicodeDecodeError) as error:
        raise ImportProblem(f"{path}: cannot be read to the end ({type(error).__name__}: {error})") from None


def _pairs(batch: pa.RecordBatch, url: str, caption: str | None) -> Iterator[tuple[object, object]]:
    urls = batch.column(url).to_pylist()
    return zip(urls, batch.column(caption).to_pylist() if caption else [None] * len(urls))


def _json_row(path: Path, number: int, line: str, url: str, caption: str | None) -> tuple[object, object]:
    try:
        row = json.loads(line)
    except ValueError as error:
        raise ImportProblem(f"{path}: line {number}: not JSON ({error}); fix the file and import again") from None
    if not isinstance(row, dict):
        raise ImportProblem(f"{path}: line {number}: a JSON {type(row).__name__}, not an object; fix the file and import again")
    return row.get(url), row.get(caption) if caption else None
