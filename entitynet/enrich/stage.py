"""The enrich stage: RUN/entities.parquet -> RUN/natural_types.parquet + RUN/attributes.parquet.

Two passes over the entities, both streaming: the first ranks them per root by sitelinks to find
the top K that get attributes (only ids are kept), the second chooses natural types and makes
attributes, a chunk of entities at a time so LLM requests can run concurrently while the output
keeps the input order. WordNet entities have no sitelinks; they rank in harvest order.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from entitynet import layout
from entitynet.config import Config, EnrichConfig
from entitynet.enrich import prompts
from entitynet.enrich.attributes import AttributeStats, Vocabulary, kg_attributes, load_vocabulary
from entitynet.enrich.llm import Answer, CachedChat, OpenAIChat, Request, TransformersChat
from entitynet.enrich.natural_types import candidates, choose
from entitynet.records import Attribute, Entity, NaturalType
from entitynet.rundir import Context
from entitynet.tables import (
    ATTRIBUTE_SCHEMA,
    NATURAL_TYPE_SCHEMA,
    RecordWriter,
    attribute_to_row,
    natural_type_to_row,
    read_entities,
)

logger = logging.getLogger(__name__)

CHUNK = 256  # entities whose LLM requests are in flight together


def top_k_per_root(entities_path: Path, k: int) -> set[str]:
    """Ids of the K most linked entities of every root (ties: harvest order)."""
    best: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for position, entity in enumerate(read_entities(entities_path)):
        heap = best[entity.root]
        item = (entity.sitelinks or 0, -position, entity.id)
        if len(heap) < k:
            heapq.heappush(heap, item)
        elif k and item > heap[0]:
            heapq.heapreplace(heap, item)
    return {entity_id for heap in best.values() for _, _, entity_id in heap}


class Enricher:
    """Natural types and attributes for chunks of entities, with the configured backends."""

    def __init__(self, config: EnrichConfig, cache_dir: Path) -> None:
        self.config = config
        self.vocabulary: Vocabulary = load_vocabulary(config.attributes.vocabulary)
        self.cache_dir = cache_dir
        self._models: dict[str, CachedChat] = {}
        self.reasons: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()  # repairs and drops of LLM answers
        self.attribute_stats = AttributeStats()

    def model(self, backend: str) -> CachedChat:
        """The chat model of a backend, made on first use (a kg-only run never loads one)."""
        if backend not in self._models:
            if backend == "llm":
                llm = self.config.llm
                chat = OpenAIChat(llm)
                concurrency = llm.concurrency
            else:
                local = self.config.transformers
                chat = TransformersChat(local.model, local.max_new_tokens, local.device)
                concurrency = 1
            self._models[backend] = CachedChat(chat, self.cache_dir / "llm", concurrency)
        return self._models[backend]

    def natural_types(self, chunk: list[Entity]) -> list[NaturalType]:
        chooser = self.config.natural_type.chooser
        if chooser == "kg":
            return [choose(entity, self.config.natural_type) for entity in chunk]
        chat = self.model(chooser)
        return list(chat.map(chunk, self._natural_type_request, lambda e, a: self._natural_type_answer(chat, e, a)))

    def _natural_type_request(self, entity: Entity) -> Request | None:
        labels = [candidate.label for candidate in candidates(entity, self.config.natural_type)]
        if not labels and not self.config.natural_type.ask_visual:
            return None  # nothing to choose from: the rule's root fallback decides
        fallback = choose(entity, self.config.natural_type).natural_type or entity.name
        return prompts.natural_type_prompt(entity, labels or [fallback], self.config.natural_type.ask_visual)

    def _natural_type_answer(self, chat: CachedChat, entity: Entity, answer: Answer | None) -> NaturalType:
        rule = choose(entity, self.config.natural_type)
        if answer is None:
            return rule
        labels = [candidate.label for candidate in rule.candidates] or [rule.natural_type or entity.name]
        value = prompts.extract_json(answer.content, self.answers)
        chosen, visual = prompts.check_natural_type(value, labels, self.config.natural_type.ask_visual, self.answers)
        name = f"{self.config.natural_type.chooser}:{chat.model.name}"
        if chosen is None:  # nothing usable: the documented rule decides, and that is recorded
            return NaturalType(entity.id, rule.natural_type, f"{rule.reason}_after_invalid_answer", name, rule.candidates, visual)
        return NaturalType(entity.id, chosen, "model", name, rule.candidates, visual)

    def attributes(self, pairs: list[tuple[Entity, NaturalType]]) -> list[list[Attribute]]:
        backend = self.config.attributes.backend
        limit = self.config.attributes.max_per_category
        if backend == "kg":
            return [kg_attributes(e, n.natural_type, self.vocabulary, limit, self.attribute_stats) for e, n in pairs]
        chat = self.model(backend)
        return list(chat.map(pairs, self._attribute_request, lambda pair, a: self._attribute_answer(chat, pair, a)))

    def _base(self, entity: Entity, natural_type: str | None) -> str:
        base = self.vocabulary.pick(entity, natural_type)[1].name
        return base if base in prompts.CATEGORIES_BY_BASE else "other"

    def _attribute_request(self, pair: tuple[Entity, NaturalType]) -> Request:
        entity, natural = pair
        return prompts.attribute_prompt(entity, self._base(entity, natural.natural_type), self.config.attributes.max_per_category)

    def _attribute_answer(self, chat: CachedChat, pair: tuple[Entity, NaturalType], answer: Answer | None) -> list[Attribute]:
        entity, natural = pair
        if answer is None:
            return []
        base = self._base(entity, natural.natural_type)
        value = prompts.extract_json(answer.content, self.answers)
        items = prompts.check_attributes(value, entity, base, self.config.attributes.max_per_category, self.answers)
        name = f"{self.config.attributes.backend}:{chat.model.name}"
        made = [Attribute(entity.id, category, attribute, query, name) for category, attribute, query in items]  # type: ignore[arg-type]
        for attribute in made:
            self.attribute_stats.per_category[attribute.category] += 1
            self.attribute_stats.per_source[self.config.attributes.backend] += 1
        self.attribute_stats.entities += bool(made)
        return made

    def stats(self) -> dict[str, Any]:
        models = {backend: chat.stats.as_dict() for backend, chat in self._models.items()}
        return {"answers": dict(sorted(self.answers.items())), "models": models} if models else {}


def enrich(config: EnrichConfig, entities_path: Path, types_path: Path, attributes_path: Path, cache_dir: Path) -> dict[str, Any]:
    enricher = Enricher(config, cache_dir)
    chosen_for_attributes = top_k_per_root(entities_path, config.attributes.top_k_per_root)
    entities = 0
    non_visual = 0
    with (
        RecordWriter[NaturalType](types_path, NATURAL_TYPE_SCHEMA, natural_type_to_row) as types,
        RecordWriter[Attribute](attributes_path, ATTRIBUTE_SCHEMA, attribute_to_row) as attributes,
        tqdm(desc="enrich", unit="entity", disable=None, leave=False) as progress,
    ):
        stream = read_entities(entities_path)
        while chunk := list(itertools.islice(stream, CHUNK)):
            naturals = enricher.natural_types(chunk)
            for natural in naturals:
                enricher.reasons[natural.reason] += 1
                non_visual += natural.visual is False
                types.write(natural)
            wanted = [(e, n) for e, n in zip(chunk, naturals) if e.id in chosen_for_attributes and n.visual is not False]
            for made in enricher.attributes(wanted):
                attributes.write_all(made)
            entities += len(chunk)
            progress.update(len(chunk))
    return {
        "entities": entities,
        "natural_types": {"chooser": config.natural_type.chooser, "reasons": dict(sorted(enricher.reasons.items())),
                          "non_visual": non_visual},
        "attributes": {"backend": config.attributes.backend, "total": attributes.count, **enricher.attribute_stats.as_dict()},
        **({"llm": enricher.stats()} if enricher.stats() else {}),
    }


def settings(config: Config, context: Context) -> dict[str, Any]:
    return {"enrich": config.enrich}


def make(config: Config, context: Context) -> dict[str, Any]:
    return enrich(config.enrich, context.path(layout.ENTITIES), context.path(layout.NATURAL_TYPES),
                  context.path(layout.ATTRIBUTES), context.cache)


def summary(stats: dict[str, Any]) -> str:
    types = stats.get("natural_types", {})
    attributes = stats.get("attributes", {})
    lines = [
        f"entities: {stats.get('entities', 0)}",
        "natural types by rule: " + ", ".join(f"{k}: {v}" for k, v in types.get("reasons", {}).items()),
        f"attributes: {attributes.get('total', 0)} for {attributes.get('entities_with_attributes', 0)} entities",
        "  per category: " + ", ".join(f"{k}: {v}" for k, v in attributes.get("per_category", {}).items()),
        "  per source: " + ", ".join(f"{k}: {v}" for k, v in attributes.get("per_source", {}).items()),
    ]
    if types.get("non_visual"):
        lines.append(f"non-visual entities dropped: {types['non_visual']}")
    llm = stats.get("llm")
    if llm:
        for backend, model in llm["models"].items():
            lines.append(
                f"{backend}: {model['calls']} calls, {model['cache_hits']} from cache, {model['http']['retries']} retries, "
                f"{model['prompt_tokens']}+{model['completion_tokens']} tokens"
            )
        if llm["answers"]:
            lines.append("  answers: " + ", ".join(f"{k}: {v}" for k, v in llm["answers"].items()))
    return "\n".join(lines)
