"""`entitynet run`'s eval stage: the trained model (RUN/model) on the built dataset's held-out
splits, with `entitynet eval`'s code and metric names.

- ``test``: entities never seen in training (the build splits by entity): how the model transfers;
- ``test_seen``: held-out images of entities it trained on (``build.seen_test_fraction``): what it
  learnt of them.

Zero-shot classification among each split's entities (named by ``eval.template``) and retrieval
over alt texts, on a seeded sample of at most ``eval.max_images`` images; then, if named, a
benchmark suite. One JSON per task and summary.md/csv in RUN/eval/, the results in the model
card's model-index, and ``evaluations`` (acc1 beside its chance level) in the stage's statistics,
which ``entitynet run`` copies into RUN/summary.json.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from entitynet import layout
from entitynet.builders.entitynet import RANK_METRICS
from entitynet.config import Config
from entitynet.rundir import Context, RunDir, StageError, shown, write_text_atomic

logger = logging.getLogger(__name__)
# the held-out splits of a built dataset and what each measures
SPLITS = {"unseen_entities": "test", "seen_entities": "test_seen"}


class EvaluationFailed(StageError):
    """The model or a suite task could not be evaluated."""


def check(config: Config, run_dir: RunDir) -> None:
    """Before any stage runs: a named suite exists."""
    if config.eval.suite:
        from entitynet.training.evaluation.suite import SuiteError, load_suite

        try:
            load_suite(config.eval.suite)
        except SuiteError as error:
            raise EvaluationFailed(f"eval.suite: {error}") from None


def settings(config: Config, context: Context) -> dict[str, Any]:
    return {"eval": config.eval}


def make(config: Config, context: Context) -> dict[str, Any]:
    return evaluate_run(config, context.run_dir)


def discard(config: Config, run_dir: RunDir) -> None:
    """--force evaluates again from nothing: RUN/eval/ (this stage's own folder) goes, or the suite,
    which skips tasks whose JSON exists so that an interrupted evaluation resumes, would keep the
    results of the model from before a retrain."""
    shutil.rmtree(run_dir.path(layout.EVAL), ignore_errors=True)


def evaluate_run(config: Config, run_dir: RunDir) -> dict[str, Any]:
    from entitynet.hub_cards.model_card import add_eval_results, dataset_id, pretty_name
    from entitynet.train_config import run_train_config
    from entitynet.training.evaluation import report
    from entitynet.training.evaluation.api import evaluate_built_dataset
    from entitynet.training.evaluation.features import default_accelerator
    from entitynet.training.evaluation.inputs import display_name
    from entitynet.training.evaluation.models import ModelError, load_model
    from entitynet.training.splits import eval_rows

    model_dir, out = run_dir.path(layout.MODEL), run_dir.path(layout.EVAL)
    try:
        clip = load_model(str(model_dir))
    except ModelError as error:
        raise EvaluationFailed(f"eval: {error}") from None
    accelerator = default_accelerator()
    clip.model.to(accelerator.device)
    trained = run_train_config(config, run_dir)
    sampling = replace(trained, eval=replace(trained.eval, max_images=config.eval.max_images))
    dataset = display_name(str(run_dir.path(layout.DATASET)))
    # the card's model-index files results under the dataset's Hub id: where the push stage will
    # put it, else the id its folder records (its build's build.repo_id)
    card_names = {"format": "entitynet", "config": config.domain, "dataset_name": pretty_name(run_dir.path(layout.DATASET)),
                  "dataset_id": dataset_id(str(run_dir.path(layout.DATASET)), config.push.dataset_repo)}
    records, evaluations, classes = [], {}, {}
    for key, split in SPLITS.items():
        rows = eval_rows(sampling, split)
        if not rows:
            continue
        details: dict[str, Any] = {}
        metrics = evaluate_built_dataset(clip.model, clip.tokenizer, clip.processor, rows, templates=("{c}",),
                                         name_format=config.eval.template, accelerator=accelerator,
                                         batch_size=config.eval.batch_size, details=details)
        classes[f"{config.domain}-{split}"] = details[""]  # per class and confusions: what the report shows
        record = {"model": clip.name, "task_name": f"{config.domain}-{split}", "task": "zeroshot_classification",
                  "dataset": dataset, "split": split, "templates": config.eval.template, "language": "en",
                  "num_images": metrics["num_images"], "num_classes": metrics["num_classes"],
                  "num_texts": metrics.get("num_texts"), "chance": metrics["chance"],
                  "metrics": {name: value for name, value in metrics.items() if name in report.METRICS}, **card_names}
        records.append(record)
        # chance as scored: an image of several entities is right when the top class is any of them
        evaluations[key] = {"acc1": metrics["acc1"], "chance": record["chance"], "images": metrics["num_images"],
                            "classes": metrics["num_classes"], "split": split,
                            "ranks": {name: metrics[name] for name in RANK_METRICS if name in metrics}}
    problems: list[tuple[str, str, str]] = []
    if config.eval.suite:
        suite_records, problems = run_suite(config.eval.suite, str(model_dir), out / "suite", accelerator,
                                            config.eval.batch_size)
        records += suite_records
    if accelerator.is_main_process:
        for record in records:
            write_text_atomic(out / f"{record['task_name']}.json", json.dumps(record, indent=2) + "\n")
        report.write(records, out / "summary.md", out / "summary.csv", problems)
        write_text_atomic(out / layout.EVAL_CLASSES, json.dumps(classes, indent=2) + "\n")
        if records:
            add_eval_results(model_dir, records)
    accelerator.wait_for_everyone()
    return {"evaluations": evaluations, "tasks": len(records), "problems": len(problems),
            "table": f"{layout.EVAL}/summary.md"}  # relative: the run directory may move


def run_suite(name: str, model: str, folder: Path, accelerator: Any, batch_size: int) -> tuple[list[dict], list]:
    """A named suite of `entitynet eval` (configs/eval/<name>.yaml), as `entitynet eval --suite` runs it."""
    from entitynet.training.evaluation.models import load_model
    from entitynet.training.evaluation.suite import SuiteError, load_suite, prepare, run_tasks
    from entitynet.training.evaluation.tasks import Settings

    try:
        suite = load_suite(name)
    except SuiteError as error:
        raise EvaluationFailed(f"eval.suite: {error}") from None
    prepared = prepare(suite.tasks, folder, True, None)
    outcomes = run_tasks(load_model(model), prepared, folder, accelerator, Settings(batch_size=batch_size, progress=False), None)
    problems = [(o.task, o.status, o.reason) for o in outcomes if o.status == "failed"]
    problems += [(task, "skipped", reason) for task, reason in suite.unavailable.items()]
    return [o.record for o in outcomes if o.record is not None], problems


def summary(stats: dict[str, Any]) -> str:
    lines = []
    for key, found in (stats.get("evaluations") or {}).items():
        what = "entities it trained on (new pictures)" if key == "seen_entities" else "entities it never saw"
        lines.append(f"  {key}: top-1 {found['acc1']:.3f} over {found['images']} images of {found['classes']} "
                     f"{what} (chance {found['chance']:.3f})")
    lines.append(f"  the table: {shown(str(stats.get('table')))}")
    return "\n".join(lines)
