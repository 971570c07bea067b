"""An entity's lineage, the ``lineage`` field of each entity in the built dataset's rows: the
ancestors the evaluation scores at (``acc1_genus``, ``acc1_hypernym1``, ...), so a Hub copy of the
dataset is scored at every rank with no run directory.

Each item is ``{rank, id, name}``, nearest first:

- taxonomic ranks: the entity's ancestors whose Wikidata taxon rank (P105) the kg stage recorded
  (``genus``, ``family``, ``order``, ``class``, ...; ``kg.wikidata.TAXON_RANKS``). The kg climbs at
  most ``kg.ancestor_hops`` (3) steps, so a species usually has its genus, family and order; a
  rank further up (class) appears where the chain is short enough. A rank seen twice (two parent
  taxa of one rank) is left out: the scores must not choose between them.
- WordNet levels: ``hypernym1`` (the direct hypernym), ``hypernym2``, ``hypernym3``: the synset's
  (or the merged synset's) hypernym that many steps up; where a synset has several at one level
  the first by name is kept, as the kg stage orders them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from entitynet.records import Entity

WORDNET_PREFIX = "wn:"


def lineage(entity: Entity) -> list[dict[str, Any]]:
    taxa = [a for a in entity.ancestors if a.rank is not None and not a.id.startswith(WORDNET_PREFIX)]
    counts = Counter(a.rank for a in taxa)
    items = [{"rank": a.rank, "id": a.id, "name": a.label} for a in taxa if counts[a.rank] == 1]
    seen: set[int] = set()
    for ancestor in entity.ancestors:  # ordered by hops, then name (kg/wordnet.py)
        if ancestor.id.startswith(WORDNET_PREFIX) and ancestor.hops not in seen:
            seen.add(ancestor.hops)
            items.append({"rank": f"hypernym{ancestor.hops}", "id": ancestor.id, "name": ancestor.label})
    return items
