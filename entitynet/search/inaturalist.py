"""iNaturalist's open data as an image source, joined to entities through the knowledge graph.

No search happens: an entity's taxon is found in iNaturalist's taxa by Wikidata's iNaturalist
taxon ID (P3151) first, else as the one active taxon whose name is the entity's scientific name
(P225) and whose rank is its taxon rank (P105). An entity that matches no taxon or several, or
has neither id nor name, is counted by reason and logged, never guessed.

The photos of a matched taxon (and of its descendants, with ``descendants``, except those under a
deeper matched entity: each photo goes to the most specific entity of the run) come from
observations of the allowed quality grades, with the allowed licences. At most ``per_entity`` are
kept per entity, drawn by a seeded hash: round-robin across the taxon's children (a genus takes its
species in turn), within a child distinct observers first and an observation's first photo first.
Each candidate carries its licence and licence URL, "<observer> via iNaturalist", the
observation's page, the photo's size at the fetched size, the taxon and the observation's date;
its text is the entity's query (observations have no caption), and its query is the entity's
noun query named like the entity (else its first selected query).

An (entity, child taxon) with more than OVERSAMPLE x ``per_entity`` allowed observations is
sampled by a seeded hash of the observation before the photos are joined (sized from the index's
observations-per-taxon table), so a class or a very common species costs no more than a rare one.

The join runs in DuckDB over the parquet index (inaturalist_index.py) once for all matched
entities, under DuckDB's memory limit (it spills to disk beyond it), and writes the kept rows (at
most ``per_entity`` per entity) as a selection file in the candidates folder; candidate parts of
``queries_per_part`` entities are then cut from it. A run killed during the join does it again;
killed while writing parts, it keeps the selection and starts at the first missing part.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from entitynet import layout
from entitynet.config import InaturalistConfig
from entitynet.http import HttpClient
from entitynet.queries import normalise
from entitynet.records import Candidate, Query
from entitynet.rundir import RunDir, write_text_atomic
from entitynet.search.base import EngineError
from entitynet.search.inaturalist_index import ENGINE, Index, connect, prepare
from entitynet.tables import CANDIDATE_SCHEMA, RecordWriter, candidate_to_row

logger = logging.getLogger(__name__)

# Wikidata's taxon rank items (P105 values) and iNaturalist's rank names.
RANKS = {
    "Q36732": "kingdom", "Q38348": "phylum", "Q1153785": "subphylum", "Q37517": "class", "Q5867051": "subclass",
    "Q5868144": "superorder", "Q36602": "order", "Q5867959": "suborder", "Q2889003": "infraorder",
    "Q2136103": "superfamily", "Q35409": "family", "Q164280": "subfamily", "Q227936": "tribe",
    "Q34740": "genus", "Q3238261": "subgenus", "Q7432": "species", "Q68947": "subspecies",
    "Q767728": "variety", "Q279749": "form",
}
# iNaturalist links its licence codes to these deeds (version 4.0, CC0 1.0).
LICENSE_URLS = {
    "CC0": "https://creativecommons.org/publicdomain/zero/1.0/",
    "CC-BY": "https://creativecommons.org/licenses/by/4.0/",
    "CC-BY-NC": "https://creativecommons.org/licenses/by-nc/4.0/",
    "CC-BY-SA": "https://creativecommons.org/licenses/by-sa/4.0/",
    "CC-BY-ND": "https://creativecommons.org/licenses/by-nd/4.0/",
    "CC-BY-NC-SA": "https://creativecommons.org/licenses/by-nc-sa/4.0/",
    "CC-BY-NC-ND": "https://creativecommons.org/licenses/by-nc-nd/4.0/",
}
# Longest side of each photo size; square is cropped to 75 x 75; original is as listed.
SIZES = {"large": 1024, "medium": 500, "small": 240, "thumb": 100}
MIME = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp"}
PAGE_URL = "https://www.inaturalist.org/observations/{observation_uuid}"
SELECTION = "_inaturalist-selection.parquet"  # in RUN/candidates/, beside the parts (not a part: PART_GLOB skips it)
EXAMPLES = 5  # entity ids logged per unmatched reason
# Observations examined per (entity, child taxon), as a multiple of per_entity: beyond it a seeded
# hash samples them (licences leave out most photos of some taxa, so the margin is wide).
OVERSAMPLE = 50


@dataclass(frozen=True)
class Wanted:
    """An entity to find photos of: its query and its knowledge-graph taxon."""

    entity_id: str
    query_id: str
    text: str
    inaturalist_id: str | None
    taxon_name: str | None
    taxon_rank: str | None


@dataclass(frozen=True)
class Matched:
    wanted: Wanted
    taxon_id: int
    by: str  # "id" or "name"


def wanted_entities(queries: Iterator[Query], entities_path: Path, kinds: set[str]) -> list[Wanted]:
    """Each entity served by the selected queries once, with the query its photos are filed under."""
    names, taxa = _entity_facts(entities_path)
    chosen: dict[str, Query] = {}
    for query in queries:
        for use in query.uses:
            if use.kind not in kinds or use.entity_id not in names:
                continue
            current = chosen.get(use.entity_id)
            named = query.text == normalise(names[use.entity_id])
            if current is None or (named and current.text != normalise(names[use.entity_id])):
                chosen[use.entity_id] = query
    return [Wanted(entity_id, query.query_id, query.text, *taxa[entity_id]) for entity_id, query in chosen.items()]


def _entity_facts(path: Path) -> tuple[dict[str, str], dict[str, tuple[str | None, str | None, str | None]]]:
    columns = ["id", "name", "inaturalist_id", "taxon_name", "taxon_rank"]
    names = pq.ParquetFile(path).schema_arrow.names
    if "inaturalist_id" not in names or "taxon_rank" not in names:
        raise EngineError(f"inaturalist: {path} has no inaturalist_id or taxon_rank column (made by an older kg stage): "
                          "rerun the kg stage (entitynet kg --force) to harvest P3151 and P105")
    table = pq.read_table(path, columns=columns).to_pydict()
    named = dict(zip(table["id"], table["name"]))
    facts = {entity: (inat, name, rank) for entity, inat, name, rank
             in zip(table["id"], table["inaturalist_id"], table["taxon_name"], table["taxon_rank"])}
    return named, facts


class InaturalistEngine:
    """See the module docstring. ``drops`` counts photos left out; ``entities`` counts the join."""

    name = ENGINE

    def __init__(self, config: InaturalistConfig, index: Index, spill: Path) -> None:
        self.config = config
        self.index = index
        self.spill = spill
        self.drops: Counter[str] = Counter()
        self.entities: Counter[str] = Counter()
        self.matched: list[Matched] = []  # every entity joined, in order: ``place`` in the selection

    def match(self, wanted: list[Wanted]) -> list[Matched]:
        """Each entity's taxon, by id then by name and rank; the others counted and logged by reason."""
        ids = sorted({int(w.inaturalist_id) for w in wanted if _is_id(w.inaturalist_id)})
        names = sorted({w.taxon_name for w in wanted if w.taxon_name})
        connection = connect(self.config, self.spill)
        try:
            taxa = self.index.table("taxa")
            known = {row[0] for row in connection.execute(
                "SELECT taxon_id FROM read_parquet(?) WHERE taxon_id IN (SELECT unnest(?::BIGINT[]))", [taxa, ids]).fetchall()}
            by_name: dict[tuple[str, str], list[int]] = defaultdict(list)
            for taxon_id, name, rank in connection.execute(
                "SELECT taxon_id, name, rank FROM read_parquet(?) WHERE active AND name IN (SELECT unnest(?::VARCHAR[]))",
                [taxa, names]).fetchall():
                by_name[(name, rank)].append(taxon_id)
        finally:
            connection.close()
        matched: list[Matched] = []
        examples: dict[str, list[str]] = defaultdict(list)
        for item in wanted:
            found, reason = self._match_one(item, known, by_name)
            self.entities[reason] += 1
            if found is None:
                examples[reason].append(item.entity_id)
            else:
                matched.append(Matched(item, found, "id" if reason == "matched_by_id" else "name"))
        for reason, entity_ids in sorted(examples.items()):
            logger.warning("inaturalist: %d entities not joined (%s), e.g. %s", len(entity_ids), reason,
                           ", ".join(entity_ids[:EXAMPLES]))
        if wanted and not any(w.inaturalist_id or w.taxon_name for w in wanted):
            raise EngineError("inaturalist: no entity has an iNaturalist taxon ID (P3151) or a scientific name (P225): "
                              "the inaturalist engine joins taxa; harvest living things from Wikidata (kg.sources)")
        self.matched = matched
        return matched

    @staticmethod
    def _match_one(item: Wanted, known: set[int], by_name: dict[tuple[str, str], list[int]]) -> tuple[int | None, str]:
        if _is_id(item.inaturalist_id) and int(item.inaturalist_id or 0) in known:
            return int(item.inaturalist_id or 0), "matched_by_id"
        if not item.taxon_name:
            return None, "inaturalist_id_not_in_taxa" if item.inaturalist_id else "no_taxon_id_or_name"
        if not item.taxon_rank:
            return None, "no_taxon_rank"
        rank = RANKS.get(item.taxon_rank)
        if rank is None:
            return None, "taxon_rank_not_in_inaturalist"
        found = by_name.get((item.taxon_name, rank), [])
        if len(found) == 1:
            return found[0], "matched_by_name"
        return None, "no_taxon_by_name" if not found else "several_taxa_by_name"

    def select(self, target: Path) -> None:
        """Every matched entity's kept photos, ranked, into ``target`` (parquet, one row per photo and
        entity, ``place`` = the entity's position in ``matched``), in one pass over the index; the
        photos left out are counted into ``drops`` and saved beside it. A selection already there
        (a run killed while writing parts) is taken as it is."""
        counts = target.with_suffix(".json")
        if target.exists() and counts.exists():
            self.drops.update(json.loads(counts.read_text()))
            return
        config = self.config
        entities = pa.table({
            "entity": pa.array([m.wanted.entity_id for m in self.matched], pa.string()),
            "query_id": pa.array([m.wanted.query_id for m in self.matched], pa.string()),
            "text": pa.array([m.wanted.text for m in self.matched], pa.string()),
            "taxon": pa.array([m.taxon_id for m in self.matched], pa.int64()),
            "place": pa.array(range(len(self.matched)), pa.int32()),
        })
        tables = {name: self.index.table(name) for name in ("taxa", "observations", "photos", "observers")}
        grades, licences = list(config.quality_grades), list(config.licenses)
        partial = target.with_name(f".{target.name}.tmp")
        connection = connect(config, self.spill)
        try:
            connection.register("entities", entities)
            observations, photos = _q(tables["observations"]), _q(tables["photos"])
            connection.execute(f"CREATE TEMP TABLE targets AS {self._targets_sql(tables['taxa'])}")
            # Observations of the allowed grades per (entity, branch), so a taxon with millions (a
            # class, a common species) is sampled down before its photos are joined and ranked.
            connection.execute(f"""
                CREATE TEMP TABLE sizes AS
                SELECT t.entity, t.branch, list_contains(?, c.quality_grade) AS allowed, sum(c.n) AS n
                FROM targets t JOIN read_parquet('{_q(self.index.table("taxon_counts"))}') c ON c.taxon_id = t.taxon_id
                GROUP BY ALL""", [grades])
            dropped: Counter[str] = Counter()
            dropped["quality_grade"] = int(connection.execute("SELECT coalesce(sum(n), 0) FROM sizes WHERE NOT allowed").fetchone()[0])
            examined = OVERSAMPLE * config.per_entity
            connection.execute(f"""
                CREATE TEMP TABLE matched AS
                SELECT t.entity, t.branch, o.observation_uuid, o.observer_id, o.taxon_id, o.observed_on,
                       p.photo_id, p.extension, p.license, p.width, p.height, p.position
                FROM targets t
                JOIN sizes s ON s.entity = t.entity AND s.branch = t.branch AND s.allowed
                JOIN read_parquet('{observations}') o ON o.taxon_id = t.taxon_id
                JOIN read_parquet('{photos}') p ON p.observation_uuid = o.observation_uuid
                WHERE list_contains(?, o.quality_grade)
                  AND (s.n <= {examined} OR hash({int(config.seed)}, t.entity, o.observation_uuid) / 18446744073709551616.0
                                            < {examined} / s.n)""", [grades])
            dropped["license"] = int(connection.execute(
                "SELECT count(*) FROM matched WHERE NOT list_contains(?, license)", [licences]).fetchone()[0])
            connection.execute(f"""
                COPY (
                WITH allowed AS (
                    SELECT *, hash({int(config.seed)}, entity, photo_id) AS draw FROM matched
                    WHERE list_contains(?, license)),
                by_observer AS (
                    SELECT *, row_number() OVER (PARTITION BY entity, observer_id ORDER BY position <> 0, draw) AS nth_of_observer
                    FROM allowed),
                by_branch AS (
                    SELECT *, row_number() OVER (PARTITION BY entity, branch
                                                 ORDER BY nth_of_observer, position <> 0, draw) AS round
                    FROM by_observer),
                ranked AS (
                    SELECT *, row_number() OVER (PARTITION BY entity ORDER BY round, hash({int(config.seed)}, branch), draw) - 1 AS rank
                    FROM by_branch)
                SELECT e.place, e.query_id, e.text, r.rank, r.observation_uuid, r.photo_id, r.extension, r.license,
                       r.width, r.height, r.taxon_id, x.name AS taxon_name, r.observed_on, u.name AS observer_name, u.login
                FROM ranked r
                JOIN entities e ON e.entity = r.entity
                LEFT JOIN read_parquet('{_q(tables['taxa'])}') x ON x.taxon_id = r.taxon_id
                LEFT JOIN read_parquet('{_q(tables['observers'])}') u ON u.observer_id = r.observer_id
                WHERE r.rank < {int(config.per_entity)}
                ORDER BY e.place, r.rank
                ) TO '{_q(str(partial))}' (FORMAT parquet)""", [licences])
        finally:
            connection.close()
        os.replace(partial, target)
        write_text_atomic(counts, json.dumps(dict(dropped)))
        self.drops.update(dropped)

    def part(self, selection: Path, start: int, stop: int) -> list[Candidate]:
        """The candidates of the matched entities ``start`` to ``stop`` (their places), best first."""
        table = pq.read_table(selection, filters=[("place", ">=", start), ("place", "<", stop)])
        table = table.sort_by([("place", "ascending"), ("rank", "ascending")])
        return [self._candidate(row) for row in table.to_pylist()]

    def _targets_sql(self, taxa: str) -> str:
        """(entity, taxon_id, branch) of every taxon whose observations an entity of the batch takes:
        its own, and with ``descendants`` every taxon below it that no deeper matched entity owns
        (a photo of a species the run has goes to that species, not to its genus too: one picture,
        one label, and no image serving entities the build puts in different splits). ``branch`` is
        the child of the entity's taxon the taxon lies under, the unit of balance."""
        if not self.config.descendants:
            return "SELECT entity, taxon AS taxon_id, taxon AS branch FROM entities"
        # ``entities`` is every matched entity, so a deeper one's taxa are known to be owned
        return f"""
            WITH paths AS (
                SELECT taxon_id, CASE WHEN coalesce(ancestry, '') = '' THEN [] ELSE string_split(ancestry, '/') END
                                 || [CAST(taxon_id AS VARCHAR)] AS path
                FROM read_parquet('{_q(taxa)}')),
            steps AS (SELECT taxon_id, path, unnest(range(1, len(path) + 1)) AS step FROM paths),
            owners AS (
                SELECT s.taxon_id, a.entity, s.step, s.path, max(s.step) OVER (PARTITION BY s.taxon_id) AS deepest
                FROM steps s JOIN entities a ON TRY_CAST(s.path[s.step] AS BIGINT) = a.taxon)
            SELECT entity, taxon_id, TRY_CAST(coalesce(path[step + 1], path[step]) AS BIGINT) AS branch
            FROM owners WHERE step = deepest"""

    def _candidate(self, row: dict[str, Any]) -> Candidate:
        config = self.config
        extension = str(row["extension"] or "jpg").lower()
        width, height = _scaled(row["width"], row["height"], config.size)
        who = row["observer_name"] or row["login"]
        if not who:
            self.drops["observer_unknown_attributed_by_id"] += 1
        return Candidate(
            url=config.photo_url.format(photo_id=row["photo_id"], size=config.size, extension=extension),
            query_id=row["query_id"],
            engine=ENGINE,
            rank=int(row["rank"]),
            page_url=PAGE_URL.format(observation_uuid=row["observation_uuid"]),
            text=row["text"],
            width=width,
            height=height,
            mime=MIME.get(extension),
            license=row["license"],
            license_url=LICENSE_URLS.get(row["license"]),
            attribution=f"{who or 'an observer'} via iNaturalist",
            taxon_id=str(row["taxon_id"]),
            taxon_name=row["taxon_name"],
            observed_on=row["observed_on"],
        )


def _is_id(value: str | None) -> bool:
    return bool(value) and str(value).isdigit()


def _scaled(width: int | None, height: int | None, size: str) -> tuple[int | None, int | None]:
    """The photo's size at ``size``: the listed size is the original's."""
    if size == "square":
        return 75, 75
    if not width or not height or size not in SIZES:
        return width, height
    longest = max(width, height)
    if longest <= SIZES[size]:
        return width, height
    factor = SIZES[size] / longest
    return max(1, round(width * factor)), max(1, round(height * factor))


def _q(text: str) -> str:
    return text.replace("'", "''")


def search(config: InaturalistConfig, kinds: set[str], queries: Iterator[Query], run_dir: RunDir, folder: Path,
           queries_per_part: int, client: HttpClient) -> tuple[InaturalistEngine, dict[str, Any]]:
    """The search stage's work for this engine: index, match, select in one pass, then one part per
    ``queries_per_part`` entities. The selection lives in the candidates folder, whose fingerprint
    clears it with the parts when the settings change."""
    cache = run_dir.cache_dir("search") / ENGINE
    index = prepare(config, Path(config.index) if config.index else cache / "index", client)
    engine = InaturalistEngine(config, index, cache / "spill")
    matched = engine.match(wanted_entities(queries, run_dir.path(layout.ENTITIES), kinds))
    selection = folder / SELECTION
    engine.select(selection)
    counts: Counter[str] = Counter()
    with tqdm(desc="search inaturalist", unit="entity", total=len(matched), disable=None, leave=False) as progress:
        for number, start in enumerate(range(0, len(matched), queries_per_part)):
            stop = min(start + queries_per_part, len(matched))
            target = folder / layout.part(number)
            if target.exists():
                counts["parts_reused"] += 1
            else:
                found = engine.part(selection, start, stop)
                counts["entities_without_candidates"] += (stop - start) - len({c.query_id for c in found})
                with RecordWriter[Candidate](target, CANDIDATE_SCHEMA, candidate_to_row) as writer:
                    writer.write_all(found)
                counts["parts_written"] += 1
            progress.update(stop - start)
    return engine, {"entities": dict(sorted(engine.entities.items())), **counts}
