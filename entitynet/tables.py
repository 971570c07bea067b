"""Records as parquet: explicit Arrow schemas, streaming atomic writers, readers.

Writers take records as they come and flush row groups, so a stage's memory does not grow with
the number of records it writes; the file appears under its final name only when complete.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Generic, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from entitynet.records import (
    Ancestor,
    Attribute,
    Candidate,
    Duplicate,
    Entity,
    Failure,
    Finding,
    NaturalType,
    PlannedUrl,
    Query,
    QueryUse,
    StoredImage,
    VisualFact,
)
from entitynet.rundir import atomic_path

R = TypeVar("R")

ANCESTOR_TYPE = pa.struct(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("sitelinks", pa.int32()),
        pa.field("hops", pa.int8(), nullable=False),
        pa.field("rank", pa.string()),
    ]
)

VISUAL_FACT_TYPE = pa.struct(
    [
        pa.field("property", pa.string(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("label", pa.string()),
    ]
)

ENTITY_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("root", pa.string(), nullable=False),
        pa.field("aliases", pa.list_(pa.string())),
        pa.field("description", pa.string()),
        pa.field("natural_type", pa.string()),
        pa.field("sitelinks", pa.int32()),
        pa.field("taxon_name", pa.string()),
        pa.field("taxon_rank", pa.string()),
        pa.field("inaturalist_id", pa.string()),
        pa.field("common_names", pa.list_(pa.string())),
        pa.field("image", pa.string()),
        pa.field("ancestors", pa.list_(ANCESTOR_TYPE)),
        pa.field("same_as", pa.list_(pa.string())),
        pa.field("lemmas", pa.list_(pa.string())),
        pa.field("visual_facts", pa.list_(VISUAL_FACT_TYPE)),
    ],
    metadata={"entitynet.record": "Entity"},
)


_ENTITY_COLUMNS = [f.name for f in dataclasses.fields(Entity) if f.name not in ("ancestors", "visual_facts")]


def entity_to_row(entity: Entity) -> dict[str, Any]:
    # Explicit rather than dataclasses.asdict, whose deep copies were a third of the harvest's CPU.
    row = {name: getattr(entity, name) for name in _ENTITY_COLUMNS}
    row["ancestors"] = _ancestor_rows(entity.ancestors)
    row["visual_facts"] = [{"property": f.property, "id": f.id, "label": f.label} for f in entity.visual_facts]
    return row


def entity_from_row(row: dict[str, Any]) -> Entity:
    ancestors = [Ancestor(**item) for item in row.pop("ancestors") or []]
    visual_facts = [VisualFact(**item) for item in row.pop("visual_facts") or []]
    return Entity(ancestors=ancestors, visual_facts=visual_facts, **row)


class RecordWriter(Generic[R]):
    """Write records to one parquet file, atomically, ``rows_per_group`` at a time."""

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        to_row: Callable[[R], dict[str, Any]],
        rows_per_group: int = 10_000,
        compression: str = "zstd",
    ) -> None:
        self.path = path
        self.schema = schema
        self.to_row = to_row
        self.rows_per_group = rows_per_group
        self.compression = compression
        self.count = 0
        self._pending: list[dict[str, Any]] = []
        self._stack = ExitStack()
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> RecordWriter[R]:
        temporary = self._stack.enter_context(atomic_path(self.path))
        self._writer = self._stack.enter_context(pq.ParquetWriter(temporary, self.schema, compression=self.compression))
        return self

    def write(self, record: R) -> None:
        self._pending.append(self.to_row(record))
        self.count += 1
        if len(self._pending) >= self.rows_per_group:
            self._flush()

    def write_all(self, records: Iterable[R]) -> None:
        for record in records:
            self.write(record)

    def write_table(self, table: pa.Table) -> None:
        """Rows that are already a table of this schema (a copy of another file's rows)."""
        self._flush()
        self.count += table.num_rows
        if self._writer is not None:
            self._writer.write_table(table.cast(self.schema))

    def abort(self) -> None:
        """Close without keeping anything: the file never appears (an interrupted shard)."""
        error = RuntimeError(f"{self.path.name}: abandoned")
        self._stack.__exit__(type(error), error, None)

    def _flush(self) -> None:
        if self._pending and self._writer is not None:
            self._writer.write_table(pa.Table.from_pylist(self._pending, schema=self.schema))
            self._pending = []

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self._flush()
        # Closing the writer, then the atomic path: renamed into place only without an error.
        self._stack.__exit__(kind, value, traceback)


NATURAL_TYPE_SCHEMA = pa.schema(
    [
        pa.field("entity_id", pa.string(), nullable=False),
        pa.field("natural_type", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("chooser", pa.string(), nullable=False),
        pa.field("candidates", pa.list_(ANCESTOR_TYPE)),
        pa.field("visual", pa.bool_()),
    ],
    metadata={"entitynet.record": "NaturalType"},
)

ATTRIBUTE_SCHEMA = pa.schema(
    [
        pa.field("entity_id", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("attribute", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
    ],
    metadata={"entitynet.record": "Attribute"},
)

QUERY_USE_TYPE = pa.struct(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("entity_id", pa.string(), nullable=False),
        pa.field("attribute", pa.string()),
    ]
)

QUERY_SCHEMA = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("natural_type", pa.string()),
        pa.field("uses", pa.list_(QUERY_USE_TYPE)),
    ],
    metadata={"entitynet.record": "Query"},
)


CANDIDATE_SCHEMA = pa.schema(
    [
        pa.field("url", pa.string(), nullable=False),
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("engine", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("page_url", pa.string()),
        pa.field("text", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("mime", pa.string()),
        pa.field("license", pa.string()),
        pa.field("license_url", pa.string()),
        pa.field("attribution", pa.string()),
        pa.field("taxon_id", pa.string()),
        pa.field("taxon_name", pa.string()),
        pa.field("observed_on", pa.string()),
        pa.field("alternatives", pa.list_(pa.string())),
        pa.field("split", pa.string()),
    ],
    metadata={"entitynet.record": "Candidate"},
)


def candidate_to_row(record: Candidate) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in CANDIDATE_SCHEMA.names}
    row["alternatives"] = list(record.alternatives)
    return row


def _ancestor_rows(ancestors: list[Ancestor]) -> list[dict[str, Any]]:
    return [{"id": a.id, "label": a.label, "sitelinks": a.sitelinks, "hops": a.hops, "rank": a.rank} for a in ancestors]


def natural_type_to_row(record: NaturalType) -> dict[str, Any]:
    return {
        "entity_id": record.entity_id,
        "natural_type": record.natural_type,
        "reason": record.reason,
        "chooser": record.chooser,
        "candidates": _ancestor_rows(record.candidates),
        "visual": record.visual,
    }


def natural_type_from_row(row: dict[str, Any]) -> NaturalType:
    candidates = [Ancestor(**item) for item in row.pop("candidates") or []]
    return NaturalType(candidates=candidates, **row)


def attribute_to_row(record: Attribute) -> dict[str, Any]:
    return {name: getattr(record, name) for name in ATTRIBUTE_SCHEMA.names}


def query_to_row(record: Query) -> dict[str, Any]:
    uses = [{"kind": u.kind, "entity_id": u.entity_id, "attribute": u.attribute} for u in record.uses]
    return {"query_id": record.query_id, "text": record.text, "natural_type": record.natural_type, "uses": uses}


def query_from_row(row: dict[str, Any]) -> Query:
    return Query(row["query_id"], row["text"], row["natural_type"], [QueryUse(**use) for use in row["uses"] or []])


def read_rows(path: Path, batch_size: int = 10_000) -> Iterator[dict[str, Any]]:
    """Stream the rows of a parquet file as dicts."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
        yield from batch.to_pylist()


def entity_writer(path: Path, rows_per_group: int = 10_000) -> RecordWriter[Entity]:
    return RecordWriter(path, ENTITY_SCHEMA, entity_to_row, rows_per_group)


def read_entities(path: Path, batch_size: int = 10_000) -> Iterator[Entity]:
    """Stream the entities of a parquet file, one row group batch at a time."""
    return map(entity_from_row, read_rows(path, batch_size))


def read_records(path: Path, from_row: Callable[[dict[str, Any]], R], batch_size: int = 10_000) -> Iterator[R]:
    """Stream the records of a parquet file."""
    return map(from_row, read_rows(path, batch_size))


def read_natural_types(path: Path) -> Iterator[NaturalType]:
    return read_records(path, natural_type_from_row)


def read_attributes(path: Path) -> Iterator[Attribute]:
    return read_records(path, lambda row: Attribute(**row))


def read_queries(path: Path) -> Iterator[Query]:
    return read_records(path, query_from_row)


# The download stage: the plan, stored images, failures, duplicates -------------------------------

SOURCE_TYPE = pa.struct([
    ("query_id", pa.string()), ("engine", pa.string()), ("rank", pa.int32()), ("text", pa.string()),
    ("page_url", pa.string()), ("license", pa.string()), ("license_url", pa.string()), ("attribution", pa.string()),
    ("split", pa.string()),
])
SOURCE_FIELDS = [field.name for field in SOURCE_TYPE]

PLAN_SCHEMA = pa.schema([("url", pa.string()), ("sources", pa.list_(SOURCE_TYPE)), ("alternatives", pa.list_(pa.string())),
                         ("tails", pa.list_(pa.list_(pa.string()))), ("tail_of", pa.list_(pa.int32()))],
                        metadata={"entitynet.record": "PlannedUrl"})

IMAGE_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("image", pa.binary()), ("width", pa.int32()), ("height", pa.int32()),
    ("original_width", pa.int32()), ("original_height", pa.int32()), ("dhash", pa.uint64()),
    ("source_format", pa.string()), ("url", pa.string()), ("final_url", pa.string()),
    ("sources", pa.list_(SOURCE_TYPE)), ("position", pa.int32()), ("alternatives", pa.list_(pa.string())),
], metadata={"entitynet.record": "StoredImage"})

FAILURE_SCHEMA = pa.schema([
    ("url", pa.string()), ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
    ("status", pa.int32()), ("attempts", pa.int32()), ("shard", pa.int32()), ("transient", pa.bool_()),
], metadata={"entitynet.record": "Failure"})

DUPLICATE_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("url", pa.string()), ("canonical_id", pa.string()),
    ("canonical_url", pa.string()), ("kind", pa.string()), ("distance", pa.int8()),
], metadata={"entitynet.record": "Duplicate"})


def _source_rows(sources: list[Finding]) -> list[dict[str, Any]]:
    return [{name: getattr(source, name) for name in SOURCE_FIELDS} for source in sources]


def _sources(rows: list[dict[str, Any]] | None) -> list[Finding]:
    return [Finding(**row) for row in rows or []]


def plan_from_row(row: dict[str, Any]) -> PlannedUrl:
    # plans before imports had no alternatives; plans before per-row chains, one tail for all sources
    tails = row.get("tails") or [row.get("alternatives") or []]
    return PlannedUrl(row["url"], _sources(row["sources"]), tails, row.get("tail_of") or [])


def image_to_row(record: StoredImage) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in IMAGE_SCHEMA.names}
    row["sources"] = _source_rows(record.sources)
    return row


def image_from_row(row: dict[str, Any]) -> StoredImage:
    return StoredImage(**{**row, "alternatives": row["alternatives"] or [], "sources": _sources(row["sources"])})


def failure_to_row(record: Failure) -> dict[str, Any]:
    return {name: getattr(record, name) for name in FAILURE_SCHEMA.names}


def duplicate_to_row(record: Duplicate) -> dict[str, Any]:
    return {name: getattr(record, name) for name in DUPLICATE_SCHEMA.names}


def read_plan(path: Path) -> Iterator[PlannedUrl]:
    return read_records(path, plan_from_row)


def read_duplicates(path: Path) -> Iterator[Duplicate]:
    return read_records(path, lambda row: Duplicate(**row))


def image_shard(path: Path, columns: list[str]) -> pa.Table:
    """Some columns of one image shard, in its plan's order, with ``row``: each row's index in
    the file (rows are written as downloads finish)."""
    table = pq.read_table(path, columns=[column for column in columns if column != "position"] + ["position"])
    table = table.append_column("row", pa.array(range(table.num_rows), pa.int64()))
    return table.take(pc.sort_indices(table, [("position", "ascending")])).select([*columns, "row"])
