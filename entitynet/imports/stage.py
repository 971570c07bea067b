"""``entitynet import``: a released dataset or a URL list -> the run's entities, natural types,
queries and candidates, in place of kg, enrich, queries and search (``pipeline.DOORS``).

SOURCE is, in this order: a file or a glob of files (a URL list, url_list.py); a folder (a clone
of the authors' release, release.py); or a Hub dataset id such as ``lmb-freiburg/entitynet``,
whose metadata files of the chosen splits huggingface_hub downloads (its cache, its token: never
ours to store or print) before the folder is read as a local clone.

Resume: ``RUN/candidates/_fingerprint`` holds the settings the parts belong to (another source,
revision, split list or part size clears the folder); parts are written atomically with their
counts last (parts.py); the entity, natural type and query files are written whole on every run
that is not complete, atomically. RUN/stages/import.json is written last.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow.compute as pc
import pyarrow.parquet as pq

from entitynet import layout
from entitynet.imports import ImportProblem, release
from entitynet.imports.parts import Piece, Reader, write_parts
from entitynet.imports.url_list import UrlList
from entitynet.records import Entity, NaturalType, Query
from entitynet.rundir import Context, RunDir, write_text_atomic
from entitynet.tables import (
    NATURAL_TYPE_SCHEMA,
    QUERY_SCHEMA,
    RecordWriter,
    entity_writer,
    natural_type_to_row,
    query_to_row,
)

if TYPE_CHECKING:
    from entitynet.config import Config

logger = logging.getLogger(__name__)

ROWS_PER_PART = 100_000  # --rows-per-part's default
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class Origin:
    """What an import reads, and what identifies it in the run's records."""

    kind: Literal["release", "url-list"]
    name: str  # the Hub id, the folder or the file/glob as resolved
    revision: str | None  # the Hub commit, for a release fetched from the Hub
    release: release.Release | None = None
    urls: UrlList | None = None
    files: dict[str, int] = field(default_factory=dict)  # every file read -> its size: a changed file is another import
    label: str = ""  # how statistics and the dataset card name it: a Hub id, or a local name without its path


def resolve_origin(source: str, splits: list[str] | None, revision: str | None,
            url_column: str | None, caption_column: str | None) -> Origin:
    path = Path(source)
    if glob_like(source) or path.is_file():
        if splits:
            raise ImportProblem("--splits: a URL list has no splits; it names the splits of a release folder or Hub id")
        urls = UrlList.open(source, url_column, caption_column)
        files = {str(p.resolve()): p.stat().st_size for p in urls.files}
        name = str(Path(source).absolute()) if glob_like(source) else str(path.resolve())
        label = f"{Path(name).parent.name}/{Path(name).name} (local files)" if glob_like(source) else f"{path.name} (local file)"
        return Origin("url-list", name, None, urls=urls, files=files, label=label)
    if url_column or caption_column:
        raise ImportProblem("--url-column/--caption-column: only a URL list (a file) has such columns")
    if path.is_dir():
        return _release(str(path.resolve()), path, None, splits, f"{path.resolve().name} (local folder)")
    if HUB_ID.fullmatch(source) and not source.startswith("."):
        folder = fetch(source, revision, splits)
        commit = folder.name if folder.parent.name == "snapshots" else revision
        return _release(source, folder, commit, splits, source)
    raise ImportProblem(f"{source}: no such file or folder, and not a Hub dataset id (ORG/NAME)")


def glob_like(source: str) -> bool:
    return any(character in source for character in "*?[")


def _release(name: str, folder: Path, revision: str | None, splits: list[str] | None, label: str) -> Origin:
    opened = release.Release.open(folder, splits)
    used = [folder / release.QUERIES, folder / release.ENTITIES, *(p for paths in opened.files.values() for p in paths)]
    files = {str(path.relative_to(folder)): path.stat().st_size for path in used}
    return Origin("release", name, revision, release=opened, files=files, label=label)


def fetch(repo_id: str, revision: str | None, splits: list[str] | None) -> Path:
    """The release's files from the Hub (metadata of the chosen splits only), via huggingface_hub's cache."""
    from huggingface_hub import snapshot_download

    names = [release.SPLIT_ALIASES.get(split, split) for split in splits] if splits else ["*"]
    patterns = [release.QUERIES, release.ENTITIES] + [f"{release.METADATA}/{name}-*.parquet" for name in names]
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=patterns))
    except Exception as error:  # huggingface_hub raises many kinds (offline, not found, gated, network)
        message = (str(error).splitlines() or [""])[0]
        raise ImportProblem(f"{repo_id}: cannot fetch it from the Hub ({type(error).__name__}: {redacted(message)}); "
                            "a local clone works too: --from PATH") from None


def redacted(text: str) -> str:
    """``text`` without any Hugging Face token this process knows (environment or saved login)."""
    from huggingface_hub import get_token

    for secret in filter(None, [os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN"), get_token()]):
        text = text.replace(secret, "***")
    return text


def refuse_harvested(run_dir: RunDir, replaces: tuple[str, ...]) -> None:
    """An import goes into a run of its own: never over a harvest's stages (those it ``replaces``)."""
    for name in replaces:
        if run_dir.config_file(name).exists():
            raise ImportProblem(f"{run_dir.root} holds a harvest (its {name} stage ran: {run_dir.config_file(name)}); "
                                "import into a new --run")


def import_source(source: Origin, run_dir: RunDir, key: str, rows_per_part: int, force: bool) -> dict[str, Any]:
    folder = run_dir.path(layout.CANDIDATES)
    stamp = folder / layout.FINGERPRINT
    if force or not stamp.exists() or stamp.read_text() != key:
        shutil.rmtree(folder, ignore_errors=True)  # parts of another import
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".part-*.tmp"):  # a part being written when the run was killed
        stale.unlink()
    write_text_atomic(stamp, key)
    counts: Counter[str] = Counter()
    if source.release is not None:
        engines = write_release_records(source.release, run_dir, counts)
        pieces, read = release_pieces(source.release, engines)
    else:
        write_records(run_dir, [], [])  # a URL list names no entities and no queries
        pieces, read = source.urls.pieces(), source.urls.read  # type: ignore[union-attr]
    stats = write_parts(pieces, read, folder, rows_per_part)
    if stats["rows_without_url"]:
        logger.warning("import: %d rows have no URL and cannot be downloaded (counted as rows_without_url)",
                       stats["rows_without_url"])
    if stats["rows_not_http_url"]:
        logger.warning("import: %d rows have a URL that is not http(s) and are not imported (counted as rows_not_http_url)",
                       stats["rows_not_http_url"])
    return {"source": source.label, "kind": source.kind, "revision": source.revision, **stats, **record_stats(run_dir),
            **dict(sorted(counts.items()))}


def write_release_records(opened: release.Release, run_dir: RunDir, counts: Counter[str]) -> dict[str, str]:
    """The release's entities, natural types and queries as the run's; returns each query's engine."""
    index = release.EntityIndex.read(opened.folder / release.ENTITIES)
    write_records(run_dir, release.entities(opened.folder / release.ENTITIES, index, counts),
                  release.queries(opened.folder / release.QUERIES, index, counts))
    for key, value in counts.items():
        if key.startswith("texts_of_unknown_source_"):
            logger.warning("import: %d entity texts of source %r left out (the release's are %s)", value,
                           key.removeprefix("texts_of_unknown_source_"),
                           ", ".join(release.SYNONYM_SOURCES + release.DESCRIPTION_SOURCES))
    if counts["living_queries_of_other_entities"]:
        logger.warning("import: %d queries of a living query type serve entities whose natural entity is not one of "
                       "the authors' living ones (%s): their images count as other", counts["living_queries_of_other_entities"],
                       ", ".join(sorted(release.LIVING_NATURAL_ENTITIES)))
    return release.engines(opened.folder / release.QUERIES)


def write_records(run_dir: RunDir, typed: Iterable[tuple[Entity, NaturalType]], queries: Iterable[Query]) -> None:
    """The entity, natural type and query files, streamed, each atomically."""
    with entity_writer(run_dir.path(layout.ENTITIES)) as entities, \
            RecordWriter[NaturalType](run_dir.path(layout.NATURAL_TYPES), NATURAL_TYPE_SCHEMA, natural_type_to_row) as natural:
        for entity, natural_type in typed:
            entities.write(entity)
            natural.write(natural_type)
    with RecordWriter[Query](run_dir.path(layout.QUERIES), QUERY_SCHEMA, query_to_row) as writer:
        writer.write_all(queries)


def release_pieces(opened: release.Release, engines: dict[str, str]) -> tuple[list[Piece], Reader]:
    pieces = []
    for split, paths in opened.files.items():
        for path in paths:
            metadata = pq.ParquetFile(path).metadata
            pieces += [Piece(path, group, metadata.row_group(group).num_rows, split) for group in range(metadata.num_row_groups)]

    def read(piece: Piece) -> Any:
        parquet = pq.ParquetFile(piece.path)
        columns = [column for column in release.METADATA_COLUMNS if column in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(batch_size=10_000, row_groups=[piece.row_group], columns=columns):
            for row in batch.to_pylist():
                yield release.candidates(row, piece.split, engines)  # type: ignore[arg-type]

    return pieces, read


def record_stats(run_dir: RunDir) -> dict[str, Any]:
    """Counts read back from the written entities and queries."""
    entities = pq.read_table(run_dir.path(layout.ENTITIES), columns=["domain", "natural_type"])
    queries = pq.read_table(run_dir.path(layout.QUERIES), columns=["uses"])
    kinds = pc.struct_field(pc.list_flatten(queries.column("uses")), "kind") if queries.num_rows else None
    return {
        "entities": entities.num_rows,
        "entities_per_domain": _value_counts(entities.column("domain")),
        "natural_types": len(set(entities.column("natural_type").to_pylist()) - {None}),
        "queries": queries.num_rows,
        "queries_per_kind": _value_counts(kinds) if kinds is not None else {},
    }


def _value_counts(column: Any) -> dict[str, int]:
    return {item["values"]: item["counts"] for item in pc.value_counts(column).to_pylist()}


# An import has no configuration beyond what it reads, which the command's options say
# (context.options: source, splits, revision, url_column, caption_column, rows_per_part); the
# ``config`` the runner passes is not used.

def setup(config: Config | None, context: Context) -> Origin:
    """What is imported, found once (a release fetched from the Hub, a URL list opened)."""
    options = context.options
    if options.get("rows_per_part", ROWS_PER_PART) < 1:
        raise ImportProblem("--rows-per-part: must be at least 1")
    refuse_harvested(context.run_dir, context.replaces)
    return resolve_origin(options["source"], options.get("splits"), options.get("revision"), options.get("url_column"),
                          options.get("caption_column"))


def settings(config: Config | None, context: Context) -> dict[str, Any]:
    resolved: Origin = context.prepared
    options = context.options
    return {"import": {"source": resolved.name, "kind": resolved.kind, "revision": resolved.revision,
                       "splits": list(resolved.release.files) if resolved.release else None,
                       "url_column": options.get("url_column"), "caption_column": options.get("caption_column"),
                       "rows_per_part": options.get("rows_per_part", ROWS_PER_PART), "files": resolved.files}}


def make(config: Config | None, context: Context) -> dict[str, Any]:
    # the fingerprint stamps the parts: another import clears them
    return import_source(context.prepared, context.run_dir, context.fingerprint,
                         context.options.get("rows_per_part", ROWS_PER_PART), context.force)


def summary(stats: dict[str, Any]) -> str:
    splits = ", ".join(f"{name} {count}" for name, count in stats.get("rows_per_split", {}).items())
    lines = [f"{stats.get('rows', 0)} rows of {stats.get('source')} ({splits or stats.get('kind')}): "
             f"{stats.get('candidates', 0)} candidates in {stats.get('parts', 0)} parts"]
    if stats.get("rows_with_alternatives"):
        lines.append(f"  rows with alternative URLs (tried in order when the first fails): {stats['rows_with_alternatives']}")
    if stats.get("rows_without_url"):
        lines.append(f"  rows without a URL (not downloadable): {stats['rows_without_url']}")
    if stats.get("rows_not_http_url"):
        lines.append(f"  rows whose URL is not http(s) (ftp:, file:, no scheme; not imported): {stats['rows_not_http_url']}")
    if stats.get("entities"):
        domains = ", ".join(f"{k} {v}" for k, v in stats.get("entities_per_domain", {}).items())
        kinds = ", ".join(f"{k} {v}" for k, v in stats.get("queries_per_kind", {}).items())
        lines.append(f"  {stats['entities']} entities ({domains}), {stats.get('natural_types', 0)} natural types; "
                     f"{stats.get('queries', 0)} queries ({kinds})")
    lines.append("next: entitynet download --run RUN, then entitynet build --run RUN")
    return "\n".join(lines)

