"""The enrich stage: RUN/entities.parquet -> RUN/natural_types.parquet + RUN/attributes.parquet.

Two passes over the entities, both streaming: the first ranks them per root by sitelinks to find
the top K that get attributes (only ids are kept), the second chooses natural types and makes
attributes. WordNet entities have no sitelinks; they rank in harvest order (most frequent first).
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from entitynet.config import Config, EnrichConfig
from entitynet.enrich.attributes import AttributeStats, kg_attributes, load_vocabulary
from entitynet.enrich.natural_types import choose
from entitynet.kg.stage import ARTIFACT as ENTITIES
from entitynet.records import Attribute, NaturalType
from entitynet.rundir import RunDir, StageResult
from entitynet.tables import (
    ATTRIBUTE_SCHEMA,
    NATURAL_TYPE_SCHEMA,
    RecordWriter,
    attribute_to_row,
    natural_type_to_row,
    read_entities,
)
from entitynet.typed_config import to_dict

logger = logging.getLogger(__name__)

STAGE = "enrich"
NATURAL_TYPES = "natural_types.parquet"
ATTRIBUTES = "attributes.parquet"


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


def enrich(config: EnrichConfig, entities_path: Path, types_path: Path, attributes_path: Path) -> dict[str, Any]:
    vocabulary = load_vocabulary(config.attributes.vocabulary)
    chosen_for_attributes = top_k_per_root(entities_path, config.attributes.top_k_per_root)
    reasons: Counter[str] = Counter()
    attribute_stats = AttributeStats()
    entities = 0
    with (
        RecordWriter[NaturalType](types_path, NATURAL_TYPE_SCHEMA, natural_type_to_row) as types,
        RecordWriter[Attribute](attributes_path, ATTRIBUTE_SCHEMA, attribute_to_row) as attributes,
    ):
        for entity in tqdm(read_entities(entities_path), desc="enrich", unit="entity", disable=None, leave=False):
            entities += 1
            natural = choose(entity, config.natural_type)
            reasons[natural.reason] += 1
            types.write(natural)
            if entity.id in chosen_for_attributes:
                attributes.write_all(
                    kg_attributes(entity, natural.natural_type, vocabulary, config.attributes.max_per_category, attribute_stats)
                )
    return {
        "entities": entities,
        "natural_types": {"chooser": config.natural_type.chooser, "reasons": dict(sorted(reasons.items()))},
        "attributes": {"backend": config.attributes.backend, "total": attributes.count, **attribute_stats.as_dict()},
    }


def run(config: Config, run_dir: RunDir, force: bool = False) -> StageResult:
    outputs = [run_dir.path(NATURAL_TYPES), run_dir.path(ATTRIBUTES)]
    return run_dir.run_stage(
        STAGE,
        {"enrich": to_dict(config.enrich)},
        outputs,
        lambda: enrich(config.enrich, run_dir.path(ENTITIES), *outputs),
        force=force,
        requires=("kg",),
    )


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
    return "\n".join(lines)
