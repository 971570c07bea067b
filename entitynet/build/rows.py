"""From a run directory to dataset rows: which stored images become rows, in which split and
domain, and what each row says (alt texts, queries, entities, URLs, licence).

``prepare`` makes the decisions once, reading only small columns, and writes them beside the
lookups the examples need. This module only writes them: their file names, the splits and their
reader (``Lookups.examples``, run by the builder, possibly in several processes, turning one image
shard into examples) are the dataset's contract, in ``builders/entitynet.py``.

Rules:
- a near or identical duplicate is not a row: its URLs, queries and alt texts join its canonical
  image's row;
- an image excluded by decontamination is not a row (counted);
- an image's entities are those of the queries that found it (non-visual ones left out); an image
  with none is not a row (counted);
- splits are made by entity: each entity falls in train, validation or test by a seeded hash, and
  an image goes to its entities' split; an image whose entities fall in different splits (found
  by a query several entities share, or merged duplicates) is not a row (counted as
  ``straddles_splits``): wherever it went, one of its entities would have an image in another
  split, and a held-out entity would be seen in training or a trained one scored as unseen;
- except for images a release put in a split (``entitynet import``: their sources carry it): they
  keep it, and one found in several (merged duplicates) goes to the most held-out of them;
- an image is ``living`` when one of its entities is, else ``other``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from entitynet import layout
from entitynet.build.lineage import lineage
from entitynet.builders.entitynet import (
    PREPARED_DUPLICATES,
    PREPARED_ENTITIES,
    PREPARED_QUERIES,
    SPLITS,
    prepared_split,
    unique_values,
)
from entitynet.records import Entity, NaturalType, Query
from entitynet.tables import (
    SOURCE_TYPE,
    image_shard,
    read_duplicates,
    read_entities,
    read_natural_types,
    read_queries,
)

logger = logging.getLogger(__name__)

_HELD_OUT = {"train": 0, "validation": 1, "test": 2}


def _merged(url: str, duplicate_of: dict[str, str], seen: set[str]) -> bool:
    """Whether the stored image at ``url`` (met in plan order) is merged into another. Two chains
    of an import can reach the same link, so a URL may be stored twice; dedup then calls the later
    copy a duplicate of the URL itself, and the first copy in plan order is the canonical one
    (before, every copy was dropped)."""
    canonical = duplicate_of.get(url)
    if canonical != url:
        return canonical is not None
    if url in seen:
        return True
    seen.add(url)
    return False


def entity_split(entity_id: str, validation: float, test: float, seed: int) -> str:
    digest = hashlib.blake2b(f"{seed}|{entity_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    return "test" if u < test else "validation" if u < test + validation else "train"


def prepare(
    run_root: Path, out: Path, validation: float, test: float, seed: int, excluded: set[str], seen_test: float = 0.0
) -> dict[str, Any]:
    """Write ``out/{split}.parquet`` (shard, row, domain) and the lookups; return counts."""
    out.mkdir(parents=True, exist_ok=True)
    natural = {record.entity_id: record for record in read_natural_types(run_root / layout.NATURAL_TYPES)}
    harvested = {entity.id: entity for entity in read_entities(run_root / layout.ENTITIES)}
    entities: dict[str, dict[str, Any]] = {}
    for entity in harvested.values():
        typed = natural.get(entity.id)
        if typed is not None and typed.visual is False:
            continue
        type_aliases, type_description = _natural_type_texts(typed, harvested)
        entities[entity.id] = {"id": entity.id, "name": entity.name, "aliases": entity.aliases,
                               "description": entity.description, "natural_type": typed.natural_type if typed else None,
                               "domain": entity.domain, "common_names": entity.common_names,
                               "taxon_name": entity.taxon_name, "natural_type_aliases": type_aliases,
                               "natural_type_description": type_description, "lineage": lineage(entity)}
    queries: dict[str, Query] = {query.query_id: query for query in read_queries(run_root / layout.QUERIES)}
    images_dir = run_root / layout.IMAGES
    duplicate_of = {duplicate.url: duplicate.canonical_url for duplicate in read_duplicates(images_dir / layout.DUPLICATES)}
    shards = sorted(images_dir.glob(layout.IMAGE_SHARD_GLOB))

    extra: dict[str, list[dict[str, Any]]] = defaultdict(list)  # canonical url -> its duplicates
    copies: set[str] = set()
    for shard in shards if duplicate_of else ():
        table = image_shard(shard, ["url", "sources", "alternatives"])
        for url, sources, alternatives in zip(table.column("url").to_pylist(), table.column("sources").to_pylist(),
                                              table.column("alternatives").to_pylist()):
            if _merged(url, duplicate_of, copies):
                extra[duplicate_of[url]].append({"url": url, "sources": sources, "alternatives": alternatives or []})

    counts: Counter[str] = Counter()
    assigned: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    used_queries: set[str] = set()
    used_entities: set[str] = set()
    copies = set()
    for shard in shards:
        table = image_shard(shard, ["url", "sources", "image_id"])  # in plan order; "row": where each is in the file
        for index, url, sources, image_id in zip(table.column("row").to_pylist(), table.column("url").to_pylist(),
                                                 table.column("sources").to_pylist(), table.column("image_id").to_pylist()):
            counts["stored_images"] += 1
            if _merged(url, duplicate_of, copies):
                counts["merged_duplicates"] += 1
                continue
            if url in excluded:
                counts["excluded_near_evaluation_images"] += 1
                continue
            all_sources = sources + [s for dup in extra.get(url, []) for s in dup["sources"]]
            query_ids = {s["query_id"] for s in all_sources if s["query_id"] in queries}
            found = {use.entity_id for q in query_ids for use in queries[q].uses if use.entity_id in entities}
            if not found:
                counts["without_entity"] += 1
                continue
            released = {s["split"] for s in all_sources if s.get("split") in _HELD_OUT}
            drawn = released or {entity_split(e, validation, test, seed) for e in found}
            if len(drawn) > 1 and not released:
                counts["straddles_splits"] += 1
                continue
            split = max(drawn, key=_HELD_OUT.__getitem__)
            counts["rows_in_released_splits"] += bool(released)
            domain = "living" if any(entities[e]["domain"] == "living" for e in found) else "other"
            assigned[split].append({"shard": str(shard), "row": index, "domain": domain, "image_id": image_id,
                                    "entities": tuple(sorted(found))})
            used_queries.update(query_ids)
            used_entities.update(found)
            counts["rows"] += 1
    if not counts["rows_in_released_splits"]:  # a release's splits are its own
        assigned["train"], assigned["test_seen"] = hold_out_seen(assigned["train"], seen_test, seed)
    for split, rows in assigned.items():
        for row in rows:
            counts[f"rows_{row['domain']}_{split}"] += 1
            del row["image_id"], row["entities"]
    for split, rows in assigned.items():
        if rows:
            pq.write_table(pa.Table.from_pylist(rows, schema=_ASSIGNED), out / prepared_split(split))
        else:
            (out / prepared_split(split)).unlink(missing_ok=True)
            if split not in ("train", "test_seen") and counts["rows"] and not counts["rows_in_released_splits"]:
                logger.warning("split %s is empty: a seeded hash drew none of %d entities for it; raise "
                               "build.%s_fraction or harvest more entities", split, len(used_entities), split)
    pq.write_table(pa.Table.from_pylist([entities[e] for e in sorted(used_entities)] or [], schema=_ENTITY), out / PREPARED_ENTITIES)
    pq.write_table(pa.Table.from_pylist([{"query_id": q, "text": queries[q].text, "uses": [
        {"kind": use.kind, "entity_id": use.entity_id, "attribute": use.attribute} for use in queries[q].uses]}
        for q in sorted(used_queries)], schema=_QUERY), out / PREPARED_QUERIES)
    pq.write_table(pa.Table.from_pylist([{"canonical_url": c, "url": d["url"], "sources": d["sources"],
                                          "alternatives": d["alternatives"]}
                                         for c, dups in extra.items() for d in dups], schema=_EXTRA), out / PREPARED_DUPLICATES)
    return dict(counts)


def hold_out_seen(train: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, test_seen): about ``fraction`` of the train rows, drawn by a seeded hash of their
    image (its sha256, not its URL: the same pictures found elsewhere are held out alike), but never
    an entity's last train image, so every entity of test_seen is seen in training."""
    if fraction <= 0:
        return train, []

    def draw(row: dict[str, Any]) -> float:
        digest = hashlib.blake2b(f"{seed}|seen|{row['image_id']}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    left = Counter(entity for row in train for entity in row["entities"])
    held: set[int] = set()
    for number, row in sorted(enumerate(train), key=lambda item: draw(item[1])):
        if draw(row) >= fraction:
            break
        if all(left[entity] > 1 for entity in row["entities"]):
            held.add(number)
            left.subtract(row["entities"])
    return ([row for n, row in enumerate(train) if n not in held], [row for n, row in enumerate(train) if n in held])


def _natural_type_texts(typed: NaturalType | None, harvested: dict[str, Entity]) -> tuple[list[str], str | None]:
    """Other names and the description of an entity's natural type, when the type is itself a
    harvested entity (a WordNet hypernym such as "big cat", a Wikidata class): the trainer's
    text mix names an image by its natural type's synonyms and definition some of the time."""
    if typed is None:
        return [], None
    label = typed.natural_type
    chosen = next((c.id for c in typed.candidates if c.label == label), None)
    entity = harvested.get(chosen) if chosen else None
    if entity is None:
        return [], None
    names = [entity.name, *entity.aliases, *entity.common_names]
    return [name for name in unique_values(names) if name != label], entity.description


_ASSIGNED = pa.schema([("shard", pa.string()), ("row", pa.int64()), ("domain", pa.string())])
_ENTITY = pa.schema([("id", pa.string()), ("name", pa.string()), ("aliases", pa.list_(pa.string())),
                     ("description", pa.string()), ("natural_type", pa.string()), ("domain", pa.string()),
                     ("common_names", pa.list_(pa.string())), ("taxon_name", pa.string()),
                     ("natural_type_aliases", pa.list_(pa.string())), ("natural_type_description", pa.string()),
                     ("lineage", pa.list_(pa.struct([("rank", pa.string()), ("id", pa.string()), ("name", pa.string())])))])
_USE = pa.struct([("kind", pa.string()), ("entity_id", pa.string()), ("attribute", pa.string())])
_QUERY = pa.schema([("query_id", pa.string()), ("text", pa.string()), ("uses", pa.list_(_USE))])
_EXTRA = pa.schema([("canonical_url", pa.string()), ("url", pa.string()), ("sources", pa.list_(SOURCE_TYPE)),
                    ("alternatives", pa.list_(pa.string()))])
