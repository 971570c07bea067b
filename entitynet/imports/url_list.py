"""Plain URL lists, as img2dataset users have them, as candidates for ``entitynet download``.

A file (or a glob of files) by suffix: ``.parquet``, ``.csv``, ``.tsv``, ``.jsonl`` (one JSON
object per line) or ``.txt`` (one URL per line). The URL column is ``--url-column``, else the first
of url, URL, image_url; the caption column ``--caption-column``, else the first of text, caption,
TEXT, alt, alt_text, if there is one (the names the pool engine reads too). Each row becomes one
candidate, its caption the alt text; rows without a URL are counted, and every URL that is not an
image ends as a download failure with its reason.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as csv
import pyarrow.parquet as pq

from entitynet.imports import ImportProblem
from entitynet.imports.parts import Piece
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

    def read(self, piece: Piece) -> Iterator[list[Candidate]]:
        url, caption = self.columns(piece.path)
        for link, text in _rows(piece, url, caption):
            link = link.strip() if isinstance(link, str) else None
            text = text.strip() if isinstance(text, str) and text.strip() else None
            yield [Candidate(url=link, query_id="", engine=ENGINE, rank=UNKNOWN_RANK, text=text)] if link else []


def _column_names(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        return open_parquet(path, ()).schema_arrow.names
    if path.suffix in (".csv", ".tsv"):
        try:
            with csv.open_csv(path, parse_options=_csv_options(path)) as reader:
                return reader.schema.names
        except (pa.ArrowInvalid, OSError) as error:
            raise ImportProblem(f"{path}: not a readable {path.suffix[1:].upper()} file ({error})") from None
    with path.open(encoding="utf-8") as lines:  # JSON lines: the keys of the first object
        for line in lines:
            try:
                first = json.loads(line) if line.strip() else None
            except ValueError:
                continue
            if isinstance(first, dict):
                return list(first)
    return []


def _csv_options(path: Path) -> csv.ParseOptions:
    return csv.ParseOptions(delimiter="\t" if path.suffix == ".tsv" else ",", newlines_in_values=True)


def _rows(piece: Piece, url: str, caption: str | None) -> Iterator[tuple[object, object]]:
    path, columns = piece.path, [url] + ([caption] if caption else [])
    try:
        if path.suffix == ".parquet":
            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=10_000, row_groups=[piece.row_group], columns=columns):
                yield from _pairs(batch, url, caption)
        elif path.suffix in (".csv", ".tsv"):
            convert = csv.ConvertOptions(include_columns=columns, column_types={name: pa.string() for name in columns})
            with csv.open_csv(path, parse_options=_csv_options(path), convert_options=convert) as reader:
                for batch in reader:
                    yield from _pairs(batch, url, caption)
        elif path.suffix == ".txt":
            with path.open(encoding="utf-8") as lines:
                yield from ((line, None) for line in lines if line.strip())
        else:
            with path.open(encoding="utf-8") as lines:
                yield from (_json_row(line, url, caption) for line in lines if line.strip())
    except (pa.ArrowException, UnicodeDecodeError) as error:
        raise ImportProblem(f"{path}: cannot be read to the end ({type(error).__name__}: {error})") from None


def _pairs(batch: pa.RecordBatch, url: str, caption: str | None) -> Iterator[tuple[object, object]]:
    urls = batch.column(url).to_pylist()
    return zip(urls, batch.column(caption).to_pylist() if caption else [None] * len(urls))


def _json_row(line: str, url: str, caption: str | None) -> tuple[object, object]:
    try:
        row = json.loads(line)
    except ValueError:
        return None, None  # counted as a row without a URL
    if not isinstance(row, dict):
        return None, None
    return row.get(url), row.get(caption) if caption else None
