"""Visual attributes from the knowledge graph (the ``kg`` backend): deterministic, offline.

Two sources, in this order, each attribute with a search query that contains the entity's name:

1. the entity's own statements about looks (kg stage ``visual_facts``): colour P462 -> "white
   polar bear", has part P527 -> "bicycle wheel", made from material P186 and has
   characteristic P1552 -> "wood chair";
2. a vocabulary of generic attributes (``vocabulary.yaml``) for the first group that matches the
   entity (its natural type, an ancestor's label or id, its root) and its base kind (animal,
   plant, fungus or other), which also fixes the categories allowed (plants have no behaviour).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, get_args

import yaml

from entitynet.records import Attribute, AttributeCategory, Entity
from entitynet.typed_config import ConfigError

CATEGORIES: tuple[str, ...] = get_args(AttributeCategory)
# property -> (category, query template with {value} and {name})
FACT_TEMPLATES = {
    "P462": ("color", "{value} {name}"),
    "P527": ("parts", "{name} {value}"),
    "P186": ("other", "{value} {name}"),
    "P1552": ("other", "{value} {name}"),
}


@dataclass(frozen=True)
class Group:
    name: str
    match: frozenset[str]
    attributes: dict[str, list[str]]  # category -> templates with one "{}"
    categories: tuple[str, ...] = CATEGORIES


@dataclass(frozen=True)
class Vocabulary:
    groups: list[Group]
    bases: list[Group]

    def pick(self, entity: Entity, natural_type: str | None) -> tuple[Group | None, Group]:
        keys = {entity.root.casefold()}
        keys.update(text.casefold() for a in entity.ancestors for text in (a.id, a.label or ""))
        if natural_type:
            keys.add(natural_type.casefold())
        group = next((g for g in self.groups if g.match & keys), None)
        base = next((b for b in self.bases if b.match & keys), None)
        if base is None:  # living things nobody classified are still organisms, not artefacts
            wanted = "animal" if entity.domain == "living" else "other"
            base = next((b for b in self.bases if b.name == wanted), self.bases[-1])
        return group, base


def load_vocabulary(path: str | None = None) -> Vocabulary:
    """The shipped vocabulary, or a user's file of the same shape (checked: it names key and file)."""
    source = Path(path) if path else Path(str(resources.files("entitynet.enrich") / "vocabulary.yaml"))
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{source}: cannot read the attribute vocabulary: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("bases"), list) or not data["bases"]:
        raise ConfigError(f"{source}: needs 'groups' and a non-empty 'bases' list")
    return Vocabulary(
        [_group(item, f"{source}: groups[{i}]") for i, item in enumerate(data.get("groups") or [])],
        [_group(item, f"{source}: bases[{i}]") for i, item in enumerate(data["bases"])],
    )


def _group(item: Any, where: str) -> Group:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ConfigError(f"{where}: needs a name, match and attributes")
    attributes = item.get("attributes") or {}
    for category, templates in attributes.items():
        if category not in CATEGORIES:
            raise ConfigError(f"{where}.attributes.{category}: unknown category; use one of {', '.join(CATEGORIES)}")
        for template in templates:
            if not isinstance(template, str) or template.count("{}") != 1:
                raise ConfigError(f"{where}.attributes.{category}: {template!r} must contain '{{}}' exactly once")
    categories = tuple(item.get("categories") or CATEGORIES)
    unknown = set(categories) - set(CATEGORIES)
    if unknown:
        raise ConfigError(f"{where}.categories: unknown {sorted(unknown)}")
    match = frozenset(str(text).casefold() for text in item.get("match") or [])
    return Group(item["name"], match, {c: list(t) for c, t in attributes.items()}, categories)


@dataclass
class AttributeStats:
    per_category: Counter[str] = field(default_factory=Counter)
    per_source: Counter[str] = field(default_factory=Counter)
    per_group: Counter[str] = field(default_factory=Counter)
    entities: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "entities_with_attributes": self.entities,
            "per_category": dict(sorted(self.per_category.items())),
            "per_source": dict(sorted(self.per_source.items())),
            "per_group": dict(sorted(self.per_group.items())),
        }


def kg_attributes(
    entity: Entity, natural_type: str | None, vocabulary: Vocabulary, max_per_category: int, stats: AttributeStats
) -> list[Attribute]:
    group, base = vocabulary.pick(entity, natural_type)
    proposals: list[tuple[str, str, str, str]] = []  # category, attribute, query, source
    for fact in entity.visual_facts:
        if fact.label and fact.property in FACT_TEMPLATES:
            category, template = FACT_TEMPLATES[fact.property]
            query = template.format(value=fact.label, name=entity.name)
            proposals.append((category, fact.label, query, f"statement:{fact.property}"))
    for source in [g for g in (group, base) if g is not None]:
        for category, templates in source.attributes.items():
            for template in templates:
                attribute = " ".join(template.replace("{}", " ").split())
                proposals.append((category, attribute, template.replace("{}", entity.name), f"vocabulary:{source.name}"))

    kept: list[Attribute] = []
    seen: set[str] = set()
    per_category: Counter[str] = Counter()
    for category, attribute, query, source in proposals:
        key = query.casefold()
        if category not in base.categories or key in seen or per_category[category] >= max_per_category:
            continue
        seen.add(key)
        per_category[category] += 1
        stats.per_category[category] += 1
        stats.per_source[source.partition(":")[0]] += 1
        kept.append(Attribute(entity.id, category, attribute, query, "kg"))  # type: ignore[arg-type]
    if kept:
        stats.entities += 1
        stats.per_group[group.name if group else f"base:{base.name}"] += 1
    return kept
