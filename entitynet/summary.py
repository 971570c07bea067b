"""What a run made, in one place: RUN/summary.json and the lines ``entitynet run`` and ``entitynet
demo`` print at the end.

Per stage: whether it ran now, had finished before, or was left out; its time (the recorded time
of a stage that had finished before); what it produced and dropped, and why (its own summary
lines and statistics). Then where the dataset, the model and the evaluation table are, and the
evaluations: top-1 on held-out images of entities the model trained on (``seen_entities``) and on
entities it never saw (``unseen_entities``), each beside its chance level.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from entitynet import layout, pipeline
from entitynet.config import Config
from entitynet.rundir import RunDir, StageResult, write_text_atomic
from entitynet.typed_config import to_dict

MEANING = {
    "seen_entities": "held-out images of entities the model trained on (what it learnt)",
    "unseen_entities": "images of entities it never saw in training (what transfers)",
}


def collect(config: Config, run_dir: RunDir, results: dict[str, StageResult]) -> dict[str, Any]:
    stages = []
    for entry in pipeline.STAGES:
        result = results.get(entry.name)
        if result is None:
            state = "left out" if not entry.enabled(config) else "not run"
            stages.append({"name": entry.name, "status": state})
            continue
        recorded = (run_dir.state(entry.name) or {}) if result.skipped else {}
        stages.append({"name": entry.name, "status": "already complete" if result.skipped else "done",
                       "seconds": round(recorded.get("seconds", 0.0) if result.skipped else result.seconds, 3),
                       "summary": entry.summary(result.stats), "stats": result.stats})
    evaluations = (results["eval"].stats.get("evaluations") if "eval" in results else None) or {}
    model = run_dir.path(layout.MODEL)
    table = run_dir.path(layout.EVAL) / "summary.md"
    return {
        "run": str(run_dir.root),
        "domain": config.domain,
        "stages": stages,
        "dataset": str(run_dir.path(layout.DATASET)) if run_dir.path(layout.DATASET).is_dir() else None,
        "model": str(model) if model.is_dir() else None,
        "eval_table": str(table) if table.is_file() else None,
        "evaluations": {key: {**found, "meaning": MEANING[key]} for key, found in evaluations.items()},
    }


def write(config: Config, run_dir: RunDir, results: dict[str, StageResult]) -> dict[str, Any]:
    """RUN/summary.json, and RUN/config/run.yaml: the whole configuration the run was made with,
    which ``entitynet run --config RUN/config/run.yaml --run RUN`` takes again (every finished
    stage is then skipped)."""
    summary = collect(config, run_dir, results)
    write_text_atomic(run_dir.path(layout.SUMMARY), json.dumps(summary, indent=2, default=str) + "\n")
    folder = run_dir.path(layout.CONFIG)  # its paths inside RUN relative to this folder, as a YAML file's are read
    write_text_atomic(folder / layout.RUN_CONFIG, yaml.safe_dump(run_dir.within(to_dict(config), folder), sort_keys=False))
    return summary


def lines(summary: dict[str, Any]) -> list[str]:
    """The closing summary a person reads."""
    out = [f"Summary (also in {summary['run']}/{layout.SUMMARY}):"]
    for stage in summary["stages"]:
        if stage["status"] in ("left out", "not run"):
            out.append(f"  {stage['name']:<9} {stage['status']}")
            continue
        made = (stage.get("summary") or "").strip().splitlines()
        out.append(f"  {stage['name']:<9} {stage['status']:<16} {stage['seconds']:>7.1f}s  {made[0].strip() if made else ''}")
    domain = "livingthings" if summary["domain"] == "livingthings" else "entitynet"
    if summary["dataset"]:
        out.append(f"The dataset: {summary['dataset']}   load_dataset(\"{summary['dataset']}\", \"{domain}\")")
    if summary["model"]:
        out.append(f"The model:   {summary['model']}   pipeline(\"zero-shot-image-classification\", "
                   f"model=\"{summary['model']}\")")
    if summary["eval_table"]:
        out.append(f"Evaluation:  {summary['eval_table']}")
    for key, found in summary["evaluations"].items():
        if found.get("acc1") is None:
            continue
        ratio = f", {found['acc1'] / found['chance']:.0f}x chance" if found.get("chance") else ""
        out.append(f"  {key}: top-1 {found['acc1']:.3f} (chance {found['chance']:.3f}{ratio}) over {found['images']} "
                   f"images of {found['classes']} entities: {found['meaning']}")
    return out
