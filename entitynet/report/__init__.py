"""``entitynet report --run RUN``: RUN/report/index.html, one static page per run with its data,
its pictures, its training curves and its scores.

The page opens from disk with no server and no network: plain HTML and CSS, no script, and its
thumbnails and figures are files beside it under RUN/report/. It shows what the run's files hold
and says what is missing (a run stopped after download gets a report of its data).

- ``gather``: what the page shows, as pure functions of the run's files;
- ``pictures``: the seeded sample of each split, its thumbnails and the text mix's texts;
- ``figures``: the PNG figures (matplotlib, the ``report`` extra);
- ``page``: the HTML.
"""

from __future__ import annotations

import datetime
import logging
import shutil
from pathlib import Path

from entitynet import layout
from entitynet.rundir import RunDir, StageError, write_text_atomic

logger = logging.getLogger(__name__)

INDEX = "index.html"
METRIC_COLUMNS = ("acc1", "acc5", "mean_per_class_recall", "image_retrieval_recall@1", "text_retrieval_recall@1")
TRAINING_COLUMNS = ("step", "epoch", "loss", "lr", "grad_norm", "images_per_s", "data_wait_share")


def write(root: Path, seed: int = 0) -> Path:
    """Write RUN/report/ (the page, its figures and thumbnails, made anew) and return the page's path."""
    from entitynet.report import figures, gather, page, pictures

    run = RunDir(root)
    if not run.root.is_dir():
        raise StageError(f"report: {run.root} is not a run directory (no such folder)")
    if not (run.path(layout.RUN_MARKER).is_file() or run.path(layout.STAGES).is_dir()):
        raise StageError(f"report: {run.root} is not a run directory (it has neither {layout.RUN_MARKER} nor {layout.STAGES}/)")
    out = run.path(layout.REPORT)
    shutil.rmtree(out / pictures.THUMBS, ignore_errors=True)  # a thumbnail of an earlier build must not linger
    shutil.rmtree(out / figures.FIGURES, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    per_entity, training = gather.images_per_entity(run), gather.training(run)
    evaluation, build = gather.evaluation(run), gather.build(run)
    drawn: dict[str, str | None] = {}
    if figures.available():
        drawn["per_entity"] = figures.images_per_entity(per_entity["counts"], per_entity["buckets"], out) if per_entity else None
        if training:
            drawn["training"] = figures.training_curves(training["records"], out)
            drawn["evaluation"] = figures.evaluation_curves(training["records"], training["evaluation_keys"], out)
    csv_link = None
    if build and build["decontamination"]["matches"]:
        shutil.copyfile(build["decontamination"]["matches"], out / layout.DECONTAMINATION)
        csv_link = layout.DECONTAMINATION
    confused = {entity for c in ((evaluation or {}).get("classes") or {}).values()
                for x in c.get("confusions", []) for entity in (x["true"], x["predicted"])}
    html = page.render({
        "run": str(run.root), "run_name": run.root.name,
        "made_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "synthetic": run.path(layout.DEMO_MARKER).exists(),
        "stages": gather.stages(run), "places": gather.places(run), "config": gather.configuration(run),
        "entities": gather.entities(run), "per_entity": per_entity, "candidates": gather.candidates(run),
        "stored": gather.stored(run), "failures": gather.failures(run), "duplicates": gather.duplicates(run),
        "build": build, "decontamination_csv": csv_link, "splits_order": pictures.SPLIT_ORDER,
        "pictures": pictures.splits(run, out, seed), "text_mix": gather.text_settings(run) is not None,
        "training": training, "figures": drawn, "figures_available": figures.available(),
        "training_columns": [k for k in TRAINING_COLUMNS if any(k in r for r in (training or {}).get("records", []))]
        + (training or {}).get("evaluation_keys", []),  # the periodic (and final) evaluation scores
        "metrics_log": f"{layout.TRAIN_LOGS}/metrics.jsonl",
        "evaluation": evaluation, "metric_columns": METRIC_COLUMNS,
        "thumbs": pictures.entity_thumbnails(run, out, confused) if confused else {},
    })
    index = out / INDEX
    write_text_atomic(index, html)
    logger.debug("report: %s", index)
    return index
