"""The kg stage: WordNet and Wikidata entities -> RUN/entities.parquet, with a summary.

WordNet (small, in memory) is read first so that Wikidata entities, streamed root by root, can
claim their synsets as they pass (``merge``); the synsets nobody claimed follow them.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from entitynet import layout
from entitynet.config import Config, KgConfig
from entitynet.kg.merge import WordNetMerger
from entitynet.kg.sparql import HttpTransport, SparqlClient, Transport, open_dump
from entitynet.kg.wikidata import WikidataHarvester
from entitynet.kg.wordnet import WordNetHarvester, load_wordnet
from entitynet.records import Entity
from entitynet.rundir import Context
from entitynet.tables import entity_writer

logger = logging.getLogger(__name__)


def make_transport(config: KgConfig, cache_dir: Path) -> Transport:
    if config.sparql.dump:
        return open_dump(Path(config.sparql.dump), cache_dir)
    return HttpTransport(config.sparql)


def make_client(config: KgConfig, cache_dir: Path) -> SparqlClient:
    return SparqlClient(make_transport(config, cache_dir), cache_dir / "sparql")


def harvest(config: KgConfig, cache_dir: Path, output: Path) -> dict[str, Any]:
    """Write every entity to ``output`` (atomically) and return the stage's statistics."""
    synsets: list[Entity] = []
    wordnet = None
    if "wordnet" in config.sources:
        wordnet = WordNetHarvester(load_wordnet(config.wordnet.data_dir), config.wordnet, config.limit_per_root)
        synsets = list(wordnet.entities())
        logger.info("wordnet: %d synsets", len(synsets))
    merger = WordNetMerger(synsets)
    summary: Counter[tuple[str, str, str]] = Counter()
    stats: dict[str, Any] = {}
    with entity_writer(output) as writer:
        if "wikidata" in config.sources:
            client = make_client(config, cache_dir)
            harvester = WikidataHarvester(client, config)
            logger.info("wikidata: harvesting from %s", client.transport.name)
            for entity in harvester.entities():
                entity = merger.merge(entity)
                summary[(entity.source, entity.root, entity.domain)] += 1
                writer.write(entity)
            stats["wikidata"] = {"endpoint": client.transport.name, **harvester.stats.as_dict(), "sparql": client.stats.as_dict()}
        for synset in merger.remaining():
            summary[(synset.source, synset.root, synset.domain)] += 1
            writer.write(synset)
        if wordnet is not None:
            stats["wordnet"] = {"per_root": dict(wordnet.per_root), "merged_into_wikidata": dict(merger.merged)}
    stats["entities"] = writer.count
    stats["summary"] = [
        {"source": source, "root": root, "domain": domain, "entities": count}
        for (source, root, domain), count in sorted(summary.items())
    ]
    return stats


def settings(config: Config, context: Context) -> dict[str, Any]:
    return {"domain": config.domain, "kg": config.kg}


def make(config: Config, context: Context) -> dict[str, Any]:
    return harvest(config.kg, context.cache, context.path(layout.ENTITIES))


def summary(stats: dict[str, Any]) -> str:
    """Entities per source, root and domain, as a plain-text table, then merges and drops."""
    rows = [("source", "root", "domain", "entities")]
    rows += [(r["source"], r["root"], r["domain"], str(r["entities"])) for r in stats.get("summary", [])]
    rows.append(("total", "", "", str(stats.get("entities", 0))))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]

    def line(cells: tuple[str, ...]) -> str:
        *text, number = cells
        return "  ".join([cell.ljust(width) for cell, width in zip(text, widths)] + [number.rjust(widths[3])])

    sources = ", ".join(f"{name} {sum(r['entities'] for r in stats.get('summary', []) if r['source'] == name)}"
                        for name in dict.fromkeys(r["source"] for r in stats.get("summary", [])))
    lines = [f"{stats.get('entities', 0)} entities ({sources or 'none'})",
             line(rows[0]), line(tuple("-" * width for width in widths))] + [line(row) for row in rows[1:]]
    merged = stats.get("wordnet", {}).get("merged_into_wikidata")
    if merged:
        reasons = ", ".join(f"by {rule}: {count}" for rule, count in merged.items())
        lines.append(f"WordNet synsets merged into Wikidata entities: {sum(merged.values())} ({reasons})")
    dropped = stats.get("wikidata", {}).get("dropped")
    if dropped:
        lines.append("Wikidata items dropped: " + ", ".join(f"{reason}: {count}" for reason, count in dropped.items()))
    return "\n".join(lines)
