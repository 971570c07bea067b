"""An evaluation suite's scores across WiSE-FT alphas: a table (CSV + JSON) and a figure.

Each alpha's folder is evaluated with the suite (the same suites and ``--data`` as ``entitynet
eval``; results in ``OUT/eval/alpha-X/<task>.json``, with the eval command's summary beside them).
``scores.csv`` has one row per alpha and one column per task and metric (``TASK:acc1``...);
``scores.json`` the same as ``{"alphas": [...], "tasks": {TASK: {METRIC: [value per alpha]}}}``;
``scores.png`` plots each task's headline metric (acc1, or image_retrieval_recall@5 for
retrieval) against alpha: the domain task rising, the general ones falling, is WiSE-FT's trade.
The figure needs matplotlib; without it the table is written and a note says so.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from entitynet.rundir import write_text_atomic
from entitynet.training.wise_ft import Ensemble, folder_name

logger = logging.getLogger(__name__)
HEADLINE = ("acc1", "image_retrieval_recall@5")


def evaluate(ensembles: Sequence[Ensemble], suite_name: str, data: Sequence[str], out: Path, batch_size: int = 64,
             cpu: bool = False, workers: int | None = None) -> tuple[dict[float, list[dict[str, Any]]], int]:
    """Each alpha's task records (written under ``out/eval/alpha-X``), and how many tasks failed
    (each logged with its reason and left out of the table)."""
    from accelerate import Accelerator

    from entitynet.training.evaluation import report
    from entitynet.training.evaluation.models import load_model
    from entitynet.training.evaluation.suite import load_suite, prepare, run_tasks
    from entitynet.training.evaluation.tasks import Settings

    suite = load_suite(suite_name, data)
    for task, reason in suite.unavailable.items():
        logger.warning("%s: skipped: %s", task, reason)
    accelerator = Accelerator(cpu=cpu)
    settings = Settings(batch_size=batch_size, workers=workers, progress=False)
    scores, failed = {}, 0
    for ensemble in ensembles:
        folder = out / "eval" / folder_name(ensemble.alpha)
        clip = load_model(str(ensemble.folder))
        clip.name = folder_name(ensemble.alpha)
        clip.model.to(accelerator.device)
        outcomes = run_tasks(clip, prepare(suite.tasks, folder), folder, accelerator, settings)
        for outcome in outcomes:
            if outcome.status == "failed":
                failed += 1
                logger.error("alpha %g: %s failed: %s", ensemble.alpha, outcome.task, outcome.reason)
        records = [o.record for o in outcomes if o.record is not None]
        if accelerator.is_main_process and records:
            report.write(records, folder / "summary.md", folder / "summary.csv")
        scores[ensemble.alpha] = records
    return scores, failed


def table(scores: dict[float, list[dict[str, Any]]]) -> dict[str, Any]:
    """``{"alphas": [...], "tasks": {task: {metric: [value or None per alpha]}}}``, alphas ascending."""
    alphas = sorted(scores)
    tasks: dict[str, dict[str, list[Any]]] = {}
    for n, alpha in enumerate(alphas):
        for record in scores[alpha]:
            for metric, value in record["metrics"].items():
                column = tasks.setdefault(record["task_name"], {}).setdefault(metric, [None] * len(alphas))
                column[n] = value
    return {"alphas": alphas, "tasks": tasks}


def csv_text(scores: dict[str, Any]) -> str:
    columns = [(task, metric) for task, metrics in scores["tasks"].items() for metric in metrics]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["alpha", *(f"{task}:{metric}" for task, metric in columns)])
    for n, alpha in enumerate(scores["alphas"]):
        values = [scores["tasks"][task][metric][n] for task, metric in columns]
        writer.writerow([f"{alpha:g}", *("" if v is None else v for v in values)])
    return out.getvalue()


def write(scores: dict[str, Any], out: Path) -> list[Path]:
    """scores.csv, scores.json and (with matplotlib) scores.png in ``out``; the paths written."""
    write_text_atomic(out / "scores.csv", csv_text(scores))
    write_text_atomic(out / "scores.json", json.dumps(scores, indent=2) + "\n")
    written = [out / "scores.csv", out / "scores.json"]
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        logger.warning("matplotlib is not installed: no figure (scores.csv and scores.json hold the numbers)")
        return written
    figure, axes = pyplot.subplots(figsize=(6, 4))
    for task, metrics in scores["tasks"].items():
        metric = next((m for m in HEADLINE if m in metrics), None)
        if metric is not None:
            axes.plot(scores["alphas"], [float("nan") if v is None else v for v in metrics[metric]], marker="o",
                      label=f"{task} ({metric})")
    axes.set_xlabel("alpha (0: zero-shot model, 1: finetuned)")
    axes.set_ylabel("score")
    axes.set_title("WiSE-FT: scores across alphas")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(out / "scores.png", dpi=120)
    pyplot.close(figure)
    return [*written, out / "scores.png"]
