"""The summary table of a run (Markdown and CSV); the model card's results are hub_cards/model_card.py's.

One row per task: model, task, dataset, split, templates, classes, images, and the metrics as
fractions (CLIP_benchmark's scale), acc1 beside its chance level. Tasks of one ``group`` differ
only in their prompts (or class names); as the paper reports, the table adds the best of each
group by ``acc1``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from entitynet.rundir import write_text_atomic
from entitynet.training.evaluation.ranks import RANK_METRICS

METRICS = ("acc1", "acc5", "mean_per_class_recall",
           "image_retrieval_recall@1", "image_retrieval_recall@5", "image_retrieval_recall@10",
           "text_retrieval_recall@1", "text_retrieval_recall@5", "text_retrieval_recall@10", *RANK_METRICS)
# chance: acc1's chance level under the scoring rule (an image is right when the top class is any of its own)
COLUMNS = ("model", "task", "dataset", "split", "templates", "classes", "images", "num_classes", "texts", "acc1",
           "chance") + METRICS[1:]


def rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows, one per task result, in task order."""
    out = []
    for record in records:
        row = {"model": record["model"], "task": record["task_name"], "dataset": record["dataset"],
               "split": record["split"], "templates": record.get("templates") or "", "classes": record.get("classes") or "",
               "images": record["num_images"], "num_classes": record.get("num_classes") or "",
               "texts": record.get("num_texts") or "", "chance": record.get("chance")}
        row |= {name: record["metrics"].get(name) for name in METRICS}
        out.append(row)
    return out


def best(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group, the task with the highest acc1 (the first on a tie), named after its group."""
    chosen: dict[str, dict[str, Any]] = {}
    for record in records:
        group, score = record.get("group"), record["metrics"].get("acc1")
        if not group or score is None:
            continue
        if group not in chosen or score > chosen[group]["metrics"]["acc1"]:
            chosen[group] = record
    return [{**row, "task": f"{group} (best: {record['task_name']})"}
            for (group, record), row in zip(chosen.items(), rows(list(chosen.values())))]


def markdown(records: Sequence[dict[str, Any]], problems: Sequence[tuple[str, str, str]] = ()) -> str:
    used = [c for c in COLUMNS if any(row.get(c) not in (None, "") for row in rows(records))] or list(COLUMNS[:7])
    lines = [_md_table(rows(records), used)]
    best_rows = best(records)
    if best_rows:
        lines += ["", "Best prompt set (or class names) per benchmark, by acc1:", "", _md_table(best_rows, used)]
    if problems:
        lines += ["", "Not evaluated:", ""] + [f"- {task}: {status}: {reason}" for task, status, reason in problems]
    return "\n".join(lines) + "\n"


def csv_text(records: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["kind", *COLUMNS], lineterminator="\n")
    writer.writeheader()
    for kind, table in (("task", rows(records)), ("best", best(records))):
        for row in table:
            writer.writerow({"kind": kind, **{k: _csv_value(v) for k, v in row.items()}})
    return out.getvalue()


def write(records: Sequence[dict[str, Any]], markdown_path: Path, csv_path: Path,
          problems: Sequence[tuple[str, str, str]] = ()) -> None:
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(markdown_path, markdown(records, problems))
    write_text_atomic(csv_path, csv_text(records))


def _md_table(table: list[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)
    body = ["| " + " | ".join(_md_value(row.get(c)) for c in columns) + " |" for row in table]
    return "\n".join([head, *body])


def _md_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def _csv_value(value: Any) -> Any:
    return "" if value is None else value
