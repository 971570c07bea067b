"""Named evaluation suites (shipped as ``configs/eval/<name>.yaml``) and running many tasks.

A suite file names its data once and its tasks by data key::

    description: ...
    data:
      imagenet1k: {dataset: clip-benchmark/wds_imagenet1k, split: test}
      cub: {dataset: null, split: test, hint: "an image folder with one folder per species"}
    tasks:
      - {name: imagenet1k-living-openai, data: imagenet1k, templates: openai, classes: imagenet1k-living, group: imagenet1k-living}

``--data KEY=DATASET`` points a data key elsewhere (a local copy, a mirror: model cards still file
its results under the suite's Hub id, or ``KEY.dataset_id``), ``--data
KEY.FIELD=VALUE`` sets another of its fields (``cub.class_names=names.txt``); tasks whose data
has no dataset are skipped with its hint. Tasks on the same images run one after another and
share one pass of image features; each result is written as soon as it is known, so with
``--skip-existing`` an interrupted suite continues where it stopped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from entitynet.hub_cards.model_card import is_hub_id
from entitynet.rundir import write_text_atomic
from entitynet.training.evaluation.inputs import DataSpec, EvalInput, InputError, open_input
from entitynet.training.evaluation.models import Clip
from entitynet.training.evaluation.tasks import FeatureCache, Settings, TaskError, TaskSpec, run_task

logger = logging.getLogger(__name__)
DATA_FIELDS = {f.name for f in fields(DataSpec)}
TASK_FIELDS = {"name", "data", "task", "templates", "classes", "name_format", "group"}


class SuiteError(ValueError):
    """A suite file or a --data override that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    tasks: list[TaskSpec]
    unavailable: dict[str, str]  # task name -> why it cannot run (its data is not given)


def shipped_suites() -> list[str]:
    folder = resources.files("entitynet.configs") / "eval"
    return sorted(item.name[:-5] for item in folder.iterdir() if item.name.endswith(".yaml"))


def suite_file(name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    shipped = resources.files("entitynet.configs") / "eval" / f"{name}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise SuiteError(f"--suite {name}: neither a file nor a shipped suite ({', '.join(shipped_suites())})")


def load_suite(name: str, overrides: Sequence[str] = ()) -> Suite:
    path = suite_file(name)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise SuiteError(f"{path}: cannot read the suite ({error})") from None
    _known(loaded, {"description", "data", "tasks"}, str(path))
    data = {key: dict(value or {}) for key, value in (loaded.get("data") or {}).items()}
    for assignment in overrides:
        _override(data, assignment)
    tasks, unavailable = [], {}
    for n, entry in enumerate(loaded.get("tasks") or []):
        where = f"{path}: tasks[{n}]"
        _known(entry, TASK_FIELDS, where)
        if "name" not in entry or "data" not in entry:
            raise SuiteError(f"{where}: needs a name and a data key")
        if entry["data"] not in data:
            raise SuiteError(f"{where}: data key {entry['data']!r} is not under data: ({', '.join(data)})")
        spec = {k: v for k, v in data[entry["data"]].items() if k != "hint"}
        _known(spec, DATA_FIELDS, f"{path}: data.{entry['data']}")
        if not spec.get("dataset"):
            unavailable[entry["name"]] = (f"no dataset for {entry['data']!r}: {data[entry['data']].get('hint', '')} "
                                          f"(pass --data {entry['data']}=DATASET)").strip()
            continue
        try:
            tasks.append(TaskSpec(data=DataSpec(**spec), **{k: v for k, v in entry.items() if k != "data"}))
        except (TypeError, TaskError, InputError) as error:
            raise SuiteError(f"{where}: {error}") from None
    return Suite(path.stem, str(loaded.get("description") or ""), tasks, unavailable)


def _override(data: dict[str, dict[str, Any]], assignment: str) -> None:
    target, equals, value = assignment.partition("=")
    key, _, field = target.partition(".")
    field = field or "dataset"
    if not equals or not key:
        raise SuiteError(f"--data {assignment}: expected KEY=DATASET or KEY.FIELD=VALUE")
    if key not in data:
        raise SuiteError(f"--data {assignment}: the suite has no data {key!r} ({', '.join(data)})")
    if field not in DATA_FIELDS:
        raise SuiteError(f"--data {assignment}: no field {field!r} ({', '.join(sorted(DATA_FIELDS))})")
    counted = field in ("max_images", "max_captions")
    if counted and not (value.isdigit() and int(value) >= 1):
        raise SuiteError(f"--data {assignment}: {field} must be at least 1 (leave it unset for all)")
    if field == "dataset" and not data[key].get("dataset_id") and is_hub_id(data[key].get("dataset")):
        # a local copy or mirror of the suite's dataset: model cards still file results under its Hub id
        data[key]["dataset_id"] = data[key]["dataset"]
    data[key][field] = int(value) if counted else value


def _known(entry: Any, allowed: set[str], where: str) -> None:
    if not isinstance(entry, dict):
        raise SuiteError(f"{where}: expected a mapping")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise SuiteError(f"{where}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")


@dataclass
class Outcome:
    task: str
    record: dict[str, Any] | None = None
    status: str = "done"  # done, existing, skipped, failed
    reason: str = ""


def prepare(tasks: Sequence[TaskSpec], results: Path | None, skip_existing: bool = False,
            single_file: Path | None = None) -> list[Outcome | tuple[TaskSpec, EvalInput]]:
    """Per task: an Outcome when it needs no run (its result exists, its data cannot be opened),
    else (task, opened source). Opening reads no images, so bad data fails before the model loads."""
    prepared: list[Outcome | tuple[TaskSpec, EvalInput]] = []
    for spec in tasks:
        path = single_file or results / f"{spec.name}.json"
        existing = _record(path) if skip_existing else None
        if existing is not None:
            prepared.append(Outcome(spec.name, existing, "existing"))
            continue
        try:
            prepared.append((spec, open_input(spec.data)))
        except InputError as error:
            prepared.append(Outcome(spec.name, None, "failed", str(error)))
    return prepared


def _record(path: Path) -> dict[str, Any] | None:
    """A result written earlier; None when there is none or it is not one of ours (it is redone)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "metrics" in record and "task_name" in record else None


def folder_results(folder: Path) -> list[dict[str, Any]]:
    """Every task result in ``folder`` (``*.json`` of ours, by task name): what its summary table
    shows, whichever command wrote each."""
    found = (_record(path) for path in sorted(folder.glob("*.json")))
    return sorted((record for record in found if record is not None), key=lambda record: record["task_name"])


def run_tasks(clip: Clip, prepared: Sequence[Outcome | tuple[TaskSpec, EvalInput]], results: Path | None, accelerator: Any,
              settings: Settings, single_file: Path | None = None) -> list[Outcome]:
    """Run the prepared tasks, each source's tasks together, writing ``results/<task>.json`` (or
    ``single_file``) as each finishes. A task that fails is reported and the others go on."""
    outcomes = {item.task: item for item in prepared if isinstance(item, Outcome)}
    runnable = [item for item in prepared if not isinstance(item, Outcome)]
    first = {source.key: n for n, (_, source) in reversed(list(enumerate(runnable)))}
    runnable.sort(key=lambda pair: first[pair[1].key])
    cache = FeatureCache()
    for n, (spec, source) in enumerate(runnable):
        try:
            record = run_task(clip, spec, accelerator, cache, settings, source)
        except (InputError, TaskError, ValueError) as error:  # bad data, named in the message
            outcomes[spec.name] = Outcome(spec.name, None, "failed", str(error))  # reported with the table
        except Exception as error:
            logger.debug("%s failed", spec.name, exc_info=True)
            outcomes[spec.name] = Outcome(spec.name, None, "failed", f"{type(error).__name__}: {error} (-v for the traceback)")
        else:
            outcomes[spec.name] = Outcome(spec.name, record)
            if accelerator.is_main_process:
                path = single_file or results / f"{spec.name}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(path, json.dumps(record, indent=2) + "\n")
            logger.info("%s: %s", spec.name, ", ".join(f"{k} {v:.4f}" for k, v in record["metrics"].items() if v is not None))
        if n + 1 == len(runnable) or runnable[n + 1][1].key != source.key:
            cache.drop(source.key)  # its last task: free the embeddings
    names = [item.task if isinstance(item, Outcome) else item[0].name for item in prepared]
    return [outcomes[name] for name in names]
