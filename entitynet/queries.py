"""The queries stage: entities, natural types and attributes -> RUN/queries.parquet.

Kinds (arXiv 2505.02746, section 3):

- ``noun``: the entity's name; for living things also its aliases, common names and taxon name;
- ``wordnet-noun``: the WordNet lemmas of the entity (its own synset or the one merged into it);
- ``attrnoun``: an attribute's own query ("elephant tusks");
- ``attr``: the attribute and the natural type, "{attribute} {natural type}" ("spotted big cat"),
  one query per (attribute, natural type). As the authors do
  (``kgraph/living_generate_attribute_queries.py``), it is made per natural type and counted over
  all entities of that type: each entity with the attribute adds its use, so the number of its
  ``attr`` uses is the authors' ``count``. Where an entity's own attribute query is just the
  attribute and its name in another order ("osprey in flight"), that order is kept ("bird in
  flight"); the wording most of the type's entities give is the query's. The trainer's text mix
  fills its synonym and replace branches from the natural type, not from the entities
  (``training/text_mix.py``).

Texts are normalised (Unicode NFKC, one space, lower case) and deduplicated on (text, natural
type): the natural type travels with the query as the engines' disambiguation hint, so "jaguar"
the cat and "jaguar" the car stay two queries. Every use (kind, entity, attribute) is kept.
``query_id`` is a stable hash of text and hint. Uses are spooled to a temporary parquet file and
grouped by Arrow, so memory does not grow with the number of queries in Python objects.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from entitynet import layout
from entitynet.config import Config, QueriesConfig
from entitynet.records import Attribute, Entity, QueryKind
from entitynet.rundir import Context, RunDir, atomic_path
from entitynet.tables import QUERY_SCHEMA, read_attributes, read_entities, read_natural_types

logger = logging.getLogger(__name__)

_FLAT = pa.schema(
    [("query_id", pa.string()), ("text", pa.string()), ("natural_type", pa.string()),
     ("kind", pa.string()), ("entity_id", pa.string()), ("attribute", pa.string())]
)


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split()).lower()


def query_id(text: str, natural_type: str | None) -> str:
    return hashlib.sha256(f"{text}\x1f{natural_type or ''}".encode()).hexdigest()[:16]


def uses_of(
    entity: Entity, natural_type: str | None, attributes: list[Attribute], kinds: set[str]
) -> Iterator[tuple[QueryKind, str, str | None]]:
    """(kind, raw text, attribute) for every query one entity asks for."""
    if "noun" in kinds:
        nouns = [entity.name]
        if entity.domain == "living":
            nouns += entity.aliases + entity.common_names + ([entity.taxon_name] if entity.taxon_name else [])
        for noun in nouns:
            yield "noun", noun, None
    if "wordnet-noun" in kinds:
        for lemma in entity.lemmas:
            yield "wordnet-noun", lemma, None
    for attribute in attributes:
        if "attrnoun" in kinds:
            yield "attrnoun", attribute.query, attribute.attribute
        if "attr" in kinds and natural_type:
            # the entity's wording of "{attribute} {natural type}"; make_queries then gives every
            # entity of the type with this attribute one wording, so they share one query
            spoken = normalise(attribute.attribute)
            yield "attr", worded(spoken, attribute.query, [entity.name, *entity.aliases], natural_type), spoken


def worded(attribute: str, query: str, names: list[str], natural_type: str) -> str:
    """"{attribute} {natural type}" (the authors' form), or, when the entity's own attribute query
    is just the attribute and one of its names in another order ("{} in flight", "school of {}"),
    that order with the type in the name's place: "bird in flight" reads as a caption, "in flight
    bird" does not. Empty when there is no attribute (the stage drops it as empty)."""
    if not attribute:
        return ""
    said = normalise(query)
    for name in sorted((normalise(n) for n in names if n.strip()), key=len, reverse=True):
        pattern = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)")
        if pattern.search(said) and normalise(pattern.sub(" ", said, count=1)) == attribute:
            return normalise(pattern.sub(lambda _: natural_type, said, count=1))
    return f"{attribute} {natural_type}"


def _one_wording(uses: list[tuple[str, str]], authors: str) -> str:
    """The wording most entities of the type gave (ties: the authors' form, then the first in
    order of text), so the attribute is one query of its natural type, counted over all of them."""
    entities: defaultdict[str, set[str]] = defaultdict(set)
    for text, entity_id in uses:
        entities[text].add(entity_id)
    return min(entities, key=lambda text: (-len(entities[text]), text != authors, text))


def _attributes_by_entity(path: Path) -> Iterator[tuple[str, list[Attribute]]]:
    """Attributes grouped by entity, in file order (the enrich stage writes them entity by entity)."""
    current: str | None = None
    group: list[Attribute] = []
    for attribute in read_attributes(path):
        if attribute.entity_id != current and group:
            yield current, group  # type: ignore[misc]
            group = []
        current = attribute.entity_id
        group.append(attribute)
    if group:
        yield current, group  # type: ignore[misc]


def make_queries(config: QueriesConfig, run_dir: RunDir, output: Path, cache: Path) -> dict[str, Any]:
    kinds = set(config.kinds)
    types = {n.entity_id: (n.natural_type, n.visual) for n in read_natural_types(run_dir.path(layout.NATURAL_TYPES))}
    attributes = _attributes_by_entity(run_dir.path(layout.ATTRIBUTES))
    pending = next(attributes, None)
    dropped: Counter[str] = Counter()
    uses_per_kind: Counter[str] = Counter()
    spool = cache / "uses.parquet"
    # (attribute, natural type) -> (wording, entity) of each entity's attr use: held until every
    # entity is read, then given one wording (attributes exist for the top K entities per root only)
    attr_uses: defaultdict[tuple[str, str | None], list[tuple[str, str]]] = defaultdict(list)
    with pq.ParquetWriter(spool, _FLAT) as writer:
        rows: list[dict[str, Any]] = []

        def add(kind: str, raw: str, entity_id: str, attribute: str | None, hint: str | None) -> None:
            text = normalise(raw)
            if not text:
                dropped["empty"] += 1
            elif len(text.split()) > config.max_words:
                dropped["too_long"] += 1
            else:
                uses_per_kind[kind] += 1
                rows.append({"query_id": query_id(text, hint), "text": text, "natural_type": hint,
                             "kind": kind, "entity_id": entity_id, "attribute": attribute})

        for entity in read_entities(run_dir.path(layout.ENTITIES)):
            own: list[Attribute] = []
            if pending is not None and pending[0] == entity.id:
                own = pending[1]
                pending = next(attributes, None)
            natural_type, visual = types.get(entity.id, (None, None))
            if visual is False:  # the enrich stage's model judged it non-visual: nothing to photograph
                dropped["non_visual_entity"] += 1
                continue
            hint = normalise(natural_type) if natural_type else None
            for kind, raw, attribute in uses_of(entity, natural_type, own, kinds):
                if kind == "attr":
                    attr_uses[(attribute or "", hint)].append((normalise(raw), entity.id))
                else:
                    add(kind, raw, entity.id, attribute, hint)
            if len(rows) >= 50_000:
                writer.write_table(pa.Table.from_pylist(rows, schema=_FLAT))
                rows = []
        for (attribute, hint), uses in sorted(attr_uses.items(), key=lambda item: (item[0][0], item[0][1] or "")):
            text = _one_wording(uses, f"{attribute} {hint}")
            for _, entity_id in uses:
                add("attr", text, entity_id, attribute, hint)
        writer.write_table(pa.Table.from_pylist(rows, schema=_FLAT))
    queries = _group(pq.read_table(spool))
    with atomic_path(output) as temporary:
        pq.write_table(queries, temporary, compression="zstd")
    spool.unlink()
    per_kind = Counter()
    attr_counts: list[tuple[int, str, str]] = []  # (entities of the type with the attribute, text, type)
    for text, hint, uses in zip(queries.column("text").to_pylist(), queries.column("natural_type").to_pylist(),
                                queries.column("uses").to_pylist()):
        for kind in {use["kind"] for use in uses}:
            per_kind[kind] += 1
        entities = {use["entity_id"] for use in uses if use["kind"] == "attr"}
        if entities:
            attr_counts.append((len(entities), text, hint))
    attr_counts.sort(key=lambda item: (-item[0], item[1], item[2]))
    return {
        "queries": queries.num_rows,
        "uses": sum(uses_per_kind.values()),
        "uses_per_kind": dict(sorted(uses_per_kind.items())),
        "queries_per_kind": dict(sorted(per_kind.items())),
        "dropped": dict(sorted(dropped.items())),
        # the authors' count of an attr query: how many entities of its natural type have the attribute
        "attr_queries_most_entities": [{"text": t, "natural_type": h, "entities": n} for n, t, h in attr_counts[:5]],
    }


def _group(flat: pa.Table) -> pa.Table:
    """One row per (text, natural type), its distinct uses in a list, sorted by text."""
    flat = flat.group_by(flat.column_names, use_threads=False).aggregate([])  # distinct uses
    order = ["text", "natural_type", "kind", "entity_id", "attribute"]
    flat = flat.sort_by([(name, "ascending") for name in order]).combine_chunks()
    # Rows of one query are now adjacent: its uses are the run of equal query_ids.
    runs = pc.run_end_encode(flat.column("query_id").chunk(0))
    ends = runs.run_ends.to_numpy().astype("int32")
    starts = pa.array([0, *ends[:-1]], pa.int32()) if len(ends) else pa.array([], pa.int32())
    uses = pa.StructArray.from_arrays(
        [flat.column(name).chunk(0) for name in ("kind", "entity_id", "attribute")], fields=list(QUERY_SCHEMA.field("uses").type.value_type)
    )
    offsets = pa.array([0, *ends], pa.int32())
    return pa.Table.from_arrays(
        [runs.values, flat.column("text").chunk(0).take(starts), flat.column("natural_type").chunk(0).take(starts),
         pa.ListArray.from_arrays(offsets, uses)],
        schema=QUERY_SCHEMA,
    )


def settings(config: Config, context: Context) -> dict[str, Any]:
    return {"queries": config.queries}


def make(config: Config, context: Context) -> dict[str, Any]:
    return make_queries(config.queries, context.run_dir, context.path(layout.QUERIES), context.cache)


def summary(stats: dict[str, Any]) -> str:
    lines = [f"queries: {stats.get('queries', 0)} unique, serving {stats.get('uses', 0)} uses"]
    lines.append("  queries per kind: " + ", ".join(f"{k}: {v}" for k, v in stats.get("queries_per_kind", {}).items()))
    if stats.get("attr_queries_most_entities"):
        lines.append("  attr queries with most entities: " + ", ".join(
            f"{q['text']} ({q['entities']})" for q in stats["attr_queries_most_entities"]))
    if stats.get("dropped"):
        lines.append("  dropped: " + ", ".join(f"{k}: {v}" for k, v in stats["dropped"].items()))
    return "\n".join(lines)
