"""Merge WordNet synsets into the Wikidata entities that name the same thing.

Rules, strongest first; a synset joins at most one entity, the first (most linked) that claims it:

1. taxon name: the entity's taxon name (P225) is a lemma of the synset ("Panthera leo");
2. name: the entity's label is a lemma of exactly one harvested synset of the same domain
   ("dog" -> dog.n.01). A lemma shared by several synsets ("jaguar") is ambiguous and never merges.

The merged entity keeps its Wikidata id and lists the synset in ``same_as``; it takes the synset's
lemmas (the queries stage turns them into ``wordnet-noun`` queries) and its hypernyms join its
ancestors (natural-type candidates such as "big cat").
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator

from entitynet.records import Entity


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


class WordNetMerger:
    def __init__(self, synsets: list[Entity]) -> None:
        self.synsets = synsets
        self._by_lemma: dict[str, list[Entity]] = defaultdict(list)
        for synset in synsets:
            for lemma in {_key(text) for text in [synset.name, *synset.aliases]}:
                self._by_lemma[lemma].append(synset)
        self._claimed: set[str] = set()
        self.merged: Counter[str] = Counter()

    def merge(self, entity: Entity) -> Entity:
        synset = self._match(entity)
        if synset is None:
            return entity
        self._claimed.add(synset.id)
        entity.same_as.append(synset.id)
        entity.lemmas = list(synset.lemmas)
        entity.ancestors.extend(synset.ancestors)
        if entity.description is None:
            entity.description = synset.description
        return entity

    def _match(self, entity: Entity) -> Entity | None:
        if entity.taxon_name:
            candidates = self._unclaimed(entity.taxon_name, entity.domain)
            if len(candidates) == 1:
                self.merged["taxon_name"] += 1
                return candidates[0]
        candidates = self._by_lemma.get(_key(entity.name), [])
        same_domain = [synset for synset in candidates if synset.domain == entity.domain]
        if len(same_domain) == 1 and same_domain[0].id not in self._claimed:
            self.merged["name"] += 1
            return same_domain[0]
        return None

    def _unclaimed(self, lemma: str, domain: str) -> list[Entity]:
        return [
            synset
            for synset in self._by_lemma.get(_key(lemma), [])
            if synset.domain == domain and synset.id not in self._claimed
        ]

    def remaining(self) -> Iterator[Entity]:
        """Synsets no Wikidata entity claimed, to be written as entities of their own."""
        return (synset for synset in self.synsets if synset.id not in self._claimed)
