"""Prompts and JSON schemas for the LLM backends, and the checks their answers must pass.

Answers are repaired where that is safe (a JSON object inside a markdown fence or prose is taken
out; too many items are cut to the limit; repeated items are removed) and otherwise dropped
(unparseable or truncated JSON, a natural type that is not a candidate, a query that does not
name the entity, an unknown category). Every repair and drop is counted by reason.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from entitynet.records import Entity

NATURAL_TYPE_SYSTEM = (
    "You name things the way people do. Given an entity and candidate classes from a knowledge graph, "
    "pick the class a person would use to name it in everyday speech: neither too general ('animal', "
    "'object') nor too specific. Answer with JSON only."
)
VISUAL_QUESTION = (
    " Also say whether the entity can be photographed as a recognisable thing "
    "(\"visual\": true for a dog, a chair, a lake; false for an idea, a law, a process)."
)

ATTRIBUTE_SYSTEM = (
    "You write image-search queries that show visual attributes of a thing. For each category give at "
    "most {limit} attributes that a photo could show, each with a short search query that contains the "
    "entity's name exactly as given. Answer with JSON only, one key per category."
)

CATEGORIES_BY_BASE = {
    "animal": ["color", "pattern", "parts", "behavior", "shape", "environment", "other"],
    "plant": ["color", "pattern", "parts", "shape", "environment", "other"],
    "fungus": ["color", "pattern", "parts", "shape", "environment", "other"],
    "other": ["color", "pattern", "parts", "shape", "environment", "other"],
}

# One worked example per base: the model sees the shape and the level of detail we want.
EXAMPLES = {
    "animal": ("zebra", {
        "color": [{"attribute": "black and white", "query": "black and white zebra"}],
        "pattern": [{"attribute": "striped", "query": "zebra stripes close-up"}],
        "parts": [{"attribute": "mane", "query": "zebra mane"}],
        "behavior": [{"attribute": "grazing", "query": "zebra grazing"}],
        "shape": [{"attribute": "foal", "query": "zebra foal"}],
        "environment": [{"attribute": "savanna", "query": "zebra in the savanna"}],
        "other": [{"attribute": "herd", "query": "herd of zebra"}],
    }),
    "plant": ("sunflower", {
        "color": [{"attribute": "yellow", "query": "yellow sunflower"}],
        "pattern": [{"attribute": "spiral seeds", "query": "sunflower seed spiral"}],
        "parts": [{"attribute": "flower head", "query": "sunflower flower head"}],
        "shape": [{"attribute": "tall stem", "query": "tall sunflower stem"}],
        "environment": [{"attribute": "field", "query": "sunflower field"}],
        "other": [{"attribute": "wilted", "query": "wilted sunflower"}],
    }),
    "fungus": ("fly agaric", {
        "color": [{"attribute": "red cap", "query": "red fly agaric cap"}],
        "pattern": [{"attribute": "white spots", "query": "fly agaric white spots"}],
        "parts": [{"attribute": "gills", "query": "fly agaric gills"}],
        "shape": [{"attribute": "young button", "query": "young fly agaric button"}],
        "environment": [{"attribute": "birch forest", "query": "fly agaric in a birch forest"}],
        "other": [{"attribute": "cluster", "query": "cluster of fly agaric"}],
    }),
    "other": ("bicycle", {
        "color": [{"attribute": "red", "query": "red bicycle"}],
        "pattern": [{"attribute": "chrome", "query": "chrome bicycle"}],
        "parts": [{"attribute": "handlebar", "query": "bicycle handlebar"}],
        "shape": [{"attribute": "folding", "query": "folding bicycle"}],
        "environment": [{"attribute": "city street", "query": "bicycle on a city street"}],
        "other": [{"attribute": "vintage", "query": "vintage bicycle"}],
    }),
}


def natural_type_prompt(entity: Entity, candidates: list[str], ask_visual: bool) -> tuple[list[dict[str, str]], dict[str, Any]]:
    question = {
        "entity": entity.name,
        "description": entity.description or "",
        "candidates": candidates,
    }
    instruction = 'Answer {"natural_type": <one of the candidates, copied exactly>'
    instruction += ', "visual": <true|false>}.' if ask_visual else "}."
    system = NATURAL_TYPE_SYSTEM + (VISUAL_QUESTION if ask_visual else "")
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": json.dumps({"entity": "dachshund", "description": "dog breed",
                                                "candidates": ["hunting dog", "dog", "mammal", "organism"]})},
        {"role": "assistant", "content": json.dumps({"natural_type": "dog", **({"visual": True} if ask_visual else {})})},
        {"role": "user", "content": json.dumps(question) + "\n" + instruction},
    ]
    properties: dict[str, Any] = {"natural_type": {"type": "string", "enum": candidates}}
    if ask_visual:
        properties["visual"] = {"type": "boolean"}
    schema = {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
    return messages, schema


def attribute_prompt(entity: Entity, base: str, limit: int) -> tuple[list[dict[str, str]], dict[str, Any]]:
    categories = CATEGORIES_BY_BASE[base]
    example_name, example = EXAMPLES[base]
    messages = [
        {"role": "system", "content": ATTRIBUTE_SYSTEM.format(limit=limit)},
        {"role": "user", "content": json.dumps({"entity": example_name, "categories": categories})},
        {"role": "assistant", "content": json.dumps({c: example.get(c, []) for c in categories})},
        {"role": "user", "content": json.dumps({"entity": entity.name, "description": entity.description or "", "categories": categories})},
    ]
    item = {
        "type": "object",
        "properties": {"attribute": {"type": "string"}, "query": {"type": "string"}},
        "required": ["attribute", "query"],
        "additionalProperties": False,
    }
    schema = {
        "type": "object",
        "properties": {c: {"type": "array", "items": item, "maxItems": limit} for c in categories},
        "required": categories,
        "additionalProperties": False,
    }
    return messages, schema


_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```\s*$", re.DOTALL)


def extract_json(text: str, counts: Counter[str]) -> dict[str, Any] | None:
    """The JSON object in an answer, repairing fences and surrounding prose; None if there is none."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
        counts["repaired_fence"] += 1
    try:
        value = json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            counts["dropped_unparseable"] += 1
            return None
        try:
            value = json.loads(text[start : end + 1])
        except ValueError:
            counts["dropped_unparseable"] += 1
            return None
        counts["repaired_prose_around_json"] += 1
    if not isinstance(value, dict):
        counts["dropped_not_an_object"] += 1
        return None
    return value


def check_natural_type(
    value: dict[str, Any] | None, candidates: list[str], ask_visual: bool, counts: Counter[str]
) -> tuple[str | None, bool | None]:
    """(natural type among the candidates or None, visual or None)."""
    if value is None:
        return None, None
    answer = value.get("natural_type")
    by_key = {candidate.casefold(): candidate for candidate in candidates}
    chosen = by_key.get(answer.strip().casefold()) if isinstance(answer, str) else None
    if chosen is None:
        counts["dropped_not_a_candidate"] += 1
    visual = value.get("visual") if ask_visual else None
    if ask_visual and not isinstance(visual, bool):
        counts["dropped_visual_missing"] += 1
        visual = None
    return chosen, visual


def check_attributes(
    value: dict[str, Any] | None, entity: Entity, base: str, limit: int, counts: Counter[str]
) -> list[tuple[str, str, str]]:
    """(category, attribute, query) items that pass; the rest counted by reason."""
    if value is None:
        return []
    allowed = CATEGORIES_BY_BASE[base]
    names = [name.casefold() for name in [entity.name, *entity.aliases] if name]
    kept: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for category, items in value.items():
        if category not in allowed:
            counts["dropped_unknown_category"] += 1
            continue
        if not isinstance(items, list):
            counts["dropped_malformed_item"] += 1
            continue
        taken = 0
        for item in items:
            attribute = item.get("attribute") if isinstance(item, dict) else None
            query = item.get("query") if isinstance(item, dict) else None
            if not isinstance(attribute, str) or not isinstance(query, str) or not attribute.strip() or not query.strip():
                counts["dropped_malformed_item"] += 1
                continue
            attribute, query = " ".join(attribute.split()), " ".join(query.split())
            if not any(_contains_word(query.casefold(), name) for name in names):
                counts["dropped_query_without_name"] += 1
                continue
            if query.casefold() in seen:
                counts["dropped_duplicate"] += 1
                continue
            if taken >= limit:
                counts["cut_over_limit"] += 1
                continue
            seen.add(query.casefold())
            taken += 1
            kept.append((category, attribute, query))
    return kept


def _contains_word(text: str, name: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text) is not None
