"""iNaturalist's open-data metadata files, checked and turned once into a local parquet index.

The four files (taxa, observations, photos, observers ``.csv.gz``) are tab-separated with unquoted
text (taxon names hold quotes), so they are read with quoting off, every column as text, by name:
extra columns (observations' ``anomaly_score``) are accepted, a missing needed one is refused
before anything is read. DuckDB streams each gzip file out of core and writes the columns the
join needs as parquet (``COPY ... TO``), under a memory limit, spilling to disk: nothing holds a
file whole. A truncated gzip stream fails the conversion (DuckDB reports the unexpected end) and
the file's parquet is not written. Each file's parquet appears under its final name only when
complete, with a stamp of the source (size, mtime), so a run killed mid-index resumes at the
next file and a rerun with the same files reuses the index at once. A URL prefix is fetched into
the index folder first, one file at a time, each under its final name only when complete.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from entitynet.config import INATURALIST_LICENSES, InaturalistConfig
from entitynet.http import HttpClient, HttpFailure, require_ok
from entitynet.rundir import write_text_atomic
from entitynet.search.base import EngineError, engine_error

logger = logging.getLogger(__name__)

ENGINE = "inaturalist"
INDEX_VERSION = 1

# The columns each file must have (iNaturalist's Metadata/README.md), and their parquet types.
COLUMNS: dict[str, dict[str, str]] = {
    "taxa": {"taxon_id": "BIGINT", "ancestry": "VARCHAR", "rank": "VARCHAR", "name": "VARCHAR", "active": "BOOLEAN"},
    "observations": {"observation_uuid": "VARCHAR", "observer_id": "BIGINT", "taxon_id": "BIGINT",
                     "quality_grade": "VARCHAR", "observed_on": "VARCHAR"},
    "photos": {"photo_id": "BIGINT", "observation_uuid": "VARCHAR", "extension": "VARCHAR", "license": "VARCHAR",
               "width": "INTEGER", "height": "INTEGER", "position": "INTEGER"},
    "observers": {"observer_id": "BIGINT", "login": "VARCHAR", "name": "VARCHAR"},
}
FILE_NAMES = {name: f"{name}.csv.gz" for name in COLUMNS}


@dataclass(frozen=True)
class Index:
    """The prepared parquet files and what the photos' licences were."""

    folder: Path
    licenses: dict[str, int]

    def table(self, name: str) -> str:
        return str(self.folder / f"{name}.parquet")


def connect(config: InaturalistConfig, spill: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB under the configured memory limit, spilling to ``spill``."""
    spill.mkdir(parents=True, exist_ok=True)
    connection = duckdb.connect()
    connection.execute(f"SET memory_limit = '{_memory(config.memory_limit)}'")
    connection.execute(f"SET temp_directory = '{_quoted(str(spill))}'")
    connection.execute("SET preserve_insertion_order = false")  # lets COPY stream without holding order
    return connection


def prepare(config: InaturalistConfig, folder: Path, client: HttpClient | None) -> Index:
    """The index of the configured metadata in ``folder``, made or completed as needed."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = _sources(config.metadata or "", folder, client)
    for name, path in sources.items():
        check_header(name, path)
    connection = connect(config, folder / "spill")
    try:
        for name, path in sources.items():
            _convert(connection, name, path, folder)
        _count_by_taxon(connection, folder, _stamp(sources["observations"]))
        manifest = folder / "licenses.json"
        stamp = _stamp(sources["photos"])
        known = json.loads(manifest.read_text()) if manifest.exists() else {}
        if known.get("stamp") != stamp:
            rows = connection.execute(
                f"SELECT coalesce(license, ''), count(*) FROM read_parquet('{_quoted(str(folder / 'photos.parquet'))}') GROUP BY 1"
            ).fetchall()
            known = {"stamp": stamp, "licenses": {str(value): int(count) for value, count in rows}}
            write_text_atomic(manifest, json.dumps(known, sort_keys=True))
    finally:
        connection.close()
    unseen = {value: count for value, count in known["licenses"].items() if value not in INATURALIST_LICENSES}
    if unseen:
        shown = ", ".join(f"{value!r} ({count} photos)" for value, count in sorted(unseen.items()))
        raise EngineError(f"inaturalist: {sources['photos']}: licence values never seen before: {shown}; "
                          f"known: {', '.join(INATURALIST_LICENSES)}. Nothing was searched; the index in {folder} is kept")
    return Index(folder, known["licenses"])


def check_header(name: str, path: Path) -> None:
    """Refuse a file that is not gzip, is empty, or lacks a needed column, naming what is wrong."""
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
            first = handle.readline()
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise EngineError(f"inaturalist: {path}: cannot read a gzip-compressed header line: {error}") from None
    header = first.rstrip("\r\n").split("\t")
    missing = [column for column in COLUMNS[name] if column not in header]
    if not first or missing:
        raise EngineError(
            f"inaturalist: {path}: not the expected {name} header: lacks {', '.join(missing or list(COLUMNS[name]))} "
            f"(a tab-separated header naming {', '.join(COLUMNS[name])} was expected; got {first[:200]!r})"
        )


def _sources(metadata: str, folder: Path, client: HttpClient | None) -> dict[str, Path]:
    if "://" in metadata:
        if client is None:
            raise EngineError("inaturalist: a metadata URL needs an HTTP client")
        return {name: _fetch(client, metadata.rstrip("/") + "/" + file, folder / "source" / file)
                for name, file in FILE_NAMES.items()}
    base = Path(metadata)
    if not base.is_dir():
        raise EngineError(f"inaturalist: search.inaturalist.metadata: {base} is not a folder (nor an http(s) URL prefix)")
    paths = {name: base / file for name, file in FILE_NAMES.items()}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise EngineError(f"inaturalist: missing metadata file{'s' if len(missing) > 1 else ''}: {', '.join(missing)} "
                          "(iNaturalist's open data: https://inaturalist-open-data.s3.amazonaws.com/<name>.csv.gz)")
    return paths


def _fetch(client: HttpClient, url: str, target: Path) -> Path:
    """``url`` into ``target``, streamed; a file already there is complete (it is renamed in last)."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".tmp")

    def save(response: Any) -> None:
        require_ok(response)
        with partial.open("wb") as out:
            for chunk in response.iter_content(1 << 20):
                out.write(chunk)

    logger.info("inaturalist: fetching %s", url)
    try:
        client.call("GET", url, save)
    except HttpFailure as failure:
        raise engine_error(ENGINE, url, failure) from None
    os.replace(partial, target)
    return target


def _stamp(path: Path) -> str:
    status = path.stat()
    return f"v{INDEX_VERSION} {path.resolve()} {status.st_size} {status.st_mtime_ns}"


def _convert(connection: duckdb.DuckDBPyConnection, name: str, source: Path, folder: Path) -> None:
    target = folder / f"{name}.parquet"
    stamp_file = folder / f"{name}.stamp"
    stamp = _stamp(source)
    if target.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return
    partial = folder / f".{name}.parquet.tmp"
    columns = ", ".join(f'CAST("{column}" AS {kind}) AS "{column}"' for column, kind in COLUMNS[name].items())
    # quote='' and escape='': the files do not quote text, and names hold quotes of both kinds.
    reader = (f"read_csv('{_quoted(str(source))}', delim='\t', header=true, quote='', escape='', "
              "all_varchar=true, compression='gzip', null_padding=false)")
    logger.info("inaturalist: indexing %s", source)
    try:
        connection.execute(f"COPY (SELECT {columns} FROM {reader}) TO '{_quoted(str(partial))}' "
                           "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)")
    except duckdb.Error as error:
        partial.unlink(missing_ok=True)
        detail = " ".join(str(error).split())[:400]
        if isinstance(error, duckdb.OutOfMemoryException):
            hint = "raise search.inaturalist.memory_limit"
        elif "gzip" in detail.lower():
            hint = "a truncated download? fetch the file again"
        else:
            hint = "a row with a wrong number of fields or a value of the wrong type?"
        raise EngineError(f"inaturalist: {source}: cannot be read to the end ({detail}); {hint}") from None
    os.replace(partial, target)
    write_text_atomic(stamp_file, stamp)


def _count_by_taxon(connection: duckdb.DuckDBPyConnection, folder: Path, stamp: str) -> None:
    """Observations per (taxon, quality grade): the join sizes each entity's share from this small
    table instead of scanning the observations once more."""
    target, stamp_file = folder / "taxon_counts.parquet", folder / "taxon_counts.stamp"
    if target.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return
    partial = folder / ".taxon_counts.parquet.tmp"
    connection.execute(f"COPY (SELECT taxon_id, quality_grade, count(*) AS n "
                       f"FROM read_parquet('{_quoted(str(folder / 'observations.parquet'))}') GROUP BY ALL) "
                       f"TO '{_quoted(str(partial))}' (FORMAT parquet)")
    os.replace(partial, target)
    write_text_atomic(stamp_file, stamp)


def _quoted(text: str) -> str:
    return text.replace("'", "''")


def _memory(value: str) -> str:
    text = value.strip().upper().replace(" ", "")
    if not text or not text.rstrip("KMGTIB").replace(".", "").isdigit():
        raise EngineError(f"inaturalist: search.inaturalist.memory_limit: {value!r} is not a size such as 1GB")
    return text
