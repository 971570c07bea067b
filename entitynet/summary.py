"""What a run made, in one place: RUN/summary.json and the lines ``entitynet run`` and ``entitynet
demo`` print at the end.

The summary is made from what is on disk, not from what this command did: every stage's record
(RUN/stages/<stage>.json: its time, statistics and inputs) and the eval stage's evaluations, so a
command that runs a few stages, or none, forgets nothing. This command only says which stages it
ran now (``done``) or found complete (``already complete``); the others are ``finished earlier``,
``outdated`` when a stage they read from was redone since (their artifacts were made from inputs
that are gone), ``not run``, or ``left out`` by the configuration. Then where the dataset, the
model and the evaluation table are, and the evaluations: top-1 on held-out images of entities the
model trained on (``seen_entities``) and on entities it never saw (``unseen_entities``), each
beside its chance level (as the evaluation scored it: see ``scoring.classification``).
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
    """The summary of ``run_dir`` as it is on disk; ``results``: the stages this command ran or skipped."""
    stages, outdated = [], set()
    for entry in pipeline.STAGES:
        state = run_dir.state(entry.name)
        if state is None:
            stages.append({"name": entry.name, "status": "not run" if entry.enabled(config) else "left out"})
            continue
        result = results.get(entry.name)
        if result is None and _made_from_replaced_inputs(run_dir, state, outdated):
            outdated.add(entry.name)
        status = ("outdated" if entry.name in outdated else "finished earlier" if result is None
                  else "already complete" if result.skipped else "done")
        stats = state.get("stats", {})
        stages.append({"name": entry.name, "status": status, "seconds": round(state.get("seconds", 0.0), 3),
                       "summary": _stage_summary(entry, stats), "stats": stats})
    evaluations = ((run_dir.state("eval") or {}).get("stats") or {}).get("evaluations") or {}
    model = run_dir.path(layout.MODEL)
    table = run_dir.path(layout.EVAL) / "summary.md"
    return {
        "run": str(run_dir.root),
        "domain": config.domain,
        "stages": stages,
        "dataset": str(run_dir.path(layout.DATASET)) if run_dir.path(layout.DATASET).is_dir() else None,
        "model": str(model) if model.is_dir() else None,
        "eval_table": str(table) if table.is_file() else None,
        "evaluations": {key: {**found, "meaning": MEANING[key], **({"outdated": True} if "eval" in outdated else {})}
                        for key, found in evaluations.items()},
    }


def _stage_summary(entry: pipeline.Stage, stats: dict[str, Any]) -> str:
    try:
        return entry.summary(stats)
    except pipeline.ExtraMissing:  # a model trained elsewhere, summed up where the train extra is missing
        return ""


def _made_from_replaced_inputs(run_dir: RunDir, state: dict[str, Any], outdated: set[str]) -> bool:
    """Whether a stage's record names inputs that are gone: a stage it read from was redone since
    (its fingerprint changed), removed, or is itself outdated."""
    for upstream, fingerprint in (state.get("inputs") or {}).items():
        current = run_dir.state(upstream)
        if upstream in outdated or current is None or current.get("fingerprint") != fingerprint:
            return True
    return False


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
    outdated = [stage["name"] for stage in summary["stages"] if stage["status"] == "outdated"]
    if outdated:
        out.append(f"  outdated: {', '.join(outdated)} read what a stage redone since has replaced; redo them with "
                   f"entitynet run --from {outdated[0]} --force (and this run's --config and --run)")
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
        chance = found.get("chance")
        against = f"chance {chance:.3f}, {found['acc1'] / chance:.0f}x chance" if chance else "chance not recorded"
        out.append(f"  {key}: top-1 {found['acc1']:.3f} ({against}) over {found['images']} images of {found['classes']} "
                   f"entities{' [outdated]' if found.get('outdated') else ''}: {found['meaning']}")
        if found.get("ranks"):  # acc1 at each rank of the entities' lineage (training/evaluation/ranks.py)
            out.append(f"    {key} at each rank: " + ", ".join(f"{name.removeprefix('acc1_')} {value:.3f}"
                                                           for name, value in found["ranks"].items()))
    return out
