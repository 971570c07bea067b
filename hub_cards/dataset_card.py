"""The dataset card: statistics read from the built folder, rendered from the Jinja template
with ``huggingface_hub.DatasetCard.from_template`` and ``DatasetCardData`` (YAML header with
licence, tasks, sizes, tags, the two configurations and their features)."""

from __future__ import annotations

from collections import Counter
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from entitynet.builders.entitynet import CITATION, FEATURES, SPLITS
from entitynet.hub_cards import figures
from entitynet.hub_cards.model_card import record_id


def size_category(rows: int) -> str:
    for limit, name in [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]:
        if rows < limit:
            return name
    return "100M<n<1B"


def configs(rows_per_config: dict[str, Counter[str]], has_other: bool) -> list[dict[str, Any]]:
    """The card's ``configs``: each config lists only the splits it has rows in (a declared split
    without files, or one missing from ``dataset_info``, makes load_dataset fail), and a config
    without rows is not declared."""
    everything = "data/*/{split}-*" if has_other else "data/living/{split}-*"
    paths = {"entitynet": everything, "livingthings": "data/living/{split}-*"}
    declared = []
    for name, pattern in paths.items():
        splits = [s for s in SPLITS if rows_per_config[name].get(s)]
        if splits:
            declared.append({"config_name": name, "data_files": [{"split": s, "path": pattern.format(split=s)} for s in splits]})
    declared[0]["default"] = True  # entitynet: every row is in it
    return declared


def statistics(folder: Path) -> dict[str, Any]:
    """Counts read from the built parquet files (no image is decoded)."""
    columns = ["entities", "alt_texts", "queries", "engines", "license", "domain"]
    rows_per: dict[str, Counter[str]] = {"entitynet": Counter(), "livingthings": Counter()}
    per_entity: Counter[str] = Counter()
    natural_types: Counter[str] = Counter()
    engines: Counter[str] = Counter()
    licences: Counter[str] = Counter()
    alt_texts: set[str] = set()
    query_texts: set[str] = set()
    for path in sorted(folder.glob("data/*/*.parquet")):
        split = path.name.split("-")[0]
        for batch in pq.ParquetFile(path).iter_batches(columns=columns):
            for row in batch.to_pylist():
                rows_per["entitynet"][split] += 1
                if row["domain"] == "living":
                    rows_per["livingthings"][split] += 1
                for entity in row["entities"]:
                    per_entity[entity["id"]] += 1
                for natural in {e["natural_type"] for e in row["entities"] if e["natural_type"]}:
                    natural_types[natural] += 1
                engines.update(set(row["engines"]))
                licences[row["license"] or "unknown"] += 1
                alt_texts.update(row["alt_texts"])
                query_texts.update(q["text"] for q in row["queries"])
    return {"rows_per_config": rows_per, "per_entity": per_entity, "natural_types": natural_types,
            "engines": engines, "licences": licences, "alt_texts": len(alt_texts), "query_texts": len(query_texts)}


def split_bytes(folder: Path) -> dict[str, Counter[str]]:
    """Uncompressed bytes per config and split, from the parquet metadata."""
    sizes: dict[str, Counter[str]] = {"entitynet": Counter(), "livingthings": Counter()}
    for path in folder.glob("data/*/*.parquet"):
        split = path.name.split("-")[0]
        metadata = pq.read_metadata(path)
        size = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
        sizes["entitynet"][split] += size
        if path.parent.name == "living":
            sizes["livingthings"][split] += size
    return sizes


def samples(folder: Path, count: int) -> list[tuple[bytes, str]]:
    found: list[tuple[bytes, str]] = []
    for path in sorted(folder.glob("data/*/train-*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(columns=["image", "alt_texts"], batch_size=count):
            for row in batch.to_pylist():
                found.append((row["image"]["bytes"], (row["alt_texts"] or [""])[0]))
                if len(found) >= count:
                    return found
    return found


def write_card(folder: Path, context: dict[str, Any], *, pretty_name: str, repo_id: str, sample_count: int) -> dict[str, Any]:
    """README.md and images/*.png in ``folder``; returns the statistics it shows."""
    from huggingface_hub import DatasetCard, DatasetCardData

    stats = statistics(folder)
    figures.sample_grid(samples(folder, sample_count), folder / "images" / "sample_grid.png")
    figures.images_per_entity(stats["per_entity"], folder / "images" / "images_per_entity.png")
    total = sum(stats["rows_per_config"]["entitynet"].values())
    has_other = any(folder.glob("data/other/*.parquet"))
    sizes = split_bytes(folder)
    info = [{"config_name": name, "features": FEATURES._to_yaml_list(),
             "splits": [{"name": s, "num_bytes": sizes[name].get(s, 0), "num_examples": counts[s]} for s in SPLITS if counts.get(s)]}
            for name, counts in stats["rows_per_config"].items() if sum(counts.values())]
    declared = configs(stats["rows_per_config"], has_other)
    names = [config["config_name"] for config in declared]
    card_data = DatasetCardData(
        license="other", license_name="various-source-licenses", pretty_name=pretty_name,
        task_categories=["zero-shot-image-classification", "image-to-text", "text-to-image"],
        size_categories=[size_category(total)], language=["en"], tags=["clip", "knowledge-graph", "wikidata", "wordnet", "entitynet"],
        configs=declared, dataset_info=info,
    )
    template = Path(str(resources.files("entitynet.hub_cards") / "dataset_card.md"))
    # test_seen exists only when the build held images out for it: otherwise it is not a column
    shown = [s for s in SPLITS if s != "test_seen" or any(c.get(s) for c in stats["rows_per_config"].values())]
    card = DatasetCard.from_template(
        card_data, template_path=str(template), pretty_name=pretty_name, repo_id=repo_id, splits=shown,
        rows_per_config={k: dict(v) for k, v in stats["rows_per_config"].items() if k in names},
        example_config="livingthings" if "livingthings" in names else "entitynet",
        undeclared=[f"{name}/{split}" for name, counts in stats["rows_per_config"].items() for split in shown if not counts.get(split)],
        entities=len(stats["per_entity"]), alt_texts=stats["alt_texts"], query_texts=stats["query_texts"],
        natural_types=stats["natural_types"].most_common(15), engines=stats["engines"].most_common(),
        licences=stats["licences"].most_common(20), citation=CITATION.strip(), built_on=date.today().isoformat(),
        **context,
    )
    card.save(folder / "README.md")
    record_id(folder, repo_id, pushed=False)  # model cards file results under it until a push says where it went
    return {"rows": total, "entities": len(stats["per_entity"]),
            "rows_per_config": {k: dict(v) for k, v in stats["rows_per_config"].items() if k in names}}
