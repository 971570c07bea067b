"""What the report shows, read from the run's files: pure functions of the run directory.

Each function returns plain data (numbers, lists, dicts) or None where its files do not exist,
so the page can say what is missing. Nothing here draws or writes.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from entitynet import layout, pipeline
from entitynet.rundir import RunDir

# images per entity, the head/tail split the page shows
BUCKETS = (("0", 0, 0), ("1-9", 1, 9), ("10-99", 10, 99), ("100+", 100, None))
FAILURE_EXAMPLES = 3
TOP = 25  # rows of the longest tables (natural types, reasons)


def stages(run: RunDir) -> list[dict[str, Any]]:
    """Every stage of the flow: its status, time, finish and the key figures it recorded."""
    from entitynet.summary import _made_from_replaced_inputs, _stage_summary

    out, outdated = [], set()
    for entry in (*pipeline.STAGES, *pipeline.DOORS):
        state = run.state(entry.name)
        if state is None:
            if entry in pipeline.STAGES:
                out.append({"name": entry.name, "status": "not run"})
            continue
        if _made_from_replaced_inputs(run, state, outdated):
            outdated.add(entry.name)
        out.append({"name": entry.name, "status": "outdated" if entry.name in outdated else "finished",
                    "seconds": round(float(state.get("seconds", 0.0)), 1), "finished_at": str(state.get("finished_at") or "")[:16].replace("T", " "),
                    "summary": _stage_summary(entry, state.get("stats") or {})})
    return out


def configuration(run: RunDir) -> str | None:
    """The configuration that ran: RUN/config/run.yaml, else every stage's RUN/config/<stage>.yaml."""
    whole = run.path(layout.CONFIG) / layout.RUN_CONFIG
    if whole.is_file():
        return whole.read_text(encoding="utf-8")
    parts = sorted(run.path(layout.CONFIG).glob("*.yaml"))
    return "".join(part.read_text(encoding="utf-8") for part in parts) or None


def places(run: RunDir) -> dict[str, str | None]:
    """Where the dataset, the model and the results are (None: not made)."""
    found = {"dataset": layout.DATASET, "model": layout.MODEL, "results": f"{layout.EVAL}/summary.md",
             "metrics log": f"{layout.TRAIN_LOGS}/metrics.jsonl"}
    return {name: str(run.path(relative)) if run.path(relative).exists() else None for name, relative in found.items()}


def read_columns(path: Path, columns: list[str]) -> list[dict[str, Any]]:
    """Rows of a parquet file as dicts, of those of ``columns`` it has."""
    import pyarrow.parquet as pq

    present = [c for c in columns if c in pq.read_schema(path).names]
    return pq.read_table(path, columns=present).to_pylist()


def entities(run: RunDir) -> dict[str, Any] | None:
    """Entities per domain and per natural type (the enrich stage's, else the kg's)."""
    path = run.path(layout.ENTITIES)
    if not path.is_file():
        return None
    rows = read_columns(path, ["id", "domain", "natural_type"])
    types = {row["id"]: row.get("natural_type") for row in rows}
    if run.path(layout.NATURAL_TYPES).is_file():
        types.update({row["entity_id"]: row["natural_type"]
                      for row in read_columns(run.path(layout.NATURAL_TYPES), ["entity_id", "natural_type"])})
    per_type = Counter(kind or "(none)" for kind in types.values())
    return {"total": len(rows), "per_domain": dict(Counter(row["domain"] for row in rows).most_common()),
            "natural_types": len(per_type), "per_natural_type": per_type.most_common(TOP)}


def _query_entities(run: RunDir) -> dict[str, list[tuple[str, str]]]:
    """query id -> its uses as (kind, entity id)."""
    path = run.path(layout.QUERIES)
    if not path.is_file():
        return {}
    return {row["query_id"]: [(use["kind"], use["entity_id"]) for use in row["uses"] or []]
            for row in read_columns(path, ["query_id", "uses"])}


def dataset_files(run: RunDir) -> dict[str, list[Path]]:
    """split -> the dataset's parquet files of it (both domains)."""
    found: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(run.path(layout.DATASET).glob("data/*/*.parquet")):
        found[path.name.split("-")[0]].append(path)
    return dict(found)


def first_entity_ids(path: Path, every: bool = False) -> list[Any]:
    """Per row of a dataset file: its first entity's id (None without one), or with ``every`` the
    set of all its entities' ids; read column-wise (a split may have millions of rows)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    column = pq.read_table(path, columns=["entities"]).column("entities").combine_chunks()
    ids = pc.struct_field(pc.list_flatten(column), "id").to_pylist()
    parents = pc.list_parent_indices(column).to_pylist()
    out: list[Any] = [set() for _ in range(len(column))] if every else [None] * len(column)
    for parent, entity in zip(parents, ids):
        if every:
            out[parent].add(entity)
        elif out[parent] is None:
            out[parent] = entity
    return out


def images_per_entity(run: RunDir) -> dict[str, Any] | None:
    """How many images each entity has: the dataset's rows when it is built, else the stored
    images through the queries that found them. With the head/tail buckets and the cap in force."""
    counts: Counter[str] = Counter()
    files = dataset_files(run)
    if files:
        source = "dataset rows"
        for path in (p for paths in files.values() for p in paths):
            for ids in first_entity_ids(path, every=True):
                counts.update(ids)
    else:
        shards = sorted(run.path(layout.IMAGES).glob(layout.IMAGE_SHARD_GLOB))
        if not shards:
            return None
        source, uses = "stored images (no dataset built)", _query_entities(run)
        for path in shards:
            for row in read_columns(path, ["sources"]):
                counts.update({entity for s in row["sources"] or [] for _, entity in uses.get(s["query_id"], [])})
    total = entities(run)
    every = [counts.get(entity, 0) for entity in _entity_ids(run)] if total else list(counts.values())
    buckets = {label: sum(1 for n in every if n >= low and (high is None or n <= high)) for label, low, high in BUCKETS}
    return {"source": source, "counts": sorted(every), "buckets": buckets, "with_images": sum(1 for n in every if n),
            "images": sum(counts.values()), "max": max(every, default=0), "cap": cap(run)}


def _entity_ids(run: RunDir) -> list[str]:
    return [row["id"] for row in read_columns(run.path(layout.ENTITIES), ["id"])]


def cap(run: RunDir) -> str:
    """The limit on images per entity the run had: the import's balancing, else the search's per query."""
    imported = (run.recorded_config("import").get("import") or {})
    if imported.get("max_per_entity"):
        return f"import.max_per_entity = {imported['max_per_entity']} (MetaCLIP balancing)"
    search = run.recorded_config("search").get("search") or {}
    if search.get("per_query"):
        return f"search.per_query = {search['per_query']} candidates per query (an entity has several queries)"
    return "not recorded"


def candidates(run: RunDir) -> dict[str, Any] | None:
    """Candidates per engine and query kind (a query serving several kinds counts in each)."""
    parts = sorted(run.path(layout.CANDIDATES).glob(layout.PART_GLOB))
    if not parts:
        return None
    kinds = {query: sorted({kind for kind, _ in used}) for query, used in _query_entities(run).items()}
    table: Counter[tuple[str, str]] = Counter()
    total = 0
    for path in parts:
        for row in read_columns(path, ["engine", "query_id"]):
            total += 1
            for kind in kinds.get(row["query_id"]) or ["(no query kind)"]:
                table[(row["engine"], kind)] += 1
    return {"total": total, "per_engine_kind": [(engine, kind, n) for (engine, kind), n in sorted(table.items())]}


def stored(run: RunDir) -> dict[str, Any] | None:
    """The stored images: how many, and their licence mix (of the first source that found each)."""
    shards = sorted(run.path(layout.IMAGES).glob(layout.IMAGE_SHARD_GLOB))
    if not shards:
        return None
    licences: Counter[str] = Counter()
    for path in shards:
        for row in read_columns(path, ["sources"]):
            first = (row["sources"] or [{}])[0]
            licences[first.get("license") or "unknown"] += 1
    return {"images": sum(licences.values()), "licences": licences.most_common()}


def failures(run: RunDir) -> dict[str, Any] | None:
    """Download failures by reason, each with a few example URLs."""
    state = run.state("download")
    combined = run.path(layout.IMAGES) / layout.FAILURES
    paths = [combined] if combined.is_file() else sorted(run.path(layout.IMAGES).glob("shard-*.failures.parquet"))
    if state is None and not paths:
        return None
    per: dict[str, list[str]] = defaultdict(list)
    counts: Counter[str] = Counter()
    for path in paths:
        for row in read_columns(path, ["url", "reason"]):
            counts[row["reason"]] += 1
            if len(per[row["reason"]]) < FAILURE_EXAMPLES:
                per[row["reason"]].append(row["url"])
    stats = (state or {}).get("stats") or {}
    return {"urls": stats.get("urls"), "stored": stats.get("stored"), "failed": sum(counts.values()),
            "reasons": [(reason, n, per[reason]) for reason, n in counts.most_common()]}


def duplicates(run: RunDir) -> dict[str, Any] | None:
    state = run.state("download")
    if state is None:
        return None
    found = (state.get("stats") or {}).get("duplicates") or {}
    return {key: found.get(key) for key in ("images", "unique", "identical", "near")}


def build(run: RunDir) -> dict[str, Any] | None:
    """Rows per configuration and split, what was left out, and decontamination."""
    state = run.state("build")
    if state is None:
        return None
    stats = state.get("stats") or {}
    card = stats.get("card") or {}
    matches = run.path(layout.DATASET) / layout.DECONTAMINATION
    configured = (run.recorded_config("build").get("build") or {}).get("exclude_near")
    return {"rows": card.get("rows", stats.get("rows")), "entities": card.get("entities"),
            "rows_per_config": card.get("rows_per_config") or {},
            "merged_duplicates": stats.get("merged_duplicates", 0), "straddles_splits": stats.get("straddles_splits", 0),
            "without_entity": stats.get("without_entity", 0),
            "decontamination": {"checked": bool(configured), "source": configured,
                                "evaluation_images": stats.get("evaluation_images", 0),
                                "unreadable": stats.get("evaluation_images_unreadable", 0),
                                "removed": stats.get("excluded_near_evaluation_images", 0),
                                "matches": str(matches) if matches.is_file() else None}}


def training(run: RunDir) -> dict[str, Any] | None:
    """logs/metrics.jsonl: one record per logged step (periodic evaluations are keys with a '/')."""
    path = run.path(layout.TRAIN_LOGS) / "metrics.jsonl"
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    evaluations = sorted({key for record in records for key in record if "/" in key})
    state = run.state("train") or {}
    return {"records": records, "evaluation_keys": evaluations, "stats": state.get("stats") or {}}


def evaluation(run: RunDir) -> dict[str, Any] | None:
    """The eval stage's seen/unseen scores beside chance, and every task's JSON in eval/."""
    folder = run.path(layout.EVAL)
    state = run.state("eval")
    if state is None and not folder.is_dir():
        return None
    tasks = []
    for path in sorted(folder.rglob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if "metrics" not in record:
            continue
        tasks.append({"task": record.get("task_name", path.stem), "file": path.relative_to(run.root).as_posix(),
                      "split": record.get("split"), "images": record.get("num_images"),
                      "classes": record.get("num_classes"), "chance": record.get("chance"),
                      "metrics": record["metrics"]})
    classes = folder / layout.EVAL_CLASSES  # per class and confusions, when the eval stage recorded them
    return {"evaluations": ((state or {}).get("stats") or {}).get("evaluations") or {}, "tasks": tasks,
            "classes": best_and_worst(json.loads(classes.read_text(encoding="utf-8")), entity_names(run))
            if classes.is_file() else None}


def entity_names(run: RunDir) -> dict[str, str]:
    path = run.path(layout.ENTITIES)
    return {row["id"]: row["name"] for row in read_columns(path, ["id", "name"])} if path.is_file() else {}


def best_and_worst(recorded: dict[str, Any], names: dict[str, str] | None = None, count: int = 10) -> dict[str, Any]:
    """Per task: the classes of highest top-1 recall (above 0) and the lowest (each class in one
    list only; more images first among equals), and the most frequent confusions; classes named
    by their entity's name where known (the recorded name is the prompt)."""
    names = names or {}
    out = {}
    for task, found in recorded.items():
        scored = [{**c, "name": names.get(c["id"], c["name"]), "recall": c["right"] / c["images"]}
                  for c in found.get("classes", []) if c["images"]]
        best = sorted((c for c in scored if c["recall"] > 0), key=lambda c: (-c["recall"], -c["images"], c["name"]))[:count]
        taken = {c["id"] for c in best}
        worst = [c for c in sorted(scored, key=lambda c: (c["recall"], -c["images"], c["name"])) if c["id"] not in taken][:count]
        confusions = [{**x, "true_name": names.get(x["true"], x["true_name"]),
                       "predicted_name": names.get(x["predicted"], x["predicted_name"])}
                      for x in found.get("confusions", [])[:count]]
        out[task] = {"best": best, "worst": worst, "confusions": confusions}
    return out


def text_settings(run: RunDir) -> tuple[Any, int] | None:
    """The trainer's text mix settings and seed as the train stage recorded them (defaults when
    it did not run), or None without the text mix module."""
    try:
        from entitynet.training.config import TextConfig
        from entitynet.typed_config import Layers
    except ImportError:
        return None
    recorded = run.recorded_config("train").get("train") or {}
    layers = Layers(TextConfig)
    layers.add(recorded.get("text") or {}, str(run.config_file("train")))
    return layers.build(), int(recorded.get("seed", 0))

