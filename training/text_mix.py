"""The paper's text mix: which text an image is paired with at a training step.

After arXiv 2505.02746 and the authors' text loader (lmb-freiburg/entitynet,
``entitynet_textloader.py``), written anew over our rows:

- with chance ``alt_text`` one of the image's alt texts, when it has any;
- otherwise one of the queries that found it, uniformly (each query once, however many entities
  it serves; then one of its uses), then one text of that query's options.

A query's options are branches with weights (``TextConfig.noun`` / ``attr`` / ``attrnoun``).
Synonyms and definitions come from what the query names, or, with the hierarchy chance (lower for
living things), from the level above it: for noun and attrnoun queries the entity and its natural
type. An attr query ("spotted big cat") is made per natural type (``entitynet.queries``) and
serves every entity of that type, so, as in the authors' ``compute_chances_for_query`` where such
a query's entity is the type, its names come from the natural type, and the level above (the
type's own type) is not in our rows: those branches drop out. Only an attr query that names its
entity's own name (an import whose use points at the type itself) is taken at the entity's level.
The replace branch cuts a name of the level the query names and fills in names of that level and
the one above; a query that names neither gets no replacement (so "cat food" never becomes
"leopard food"). Branches a row cannot serve (no description, no alias, no
attribute) drop out and the rest are renormalised; a branch's weight is shared by its texts;
a text reachable through several branches counts once, with its heaviest weight (as the
authors do).

Every draw is a pure function of (seed, epoch, image id): a resumed run, another number of
processes or data-loader workers, and a streamed or map-style dataset all pair an image with
the same text at the same epoch.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Iterator
from typing import Any

from entitynet.training.config import AttributeTextConfig, TextConfig

Option = tuple[str, float, str]  # text, weight, branch
NOUN_KINDS = ("noun", "wordnet-noun")


def rng_for(seed: int, epoch: int | str, image_id: str, purpose: str) -> random.Random:
    """A generator owned by one (seed, epoch, image) and one purpose ("text", "crop", ...)."""
    digest = hashlib.blake2b(f"{seed}|{epoch}|{image_id}|{purpose}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _unique(values: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(value.strip() for value in values if value and value.strip()))


def entity_names(entity: dict[str, Any]) -> list[str]:
    """The entity's own names: name, aliases, common names, taxon name."""
    return _unique([entity.get("name"), *(entity.get("aliases") or []), *(entity.get("common_names") or []),
                    entity.get("taxon_name")])


def natural_type_names(entity: dict[str, Any]) -> list[str]:
    return _unique([entity.get("natural_type"), *(entity.get("natural_type_aliases") or [])])


def _replace_name(query: str, names: list[str]) -> str | None:
    """The query with the first (longest) of ``names`` it contains as whole words cut out as
    ``{}``, or None when it contains none."""
    for name in sorted(names, key=len, reverse=True):
        pattern = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.IGNORECASE)
        if pattern.search(query):
            return pattern.sub("{}", query.replace("{", "{{").replace("}", "}}"), count=1)
    return None


def query_options(query: dict[str, Any], entity: dict[str, Any] | None, text: TextConfig) -> list[Option]:
    """Every text one query use can become, with normalised weights (they sum to 1)."""
    entity = entity or {}
    hierarchy = text.hierarchy_living if entity.get("domain") == "living" else text.hierarchy
    own, kin = 1.0 - hierarchy, hierarchy
    names, types, definitions, type_definitions = _levels(query, entity)
    said = query["text"]
    if query.get("kind") in NOUN_KINDS:
        weights = text.noun
        branches = [
            ("keep", weights.keep, [said]),
            ("synonym", weights.synonym * own, names),
            ("type_synonym", weights.synonym * kin, types),
            ("definition", weights.definition * own, definitions),
            ("type_definition", weights.definition * kin, type_definitions),
        ]
    else:
        weights = text.attr if query.get("kind") == "attr" else text.attrnoun
        branches = _attribute_branches(said, (query.get("attribute") or "").strip(), names, types, definitions,
                                       type_definitions, weights, own, kin)
    flat: list[Option] = [(option, weight / len(texts), branch)
                          for branch, weight, texts in branches if weight > 0 and texts for option in texts]
    kept: dict[str, Option] = {}
    for option in sorted(flat, key=lambda item: -item[1]):  # stable: equal weights keep branch order
        kept.setdefault(option[0], option)
    total = sum(weight for _, weight, _ in kept.values())
    if total <= 0:  # every weight zero: the query itself
        return [(said, 1.0, "keep")]
    return [(option, weight / total, branch) for option, weight, branch in kept.values()]


def _levels(query: dict[str, Any], entity: dict[str, Any]) -> tuple[list[str], list[str], list[str], list[str]]:
    """(names, names of the level above, definitions, definitions of the level above) of what the
    query names: the entity, or for a type-level attr query its natural type."""
    names, types = entity_names(entity), natural_type_names(entity)
    definitions, type_definitions = _unique([entity.get("description")]), _unique([entity.get("natural_type_description")])
    if query.get("kind") == "attr" and _replace_name(query["text"], names) is None:
        # "spotted big cat" serves leopard, jaguar and cheetah alike: naming one of them would
        # spread their names over every image of the query. The type's own type is not in the row.
        return types, [], type_definitions, []
    return names, types, definitions, type_definitions


def _attribute_branches(said: str, attribute: str, names: list[str], types: list[str], definitions: list[str],
                        type_definitions: list[str], weights: AttributeTextConfig, own: float,
                        kin: float) -> list[tuple[str, float, list[str]]]:
    def pseudo(nouns: list[str]) -> list[str]:
        return [form for noun in nouns for form in (f"{attribute} {noun}", f"{noun} {attribute}")] if attribute else []

    # only a name of the level the query names is cut out (as the authors do): cutting the type's
    # name and filling in the entity's turned "cat food" into "leopard food"
    template = _replace_name(said, names)
    return [
        ("keep", weights.keep, [said]),
        ("synonym", weights.synonym * own, names),
        ("type_synonym", weights.synonym * kin, types),
        ("pseudo_query", weights.pseudo_query * own, pseudo(names)),
        ("type_pseudo_query", weights.pseudo_query * kin, pseudo(types)),
        ("replace_entity", weights.replace_entity * own, [template.format(n) for n in names] if template else []),
        ("type_replace_entity", weights.replace_entity * kin, [template.format(n) for n in types] if template else []),
        ("attribute_only", weights.attribute_only, [attribute] if attribute else []),
        ("definition", weights.definition * own, definitions),
        ("type_definition", weights.definition * kin, type_definitions),
    ]


def alt_texts(row: dict[str, Any]) -> list[str]:
    return _unique(row.get("alt_texts") or [])


def sample_text(row: dict[str, Any], text: TextConfig, seed: int, epoch: int | str) -> str:
    """The text ``row``'s image is paired with at ``epoch``."""
    rng = rng_for(seed, epoch, row["image_id"], "text")
    alts, queries = alt_texts(row), row.get("queries") or []
    if alts and (not queries or rng.random() < text.alt_text):
        return rng.choice(alts)
    if not queries:
        raise ValueError(f"image {row['image_id']} has neither an alt text nor a query to be paired with")
    # each query once, as the authors pick among an image's query hashes: a row lists a query once
    # per use, and an attr query has a use for every entity of its natural type with the attribute
    by_query: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for use in queries:
        by_query.setdefault((use["text"], use.get("kind") or ""), []).append(use)
    uses = rng.choice(list(by_query.values()))
    query = uses[0] if len(uses) == 1 else rng.choice(uses)
    entity = next((e for e in row.get("entities") or [] if e.get("id") == query.get("entity_id")), None)
    options = query_options(query, entity, text)
    return rng.choices([option for option, _, _ in options], weights=[weight for _, weight, _ in options])[0]


def training_texts(rows: Iterable[dict[str, Any]], text: TextConfig) -> Iterator[str]:
    """Every text an image may be paired with: what a tokenizer is trained on."""
    for row in rows:
        yield from alt_texts(row)
        entities = {e.get("id"): e for e in row.get("entities") or []}
        for query in row.get("queries") or []:
            for option, _, _ in query_options(query, entities.get(query.get("entity_id")), text):
                yield option
