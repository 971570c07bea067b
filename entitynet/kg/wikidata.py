"""Harvest entities from Wikidata over SPARQL, root by root, in pages, in bounded memory.

Per root: page through the members, most sitelinks first, until the limit; every batch of ids
then gets its facts (labels, aliases, descriptions, common names, taxon names, images) and its
ancestors (with their labels and sitelinks, the natural-type candidates). Entities stream out as
they are complete, so the stage never holds more than a batch.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from entitynet.config import KgConfig, WikidataConfig
from entitynet.kg import wikidata_queries as queries
from entitynet.kg.rdf import commons_image, language_of, qid_from_iri, qid_of, value_of
from entitynet.kg.sparql import SparqlClient
from entitynet.records import Ancestor, Entity, VisualFact

logger = logging.getLogger(__name__)

# Ancestors and statement values repeat across a harvest (every lion relative has Panthera
# above it). Remember this many labels; beyond it the cache starts over, so memory stays flat.
LABEL_CACHE_SIZE = 100_000
# Taxon ranks (P105 values) an ancestor keeps, by name: the ranks the evaluation scores at
# (acc1_genus, ...; training/evaluation/ranks.py) and the ones between them. Others are left out.
TAXON_RANKS = {"Q7432": "species", "Q34740": "genus", "Q3238261": "subgenus", "Q164280": "subfamily",
               "Q227936": "tribe", "Q35409": "family", "Q2136103": "superfamily", "Q36602": "order",
               "Q5867959": "suborder", "Q37517": "class", "Q5867051": "subclass", "Q38348": "phylum",
               "Q36732": "kingdom"}


@dataclass
class WikidataStats:
    per_root: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"per_root": dict(self.per_root), "dropped": dict(sorted(self.dropped.items()))}


@dataclass
class _Facts:
    """What the fact rows say about one item, by field and language."""

    by_field: dict[str, list[tuple[str | None, Any]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, name: str, language: str | None, value: Any) -> None:
        self.by_field[name].append((language, value))

    def texts(self, name: str, languages: list[str]) -> list[str]:
        """Values of a language-tagged field, preferred language first, without repeats."""
        rank = {language: index for index, language in enumerate(languages)}
        tagged = sorted(
            (rank.get(language or "", len(rank)), str(value)) for language, value in self.by_field.get(name, [])
        )
        return _unique(text for _, text in tagged)

    def first(self, name: str) -> Any:
        values = sorted(value for _, value in self.by_field.get(name, []))
        return values[0] if values else None

    def all(self, name: str) -> list[Any]:
        return sorted({value for _, value in self.by_field.get(name, [])})


@dataclass
class _Batch:
    facts: dict[str, _Facts]
    ancestors: dict[str, list[Ancestor]]
    visual_facts: dict[str, list[VisualFact]]


class WikidataHarvester:
    """Entities under the configured roots; see the module docstring."""

    def __init__(self, client: SparqlClient, config: KgConfig) -> None:
        self.client = client
        self.config: WikidataConfig = config.wikidata
        self.page_size = config.sparql.page_size
        self.batch_size = config.sparql.batch_size
        self.limit = config.limit_per_root
        self.stats = WikidataStats()
        self._described: dict[str, tuple[str | None, int, str | None]] = {}  # item -> (label, sitelinks, taxon rank)

    def entities(self) -> Iterator[Entity]:
        seen: set[str] = set()  # an item under two roots belongs to the first
        # One batch ahead: while entities of batch k are built and written, a worker thread
        # already waits on the endpoint for batch k+1, so client work hides behind server work.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="wikidata-prefetch") as prefetch:
            for root in self.config.roots:
                pending: tuple[list[tuple[str, int]], Future[_Batch]] | None = None
                for batch in _batched(self._members(root, seen), self.batch_size):
                    submitted = (batch, prefetch.submit(self._fetch, [qid for qid, _ in batch]))
                    if pending is not None:
                        yield from self._build(root, pending[0], pending[1].result())
                    pending = submitted
                if pending is not None:
                    yield from self._build(root, pending[0], pending[1].result())

    def _members(self, root: str, seen: set[str]) -> Iterator[tuple[str, int]]:
        text = queries.members(
            root,
            self.config.mode,
            self.config.exclude,
            self.config.require_image,
            self.config.min_sitelinks,
        )
        kept = 0
        progress = tqdm(desc=f"wikidata {root}", unit="entity", total=self.limit, disable=None, leave=False)
        with progress:
            for page in self.client.select_pages(text, f"members of {root}", self.page_size):
                for row in page:
                    qid = qid_of(row.get("item"))
                    if qid is None:
                        self.stats.dropped["not_an_item"] += 1
                        continue
                    if qid in seen:
                        self.stats.dropped["under_earlier_root"] += 1
                        continue
                    seen.add(qid)
                    kept += 1
                    progress.update(1)
                    yield qid, int(value_of(row.get("sitelinks")) or 0)
                    if self.limit is not None and kept >= self.limit:
                        return

    def _fetch(self, qids: list[str]) -> _Batch:
        """Everything the endpoint knows about a batch (runs in the prefetch thread)."""
        facts = self._facts(qids, queries.ENTITY_FIELDS, "facts")
        ancestors = self._ancestors(qids)
        return _Batch(facts, ancestors, self._visual_facts(facts))

    def _visual_facts(self, facts: dict[str, _Facts]) -> dict[str, list[VisualFact]]:
        found = {
            qid: [(prop, value) for prop in queries.VISUAL_PROPERTIES for value in map(qid_from_iri, item.all(prop)) if value]
            for qid, item in facts.items()
        }
        self._describe({value for pairs in found.values() for _, value in pairs})
        return {
            qid: [VisualFact(prop, value, self._described.get(value, (None, 0))[0]) for prop, value in pairs]
            for qid, pairs in found.items()
        }

    def _build(self, root: str, batch: list[tuple[str, int]], fetched: _Batch) -> Iterator[Entity]:
        living = root in self.config.living_roots
        languages = [language.lower() for language in self.config.languages]
        for qid, sitelinks in batch:
            item = fetched.facts.get(qid, _Facts())
            labels = item.texts("label", languages)
            common_names = item.texts("common_name", languages)
            taxon_name = item.first("taxon_name")
            # A taxon without a label in our languages is still known by its common or Latin name.
            name = next(iter(labels + common_names), None) or taxon_name
            if not name:
                self.stats.dropped["no_label"] += 1
                continue
            descriptions = item.texts("description", languages)
            images = [image for image in (commons_image({"value": v}) for v in item.all("image")) if image]
            aliases = [alias for alias in _unique(labels[1:] + item.texts("alias", languages)) if alias.casefold() != name.casefold()]
            self.stats.per_root[root] += 1
            yield Entity(
                id=qid,
                source="wikidata",
                name=name,
                domain="living" if living else "other",
                root=root,
                aliases=aliases,
                description=descriptions[0] if descriptions else None,
                sitelinks=sitelinks,
                taxon_name=taxon_name,
                taxon_rank=qid_from_iri(str(item.first("taxon_rank") or "")),
                inaturalist_id=_text_or_none(item.first("inaturalist_id")),
                common_names=common_names,
                image=images[0] if images else None,
                ancestors=fetched.ancestors.get(qid, []),
                visual_facts=fetched.visual_facts.get(qid, []),
            )

    def _facts(self, qids: list[str], fields: Iterable[str], what: str) -> dict[str, _Facts]:
        text = queries.facts(qids, list(fields), self.config.languages)
        found: dict[str, _Facts] = defaultdict(_Facts)
        label = f"{what} of {len(qids)} items from {qids[0]}"
        for page in self.client.select_pages(text, label, self.page_size):
            for row in page:
                qid = qid_of(row.get("item"))
                name = value_of(row.get("field"))
                if qid is None or name is None or "value" not in row:
                    continue
                found[qid].add(name, language_of(row["value"]), value_of(row["value"]))
        return found

    def _ancestors(self, qids: list[str]) -> dict[str, list[Ancestor]]:
        text = queries.ancestors(qids, self.config.ancestor_hops)
        nearest: dict[str, dict[str, int]] = defaultdict(dict)
        for page in self.client.select_pages(text, f"ancestors of {len(qids)} items from {qids[0]}", self.page_size):
            for row in page:
                qid, ancestor = qid_of(row.get("item")), qid_of(row.get("ancestor"))
                if qid is None or ancestor is None:
                    continue
                hops = int(value_of(row.get("hops")))
                nearest[qid][ancestor] = min(hops, nearest[qid].get(ancestor, hops))
        self._describe({a for found in nearest.values() for a in found})
        result = {}
        for qid, found in nearest.items():
            parents = [Ancestor(a, *self._described.get(a, (None, 0, None))[:2], hops=h,
                                rank=self._described.get(a, (None, 0, None))[2]) for a, h in found.items()]
            parents.sort(key=lambda p: (p.hops, -(p.sitelinks or 0), p.id))
            result[qid] = parents
        return result

    def _describe(self, item_ids: set[str]) -> None:
        """Fetch labels and sitelinks of items not described yet (ancestors, statement values)."""
        missing = sorted(item_ids - self._described.keys(), key=lambda q: int(q[1:]))
        if len(self._described) + len(missing) > LABEL_CACHE_SIZE:
            self._described.clear()
            missing = sorted(item_ids, key=lambda q: int(q[1:]))
        languages = [language.lower() for language in self.config.languages]
        for chunk in _batched(iter(missing), self.batch_size):
            facts = self._facts(chunk, queries.DESCRIBE_FIELDS, "labels")
            for qid in chunk:
                item = facts.get(qid, _Facts())
                labels = item.texts("label", languages)
                sitelinks = item.all("sitelinks")
                ranks = sorted({TAXON_RANKS[r] for r in map(qid_from_iri, item.all("taxon_rank")) if r in TAXON_RANKS})
                # a taxon of two listed ranks (a data error) gets none: the rank scores must not guess
                self._described[qid] = (labels[0] if labels else None, max(sitelinks) if sitelinks else 0,
                                        ranks[0] if len(ranks) == 1 else None)


def _batched(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def _text_or_none(value: Any) -> str | None:
    """An external id as text: endpoints type P3151 as a string, but a dump may give an integer."""
    return (str(value).strip() or None) if value is not None else None


def _unique(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    kept = []
    for value in values:
        value = value.strip()
        key = value.casefold()
        if value and key not in seen:
            seen.add(key)
            kept.append(value)
    return kept
