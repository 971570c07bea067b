"""The SPARQL text of the Wikidata harvest: standard SPARQL 1.1 that QLever, WDQS and Oxigraph
all run unchanged (no ``SERVICE wikibase:label``, no engine hints, every prefix declared).

Every query has an ORDER BY, so LIMIT/OFFSET pages are stable; ``SparqlClient.select_pages``
appends the LIMIT and OFFSET. Ids and language tags pass through ``rdf.item``/``rdf.literal``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from entitynet.kg.rdf import PREFIXES, item, literal

# Sitelinks live on the item in WDQS and on its data node in the dumps and QLever: read both.
_SITELINKS = """\
  OPTIONAL {{ {var} wikibase:sitelinks ?directSitelinks }}
  OPTIONAL {{ ?dataNode schema:about {var} ; wikibase:sitelinks ?nodeSitelinks }}
  BIND(COALESCE(?directSitelinks, ?nodeSitelinks, 0) AS ?sitelinks)"""

# How an entity hangs under a root, per harvest mode.
_MEMBERSHIP = {
    # LivingThings: taxa (parent taxon chains), instances of classes under the root, subclasses.
    "organisms": "{{ ?item wdt:P171+ {root} }} UNION {{ ?item wdt:P31/wdt:P279* {root} }} UNION {{ ?item wdt:P279+ {root} }}",
    # EntityNet: the root and its subclasses; instances are not classes and stay out.
    "classes": "?item wdt:P279* {root} .",
}

# Facts fetched per batch of items, one (item, field, value) row each: no cross products.
FACT_PATTERNS = {
    "label": "?item rdfs:label ?value .",
    "alias": "?item skos:altLabel ?value .",
    "description": "?item schema:description ?value .",
    "common_name": "?item wdt:P1843 ?value .",
    "taxon_name": "?item wdt:P225 ?value .",
    "taxon_rank": "?item wdt:P105 ?value .",  # an item: species Q7432, genus Q34740, ... (entities and ancestors)
    "inaturalist_id": "?item wdt:P3151 ?value .",  # iNaturalist taxon ID, the search stage's first join key
    "image": "?item wdt:P18 ?value .",
    # Statements about looks, read by the enrich stage's kg attributes (values are items).
    "P462": "?item wdt:P462 ?value .",  # color
    "P1552": "?item wdt:P1552 ?value .",  # has characteristic
    "P527": "?item wdt:P527 ?value .",  # has part(s)
    "P186": "?item wdt:P186 ?value .",  # made from material
    "sitelinks": "{ ?item wikibase:sitelinks ?value . } UNION { ?dataNode schema:about ?item ; wikibase:sitelinks ?value . }",
}
LANGUAGE_FIELDS = frozenset({"label", "alias", "description", "common_name"})
VISUAL_PROPERTIES = ("P462", "P1552", "P527", "P186")
ENTITY_FIELDS = ("label", "alias", "description", "common_name", "taxon_name", "taxon_rank", "inaturalist_id", "image",
                 *VISUAL_PROPERTIES)
DESCRIBE_FIELDS = ("label", "sitelinks", "taxon_rank")  # for ancestors (their rank) and statement values

# First hop may be instance-of (P31), parent taxon (P171) or subclass-of (P279); further hops only
# climb P171/P279, since the class of a class (metaclasses such as "taxon") names nothing visual.
_FIRST_HOP = "(wdt:P31|wdt:P279|wdt:P171)"
_NEXT_HOP = "(wdt:P279|wdt:P171)"


def members(
    root: str,
    mode: Literal["organisms", "classes"],
    exclude: Sequence[str],
    require_image: bool,
    min_sitelinks: int,
) -> str:
    """Items under ``root`` with their sitelinks, most linked first."""
    # P31? covers the excluded item itself, its subclasses (P279*) and their instances. One
    # filter per id, with the class as a constant: engines then walk up from the item only
    # (a VALUES variable there made Oxigraph 150x slower, and MINUS would enumerate all humans).
    exclusion = "".join(f"  FILTER NOT EXISTS {{ ?item wdt:P31?/wdt:P279* {item(qid)} }}\n" for qid in exclude)
    image = "  FILTER EXISTS { ?item wdt:P18 ?image }\n" if require_image else ""
    return (
        PREFIXES
        + "SELECT DISTINCT ?item ?sitelinks WHERE {\n"
        + "  " + _MEMBERSHIP[mode].format(root=item(root)) + "\n"
        + exclusion
        + image
        + _SITELINKS.format(var="?item") + "\n"
        + f"  FILTER(?sitelinks >= {int(min_sitelinks)})\n"
        + "}\nORDER BY DESC(?sitelinks) ?item"
    )


def facts(qids: Sequence[str], fields: Sequence[str], languages: Sequence[str]) -> str:
    """(item, field, value) rows for the given items, language-tagged fields in ``languages``."""
    values = " ".join(item(qid) for qid in qids)
    branches = [f'{{ {FACT_PATTERNS[name]} BIND({literal(name)} AS ?field) }}' for name in fields]
    tagged = ", ".join(literal(name) for name in fields if name in LANGUAGE_FIELDS)
    allowed = ", ".join(literal(language.lower()) for language in languages)
    language_filter = ""
    if tagged:
        language_filter = f"  FILTER(?field NOT IN ({tagged}) || LCASE(LANG(?value)) IN ({allowed}))\n"
    return (
        PREFIXES
        + "SELECT ?item ?field ?value WHERE {\n"
        + f"  VALUES ?item {{ {values} }}\n"
        + "  " + "\n  UNION ".join(branches) + "\n"
        + language_filter
        + "}\nORDER BY ?item ?field ?value"
    )


def ancestors(qids: Sequence[str], hops: int) -> str:
    """Parents up to ``hops`` steps away (P31 first, then P279/P171), nearest distance first."""
    values = " ".join(item(qid) for qid in qids)
    branches = []
    for distance in range(1, hops + 1):
        path = "/".join([_FIRST_HOP] + [_NEXT_HOP] * (distance - 1))
        # VALUES inside every branch: with one VALUES outside the UNION, Oxigraph evaluated the
        # paths for every item of the graph before joining (1000x slower at 5k taxa).
        branches.append(f"{{ VALUES ?item {{ {values} }} ?item {path} ?ancestor . BIND({distance} AS ?hops) }}")
    return (
        PREFIXES
        + "SELECT DISTINCT ?item ?ancestor ?hops WHERE {\n"
        + "  " + "\n  UNION ".join(branches) + "\n"
        + "  FILTER(isIRI(?ancestor) && ?ancestor != ?item)\n"
        + "}\nORDER BY ?item ?hops ?ancestor"
    )
