"""Natural types: the class a person would name an entity by ("big cat" for a lion).

Candidates are the entity's ancestors (1-3 hops, from the kg stage) minus over-generic classes,
ranked by sitelinks, at most ``max_candidates``. The ``kg`` chooser then takes, in order:

1. the nearest *common-noun* candidate (label starting lower-case: Wikidata's English labels of
   classes are common nouns, those of taxa are Latin names such as "Panthera") that is popular
   enough (at least ``min_sitelinks``) or a WordNet hypernym (curated categories with no
   sitelinks); at equal distance WordNet first, then more sitelinks, then the label;
2. else the nearest common-noun candidate of any popularity;
3. else the most popular candidate (a Latin name beats nothing);
4. else the natural type configured for the entity's root ("animal", "building", ...).

The step that decided is recorded as the reason, so the stats show how often each rule fired.
"""

from __future__ import annotations

from entitynet.config import NaturalTypeConfig
from entitynet.records import Ancestor, Entity, NaturalType


def _from_wordnet(candidate: Ancestor) -> bool:
    return candidate.id.startswith("wn:")


def _common_noun(candidate: Ancestor) -> bool:
    return (candidate.label or "")[:1].islower()


def candidates(entity: Entity, config: NaturalTypeConfig) -> list[Ancestor]:
    """Ancestors that could name the entity, most linked first, at most ``max_candidates``."""
    generic = {entry.casefold() for entry in config.generic}
    own_names = {text.casefold() for text in [entity.name, *entity.aliases, *entity.lemmas]}
    nearest: dict[str, Ancestor] = {}
    for ancestor in entity.ancestors:
        label = (ancestor.label or "").strip()
        key = label.casefold()
        if not label or key in generic or ancestor.id.casefold() in generic or key in own_names:
            continue
        if key not in nearest or ancestor.hops < nearest[key].hops:
            nearest[key] = ancestor
    found = [Ancestor(a.id, (a.label or "").strip(), a.sitelinks, a.hops) for a in nearest.values()]
    found.sort(key=lambda c: (-(c.sitelinks or 0), c.hops, not _from_wordnet(c), c.label))
    return found[: config.max_candidates]


def choose(entity: Entity, config: NaturalTypeConfig) -> NaturalType:
    """The ``kg`` chooser; see the module docstring for the rule."""
    found = candidates(entity, config)
    nearest_first = sorted(found, key=lambda c: (c.hops, not _from_wordnet(c), -(c.sitelinks or 0), c.label))
    common = [c for c in nearest_first if _common_noun(c)]
    popular = [c for c in common if _from_wordnet(c) or (c.sitelinks or 0) >= config.min_sitelinks]
    if popular:
        chosen, reason = popular[0].label, "popular_common_noun"
    elif common:
        chosen, reason = common[0].label, "common_noun"
    elif found:
        chosen, reason = found[0].label, "most_popular"
    elif entity.root in config.root_types:
        chosen, reason = config.root_types[entity.root], "root_fallback"
    else:
        chosen, reason = None, "no_candidate"
    return NaturalType(entity.id, chosen, reason, "kg", found)
