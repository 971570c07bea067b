"""The authors' released EntityNet (``lmb-freiburg/entitynet``, or a clone of it) as our records.

The layout, as the authors' own code reads it::

    images_metadata/{split}-NNNNN-of-MMMMM.parquet  one row per deduplicated image: key, qh (query
                                                    hashes), texts (alt texts), images_link (URLs of
                                                    its duplicates, tried in order), images_contextlink,
                                                    images_width, images_height (parallel to the links)
    entitynet-queries.parquet    query_hash, query, query_type, entity, attribute, api
    entitynet-entities.parquet   entity, entity_name, textvalues + textsources (parallel lists),
                                 naturalentity (itself an entity id)

What becomes what (docs/ARCHITECTURE.md, "The import door"):

- an entity keeps its id; its texts go to our fields by source (``name``/``aliases`` -> name and
  aliases, ``common_names``, ``taxon_names`` -> taxon name (more than one: the rest are aliases),
  ``description``, else ``type_description`` -> description); its natural type is the name of
  its natural entity, which is the type's only candidate, so the build gives the type's other
  names and description as it does for harvested runs; ``living`` when the natural entity is one
  of the authors' living ones (``NATURALENTITY_LIVING`` in their text loader);
- a query keeps its hash as id and its text; its kind and attribute come from ``query_type``;
- a metadata row becomes candidates that share its first link as URL and its other links as
  alternatives, and carry its split.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from entitynet.imports import ImportProblem
from entitynet.records import Ancestor, Candidate, Entity, NaturalType, Query, QueryKind, QueryUse

METADATA = "images_metadata"
QUERIES = "entitynet-queries.parquet"
ENTITIES = "entitynet-entities.parquet"
# The release's split names, in the order they are imported, and the dataset split each fills.
# minitrain is the authors' smaller training set: its images are training images.
SPLITS = {"train": "train", "val": "validation", "test": "test", "minitrain": "train"}
SPLIT_ALIASES = {"validation": "val"}
# The authors' text loader calls an entity living when its natural entity is one of these.
LIVING_NATURAL_ENTITIES = frozenset({"Q729", "Q756", "wordnet:animal.n.01", "wordnet:plant.n.02"})
# query_type prefixes (wd-noun-living, wd-noun-world-cartoon, wordnet-noun-living, wd-attr-world, ...)
KINDS: tuple[tuple[str, QueryKind], ...] = (
    ("wd-attrnoun-", "attrnoun"), ("wd-attr-", "attr"), ("wd-noun-", "noun"), ("wordnet-noun-", "wordnet-noun"),
)
SYNONYM_SOURCES = ("name", "aliases", "common_names", "taxon_names")
DESCRIPTION_SOURCES = ("description", "type_description")
REQUIRED = {
    METADATA: ("qh", "texts", "images_link"),
    QUERIES: ("query_hash", "query", "query_type", "entity"),
    ENTITIES: ("entity", "entity_name", "textvalues", "textsources", "naturalentity"),
}
METADATA_COLUMNS = ["qh", "texts", "images_link", "images_contextlink", "images_width", "images_height"]
_SPLIT_FILE = re.compile(r"(?P<split>[a-z]+)-\d+-of-\d+\.parquet")
UNKNOWN_RANK = -1  # the release keeps no search rank


def open_parquet(path: Path, required: tuple[str, ...]) -> pq.ParquetFile:
    """The file's reader, once it is known to be parquet with the ``required`` columns."""
    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ... for a broken file
        raise ImportProblem(f"{path}: not a readable parquet file ({type(error).__name__}: {error})") from None
    missing = [column for column in required if column not in parquet.schema_arrow.names]
    if missing:
        raise ImportProblem(f"{path}: no column {', '.join(missing)} (it has {', '.join(parquet.schema_arrow.names)})")
    return parquet


@dataclass(frozen=True)
class Release:
    """A release's folder and the metadata files of the chosen splits (release names), in order."""

    folder: Path
    files: dict[str, list[Path]]

    @classmethod
    def open(cls, folder: Path, splits: list[str] | None = None) -> Release:
        """Check the layout, every file's columns and the asked splits before anything is written."""
        metadata = folder / METADATA
        if not metadata.is_dir():
            raise ImportProblem(f"{folder} has no {METADATA}/ folder: it is not the authors' release layout "
                                "(lmb-freiburg/entitynet); a URL list is given as a file")
        found: dict[str, list[Path]] = defaultdict(list)
        for path in sorted(metadata.glob("*.parquet")):
            match = _SPLIT_FILE.fullmatch(path.name)
            if match:
                found[match["split"]].append(path)
        wanted = [SPLIT_ALIASES.get(name, name) for name in splits] if splits else [s for s in SPLITS if s in found]
        if not wanted:
            raise ImportProblem(f"{metadata} holds no {{split}}-NNNNN-of-MMMMM.parquet files")
        for split in wanted:
            if split not in found:
                has = ", ".join(sorted(found)) or "none"
                raise ImportProblem(f"split {split!r}: no {METADATA}/{split}-NNNNN-of-MMMMM.parquet in {folder} (it has: {has})")
            if split not in SPLITS:
                raise ImportProblem(f"split {split!r} of {folder} is not one of the release's ({', '.join(SPLITS)})")
        for name in (QUERIES, ENTITIES):
            if not (folder / name).is_file():
                raise ImportProblem(f"{folder} has no {name}: the release's entities and queries come with its images")
            open_parquet(folder / name, REQUIRED[name])
        types = {kind for batch in pq.ParquetFile(folder / QUERIES).iter_batches(columns=["query_type"])
                 for kind in batch.column(0).unique().to_pylist()}
        for query_type in sorted(types, key=str):
            kind_of(query_type)  # every kind is known before anything is written
        chosen = {split: found[split] for split in dict.fromkeys(wanted)}
        for paths in chosen.values():
            for path in paths:
                open_parquet(path, REQUIRED[METADATA])
        return cls(folder, chosen)


def _unique(values: Any) -> list[str]:
    return list(dict.fromkeys(value for value in values or () if value))


def _batches(path: Path, columns: list[str], batch_size: int = 10_000) -> Iterator[dict[str, Any]]:
    parquet = pq.ParquetFile(path)
    present = [column for column in columns if column in parquet.schema_arrow.names]
    for batch in parquet.iter_batches(batch_size=batch_size, columns=present):
        yield from batch.to_pylist()


@dataclass
class EntityIndex:
    """What the queries need of the entities: each one's natural type name, and which are living."""

    natural_type: dict[str, str | None]  # entity id -> the name of its natural entity
    living: set[str]

    @classmethod
    def read(cls, path: Path) -> EntityIndex:
        names, natural = {}, {}
        for row in _batches(path, ["entity", "entity_name", "naturalentity"]):
            names[row["entity"]] = row["entity_name"]
            natural[row["entity"]] = row["naturalentity"]
        return cls({entity: names.get(of) if of else None for entity, of in natural.items()},
                   {entity for entity, of in natural.items() if of in LIVING_NATURAL_ENTITIES})


def entities(path: Path, index: EntityIndex, counts: Counter[str]) -> Iterator[tuple[Entity, NaturalType]]:
    """Each released entity as our Entity and its NaturalType (streamed)."""
    columns = list(REQUIRED[ENTITIES])
    for row in _batches(path, columns):
        texts: dict[str, list[str]] = defaultdict(list)
        for value, source in zip(row["textvalues"] or [], row["textsources"] or []):
            if not value:
                continue
            if source in SYNONYM_SOURCES or source in DESCRIPTION_SOURCES:
                texts[source].append(value)
            else:
                counts[f"texts_of_unknown_source_{source}"] += 1  # the authors' loader knows no other sources
        name = row["entity_name"] or next(iter(texts["name"] + texts["aliases"]), None) or row["entity"]
        taxa = _unique(texts["taxon_names"])
        natural_id, natural_name = row["naturalentity"], index.natural_type.get(row["entity"])
        if natural_name is None:
            counts["entities_whose_natural_entity_is_unknown"] += 1
        entity = Entity(
            id=row["entity"], source="wordnet" if row["entity"].startswith("wordnet:") else "wikidata", name=name,
            domain="living" if natural_id in LIVING_NATURAL_ENTITIES else "other",
            root=natural_id or "",  # the release names no harvest root; its natural entity is the nearest class
            aliases=[alias for alias in _unique(texts["name"] + texts["aliases"] + taxa[1:]) if alias != name],
            description=next(iter(texts["description"] + texts["type_description"]), None),
            natural_type=natural_name, taxon_name=taxa[0] if taxa else None,
            common_names=_unique(texts["common_names"]),
        )
        counts["living_entities" if entity.domain == "living" else "other_entities"] += 1
        candidates = [Ancestor(natural_id, natural_name, None, 1)] if natural_id and natural_name else []
        yield entity, NaturalType(entity.id, natural_name, "released", "import", candidates)


def kind_of(query_type: str | None) -> QueryKind:
    for prefix, kind in KINDS:
        if (query_type or "").startswith(prefix):
            return kind
    known = ", ".join(f"{prefix}*" for prefix, _ in KINDS)
    raise ImportProblem(f"{QUERIES}: query_type {query_type!r} is none of the release's ({known})")


def queries(path: Path, index: EntityIndex, counts: Counter[str]) -> Iterator[Query]:
    """Each released query with its one use (streamed)."""
    for row in _batches(path, ["query_hash", "query", "query_type", "entity", "attribute"]):
        kind = kind_of(row["query_type"])
        attribute = (row.get("attribute") or None) if kind in ("attr", "attrnoun") else None
        if row["entity"] not in index.natural_type:
            counts["queries_of_unknown_entities"] += 1
        elif (row["query_type"] or "").endswith("-living") and row["entity"] not in index.living:
            counts["living_queries_of_other_entities"] += 1  # the two ways the authors mark living things disagree
        counts[f"queries_{kind}"] += 1
        yield Query(row["query_hash"], row["query"], index.natural_type.get(row["entity"]),
                    [QueryUse(kind, row["entity"], attribute)])


def engines(path: Path) -> dict[str, str]:
    """query hash -> the search API that found its images (bing, google): each candidate's engine."""
    engine: dict[str, str] = {}
    apis: dict[str, str] = {}  # one string object per API name, not one per query
    for row in _batches(path, ["query_hash", "api"], batch_size=50_000):
        if row.get("api"):
            engine[row["query_hash"]] = apis.setdefault(row["api"], row["api"])
    return engine


def candidates(row: dict[str, Any], split: str, engine: dict[str, str]) -> list[Candidate]:
    """One metadata row's candidates: all share its first link (the planned URL) and its other
    links (the alternatives), and carry its split. The release does not say which query found
    which alt text or page, so the i-th alt text and page go with the i-th query (cycling): every
    source names a real query of the row, and the dataset lists each of them once."""
    links = _unique(row["images_link"])
    if not links:
        return []
    found_by = _unique(row["qh"]) or [""]  # "": no query (the build counts such an image as without entity)
    texts, pages = _unique(row["texts"]), list(row.get("images_contextlink") or [])
    width, height = (row.get("images_width") or [None])[0], (row.get("images_height") or [None])[0]
    return [
        Candidate(url=links[0], query_id=found_by[i % len(found_by)], engine=engine.get(found_by[i % len(found_by)], "import"),
                  rank=UNKNOWN_RANK, page_url=pages[i] if i < len(pages) else None, text=texts[i] if i < len(texts) else None,
                  width=width, height=height, alternatives=tuple(links[1:]), split=SPLITS[split])
        for i in range(max(len(found_by), len(texts), len(pages)))
    ]
