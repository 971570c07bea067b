"""``entitynet eval``: what the subcommand does once its arguments are parsed (``entitynet/cli.py``
defines them, so ``entitynet --help`` works without torch).

Exit status: 0 every task done, 1 a task or the model failed (the others still run and are
written), 2 bad usage (unknown suite, template file without {c}, bad --data).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from entitynet.training.evaluation import report
from entitynet.training.evaluation.classes import ClassSetError, named_subset
from entitynet.training.evaluation.inputs import DataSpec, EvalInput, InputError, display_name
from entitynet.training.evaluation.models import ModelError, load_model
from entitynet.training.evaluation.suite import (
    Outcome,
    Suite,
    SuiteError,
    folder_results,
    load_suite,
    prepare,
    run_tasks,
)
from entitynet.training.evaluation.tasks import Settings, TaskError, TaskSpec
from entitynet.training.evaluation.templates import TemplateError, resolve_templates

logger = logging.getLogger(__name__)
DEFAULT_OUTPUT = "eval-results"


def run(args: argparse.Namespace) -> int:
    try:
        suite = _tasks(args)
        for spec in suite.tasks:  # fail on a bad template file or subset before any image is read
            if spec.templates not in (None, "dataset"):
                resolve_templates(spec.templates)
            if spec.classes and not Path(spec.classes).is_file():
                named_subset(spec.classes)
        if args.update_card and not Path(args.update_card).is_dir():
            raise SuiteError(f"--update-card {args.update_card}: no such model folder")
    except (SuiteError, InputError, TemplateError, TaskError, ClassSetError) as error:
        print(f"entitynet eval: error: {error}", file=sys.stderr)
        return 2
    single = Path(args.output) if args.output and args.output.endswith(".json") and args.dataset else None
    folder = single.parent if single else Path(args.output or (f"{DEFAULT_OUTPUT}/{suite.name}" if args.suite else DEFAULT_OUTPUT))
    prepared = prepare(suite.tasks, folder, args.skip_existing, single)
    if args.dataset and isinstance(prepared[0], Outcome) and prepared[0].status == "failed":
        print(f"entitynet eval: error: {prepared[0].reason}", file=sys.stderr)
        return 1
    if args.no_progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    try:
        clip = load_model(args.model) if any(not isinstance(item, Outcome) for item in prepared) else None
    except ModelError as error:
        print(f"entitynet eval: error: {error}", file=sys.stderr)
        return 1
    accelerator = _accelerator(args)
    if clip is not None:
        clip.model.to(accelerator.device)
    if accelerator.is_main_process:
        _say_readings(prepared)
    settings = Settings(batch_size=args.batch_size, workers=args.workers, progress=not args.no_progress,
                        skip_unreadable=args.skip_unreadable)
    outcomes = run_tasks(clip, prepared, folder, accelerator, settings, single)
    records = [o.record for o in outcomes if o.record is not None]
    if accelerator.is_main_process:
        _say_classes([o.record for o in outcomes if o.status == "done"], single or folder)
    problems = [(o.task, o.status, o.reason) for o in outcomes if o.status == "failed"]
    problems += [(task, "skipped", reason) for task, reason in suite.unavailable.items()]
    # the table of a results folder shows every result in it, also those of earlier commands
    table = records if single else folder_results(folder)
    if accelerator.is_main_process and (table or args.suite):
        _report(table, records, problems, single.with_suffix("") if single else folder / "summary", args.update_card)
    for task, status, reason in problems:
        print(f"entitynet eval: {task}: {status}: {reason}", file=sys.stderr)
    return 1 if any(status == "failed" for _, status, _ in problems) else 0


def _say_readings(prepared: list[Outcome | tuple[TaskSpec, EvalInput]]) -> None:
    """How each dataset is read (its format and why), once per dataset, before any image is read."""
    said: set[str] = set()
    for item in prepared:
        if not isinstance(item, Outcome) and item[1].key not in said:
            said.add(item[1].key)
            print(f"{item[1].name}: read as {item[1].reading}")


def _say_classes(records: list[dict], where: Path, shown: int = 12) -> None:
    """The class names each task prompted (all of them are in its JSON) and the images it skipped."""
    for record in records:
        names = [name if isinstance(name, str) else " / ".join(name) for name in record.get("class_names") or []]
        if names:
            more = f", ... ({len(names) - shown} more: class_names in {where})" if len(names) > shown else ""
            print(f"{record['task_name']}: {len(names)} class names ({record['format']}): "
                  f"{', '.join(names[:shown])}{more}")
        if record.get("skipped_images"):
            print(f"{record['task_name']}: skipped {record['skipped_images']} unreadable "
                  f"image{'s' if record['skipped_images'] > 1 else ''} (--skip-unreadable; named in the log above)")


def _report(table: list[dict], records: list[dict], problems: list[tuple[str, str, str]], stem: Path,
            card: str | None) -> None:
    """The summary table of ``table`` (printed, and as STEM.md and STEM.csv) and the model card's
    results: this command's ``records`` only (the folder may hold other models' results)."""
    report.write(table, stem.with_suffix(".md"), stem.with_suffix(".csv"), problems)
    print(report.markdown(table, problems), end="")
    print(f"table: {stem.with_suffix('.md')} and {stem.with_suffix('.csv')}, beside the results (one JSON per task)")
    if card and records:
        from entitynet.hub_cards.model_card import add_eval_results

        total = add_eval_results(Path(card), records)
        print(f"model card: {Path(card) / 'README.md'} now lists {total} results")


def _tasks(args: argparse.Namespace) -> Suite:
    if args.suite:
        if args.dataset_id:
            raise SuiteError("--dataset-id names --dataset's Hub id; a suite's data takes --data KEY.dataset_id=ORG/NAME")
        suite = load_suite(args.suite, args.data)
        if args.tasks:
            wanted = set(args.tasks.split(","))
            unknown = wanted - {t.name for t in suite.tasks} - set(suite.unavailable)
            if unknown:
                raise SuiteError(f"--tasks: the suite has no task {', '.join(sorted(unknown))}")
            suite = Suite(suite.name, suite.description, [t for t in suite.tasks if t.name in wanted],
                          {k: v for k, v in suite.unavailable.items() if k in wanted})
        return suite
    if args.data:
        raise SuiteError("--data sets a suite's data; with --dataset use --split, --config, ...")
    data = DataSpec(args.dataset, args.split, args.config, args.format, args.image_column, args.label_column,
                    args.caption_column, args.class_names, args.name_format, args.max_images,
                    dataset_id=args.dataset_id)
    name = args.name or "-".join(filter(None, [display_name(args.dataset).replace("/", "_"), args.split,
                                               args.classes and Path(args.classes).stem, args.templates and Path(args.templates).stem]))
    spec = TaskSpec(name, data, args.task, args.templates, args.classes, args.name_format)
    return Suite(name, "", [spec], {})


def _accelerator(args: argparse.Namespace):
    from accelerate import Accelerator

    return Accelerator(mixed_precision=args.precision, cpu=args.cpu)
