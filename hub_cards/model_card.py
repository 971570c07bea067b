"""The model card: ``huggingface_hub.ModelCard.from_template`` with ``ModelCardData`` whose
``eval_results`` become the ``model-index`` the Hub reads for leaderboards and dataset links.

Every evaluation (the trainer's final one, the eval stage's, ``entitynet eval --update-card``)
goes through ``add_eval_results``: one result per task, a later evaluation of the same task
replacing the earlier one, in the YAML and in the card's results table (acc1 beside its chance).

A result's ``dataset.type`` is the dataset's Hub id (``dataset_id``), never a local path or a
pretty name (that is ``dataset.name``); a result whose dataset has no id stays out of the
model-index (the table keeps it) and a warning says how to name one.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

from entitynet.builders.entitynet import CITATION, RANK_METRICS
from entitynet.rundir import package_versions, write_text_atomic

logger = logging.getLogger(__name__)

# CLIP_benchmark's names, as entitynet eval writes them
CLASSIFICATION = ("acc1", "acc5", "mean_per_class_recall", *RANK_METRICS)  # acc1_genus, ...: builders/entitynet.py
RETRIEVAL = tuple(f"{kind}_retrieval_recall@{k}" for kind in ("image", "text") for k in (1, 5, 10))
# a dataset folder's Hub id: the repository `entitynet push dataset` sent it to, or the one its
# build named (build.repo_id); a dot file, so neither the push nor load_dataset take it as data
HUB_ID_FILE = ".hub-id.json"
_HUB_ID = re.compile(r"([\w.-]+/)?[\w.-]+")
PLACEHOLDER_OWNER = "ORG"  # the shipped configs' build.repo_id (ORG/NAME) names no repository
# the card's results table: rewritten by every evaluation between these lines, the rest of the text kept
TABLE_START = "<!-- entitynet results: each evaluation rewrites this table -->"
TABLE_END = "<!-- end of entitynet results -->"
TABLE_COLUMNS = ("result", "dataset", "config", "split", "images", "acc1", "chance", "acc5", "mean_per_class_recall",
                 "image_retrieval_recall@1", "image_retrieval_recall@5", "text_retrieval_recall@1",
                 "text_retrieval_recall@5")
UNSEEN = ("**Unseen entities** (split `test`, or `validation`): the build splits entities between train, validation "
          "and test, so no image of these entities, nor their names, were in training; the score says how the model "
          "transfers to new entities. **Seen entities** (split `test_seen`): held-out images of entities it trained on. "
          "An image of several entities counts as right when the top class is any of them, so acc1's chance level "
          "(the **chance** column) is the mean over the images of (its entities among the classes) / (the number of "
          "classes).")


def is_hub_id(name: str | None) -> bool:
    return bool(name) and _HUB_ID.fullmatch(name) is not None and not name.startswith(f"{PLACEHOLDER_OWNER}/")


def dataset_id(dataset: str, given: str | None = None) -> str | None:
    """The Hub id results on ``dataset`` are filed under: ``given`` (``--dataset-id``, the
    trainer's ``dataset_id``) first, else the id the dataset was loaded by, else the one its
    folder records (pushed there, or named by its build); None when there is none."""
    if given:
        if not is_hub_id(given):
            raise ValueError(f"dataset id {given!r}: must be a Hub dataset id such as ORG/NAME")
        return given
    path = Path(dataset)
    if not path.exists():
        return dataset if is_hub_id(dataset) else None
    return recorded_id(path).get("repo_id")


def recorded_id(folder: Path) -> dict[str, Any]:
    """What ``record_id`` wrote in a dataset folder ({} when nothing): ``repo_id``, ``pushed``
    (true once ``entitynet push dataset`` sent it there) and ``names`` (every id it had)."""
    try:
        found = json.loads((folder / HUB_ID_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) and is_hub_id(found.get("repo_id")) else {}


def record_id(folder: Path, repo_id: str, pushed: bool) -> None:
    """Record ``repo_id`` as the dataset folder's Hub id; a build names it (pushed false), a push
    makes it so. Earlier ids stay in ``names`` so a model card filed under one can be relinked."""
    if not is_hub_id(repo_id):
        return
    before = recorded_id(folder)
    names = [*[name for name in before.get("names", []) if name != repo_id], repo_id]
    write_text_atomic(folder / HUB_ID_FILE, json.dumps({"repo_id": repo_id, "pushed": pushed or (
        before.get("pushed", False) and before.get("repo_id") == repo_id), "names": names}) + "\n")


def write_model_card(folder: Path, config: Any, metrics: dict[str, float], history: list[dict[str, float]],
                     lora: dict[str, Any] | None = None) -> None:
    """The trainer's card: the training, and its final evaluation on ``eval.split`` as the first
    result; ``lora``: finetuned with LoRA (training/lora.py's summary), merged into the weights."""
    from huggingface_hub import ModelCard, ModelCardData

    dataset = config.dataset
    on_hub = not Path(dataset).exists()
    identity = dataset_id(dataset, getattr(config, "dataset_id", None))
    # a local dataset is named by its card's pretty name: local paths stay out of the card
    shown = dataset if on_hub else pretty_name(Path(dataset))
    model_name = f"EntityNet CLIP on {shown}"
    # the card links to the dataset's repository only once it exists there
    recorded = {} if on_hub else recorded_id(Path(dataset))
    linked = bool(identity) and (on_hub or (bool(recorded.get("pushed")) and recorded["repo_id"] == identity))
    card_data = ModelCardData(
        model_name=model_name, library_name="transformers", pipeline_tag="zero-shot-image-classification",
        license="other", license_name="various-source-licenses", tags=["clip", "entitynet", "knowledge-graph"],
        datasets=[identity] if linked else None,
        base_model=config.model.init_from if config.model.init_from and not Path(config.model.init_from).exists() else None,
    )
    template = Path(str(resources.files("entitynet.hub_cards") / "model_card.md"))
    synthetic = (Path(dataset).parent / "demo.json").exists()  # RUN/dataset of a demo run
    card = ModelCard.from_template(
        card_data, template_path=str(template), model_name=model_name, repo_id=config.repo_id, dataset=shown,
        dataset_id=identity, dataset_on_hub=linked, dataset_config=config.dataset_config, synthetic=synthetic,
        architecture=config.model.preset if not config.model.init_from else
        f"finetuned from {config.model.init_from}{' with LoRA' if lora else ''}",
        start="from scratch" if not config.model.init_from else f"finetuned from `{config.model.init_from}`",
        lora=lora, lora_adapter=bool(lora) and bool(getattr(config.model.lora, "save_adapter", False)),
        steps=config.max_steps, batch_size=config.batch_size, accumulation_steps=config.accumulation_steps,
        optimizer=config.optimizer, text=config.text, augment=config.augment,
        context_length=config.model.context_length,
        history=history[-10:], versions=package_versions(("entitynet", "datasets", "torch", "transformers", "accelerate")),
        built_on=date.today().isoformat(), metrics=metrics, eval_split=config.eval.split,
        eval_template=config.eval.template, citation=CITATION.strip(), table=f"{TABLE_START}\n{TABLE_END}",
        unseen=UNSEEN, replay=replayed(config),
    )
    card.save(folder / "README.md")
    if metrics:
        record = {"task_name": f"{config.dataset_config}-{config.eval.split}", "format": "entitynet",
                  "dataset": shown, "dataset_id": identity, "dataset_name": shown, "config": config.dataset_config,
                  "split": config.eval.split, "num_images": metrics.get("num_images"),
                  "num_classes": metrics.get("num_classes"), "chance": metrics.get("chance"), "metrics": metrics}
        add_eval_results(folder, [record])


def replayed(config: Any) -> list[dict[str, Any]]:
    """The replay sources of ``config.mix`` as the card names them (a local folder by its card's pretty
    name or its own name: local paths stay out of the card), with their weights and rows per batch."""
    from entitynet.train_config import mix_rows

    mix = getattr(config, "mix", None) or []
    rows = mix_rows(config.batch_size, mix)[1:]
    shown = []
    for entry, share in zip(mix, rows):
        path = Path(entry.dataset)
        if not path.exists():
            name = public_name(entry.dataset)
        elif (path / "README.md").exists():
            name = pretty_name(path)
        else:
            name = path.name
        shown.append({"name": name, "weight": entry.weight, "rows": share})
    return shown


def public_name(dataset: str) -> str:
    """A replay source that is no local folder, as a card may show it: a Hub id as it is, a URL
    without its user, password or query (where keys travel), a local tar pattern by its folder's
    name (``/home/alice/cc3m/{00000..00099}.tar``: ``cc3m``)."""
    import re
    from urllib.parse import urlsplit, urlunsplit

    if "://" in dataset:
        parts = urlsplit(dataset)
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    if re.fullmatch(r"[\w.-]+/[\w.-]+", dataset) and not dataset.startswith("."):
        return dataset
    path = Path(dataset)
    return path.parent.name or path.name


def pretty_name(folder: Path) -> str:
    from huggingface_hub import DatasetCard

    try:
        return DatasetCard.load(folder / "README.md").data.pretty_name or folder.resolve().parent.name
    except (OSError, ValueError):
        return folder.resolve().parent.name


def entities_seen(record: dict[str, Any]) -> str | None:
    """For a built dataset's split, whether its entities were seen in training (the build splits by entity)."""
    if record.get("format") != "entitynet":
        return None
    return "seen entities" if record["split"] == "test_seen" else "unseen entities"


def result_title(record: dict[str, Any]) -> str:
    """The result's name in the table: what was measured, on what."""
    about = entities_seen(record)
    return f"{record.get('dataset_name') or record['dataset']}, {about}" if about else record["task_name"]


def card_results(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``EvalResult`` fields, one per metric of each task whose dataset has a Hub id.

    The Hub files results by task type, dataset id, config and split; a built dataset's seen and
    unseen entities differ by split and by the task's name. Tasks of a suite on the same split of
    one dataset (ImageNet's living and other classes, each prompt set) differ by metric config,
    the task's name, so each keeps its own metrics."""
    results = []
    for record in records:
        identity = record.get("dataset_id")
        if not identity:
            continue
        about = entities_seen(record)
        for name in CLASSIFICATION + RETRIEVAL:
            value = record["metrics"].get(name)
            if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
                continue
            classification = name in CLASSIFICATION
            task = "Zero-shot classification" if classification else "Zero-shot image-text retrieval"
            results.append({
                "task_type": "zero-shot-image-classification" if classification else "zero-shot-image-text-retrieval",
                "task_name": f"{task}, {about}" if about else task,
                "dataset_type": identity, "dataset_name": record.get("dataset_name") or record["dataset"],
                "dataset_config": record.get("config"),
                "dataset_split": record["split"] if record.get("split") not in (None, "", "-") else None,
                "metric_type": "accuracy" if name.startswith("acc") else "recall",
                "metric_name": name, "metric_value": round(float(value), 4),
                "metric_config": None if about else record["task_name"],
            })
    return results


def _same_task(result: Any) -> tuple:
    return (*result.unique_identifier, result.metric_config)


def add_eval_results(folder: Path, records: Sequence[dict[str, Any]]) -> int:
    """Merge evaluation records (the result JSONs of ``entitynet eval`` and the eval stage) into
    ``folder/README.md`` (created if missing): the model-index, where a task evaluated again
    replaces all its earlier metrics, and the results table, one row per result. The rest of the
    card is kept. Returns the number of results in the model-index afterwards."""
    from huggingface_hub import EvalResult, ModelCard

    path = folder / "README.md"
    card = ModelCard.load(path) if path.is_file() else ModelCard(f"# {folder.resolve().name}\n")
    fresh = [EvalResult(**result) for result in card_results(records)]
    unfiled = sorted({record["dataset"] for record in records if not record.get("dataset_id")})
    if unfiled:
        logger.warning("results on %s stay out of the model card's model-index: the dataset has no Hub id "
                       "(push it first, set build.repo_id or push.dataset_repo, or pass --dataset-id)", ", ".join(unfiled))
    groups: dict[tuple, list[Any]] = {}
    for result in fresh:
        groups.setdefault(_same_task(result), []).append(result)
    merged: list[Any] = []
    for result in card.data.eval_results or []:  # a task evaluated again keeps its place, with the new metrics
        key = _same_task(result)
        if key not in groups:
            merged.append(result)
        elif groups[key]:
            merged += groups[key]
            groups[key] = []
    merged += [result for group in groups.values() for result in group]
    card.data.model_name = card.data.model_name or folder.resolve().name
    card.data.eval_results = merged or None
    card.text = _with_table(card.text, records)
    card.save(path)
    return len(card.data.eval_results or [])


def link_dataset(folder: Path, dataset: Path) -> str | None:
    """Before a model is pushed: when the folder ``dataset`` it was trained on has been pushed,
    the card names that repository (``datasets:``) and results filed under an earlier id of the
    dataset move to it. Returns the id linked, or None."""
    from huggingface_hub import ModelCard

    found = recorded_id(dataset)
    path = folder / "README.md"
    if not found.get("pushed") or not path.is_file():
        return None
    card = ModelCard.load(path)
    repo_id, earlier = found["repo_id"], set(found.get("names", []))
    for result in card.data.eval_results or []:
        if result.dataset_type in earlier:
            result.dataset_type = repo_id
    card.data.datasets = [repo_id, *[name for name in card.data.datasets or [] if name not in earlier | {repo_id}]]
    card.save(path)
    return repo_id


def trained_on(folder: Path) -> Path | None:
    """The local dataset folder a model folder of ours was trained on, if it is still there: in a
    run directory (RUN/model) the run's RUN/dataset, which moves with it; else the folder the
    trainer's ``training_config.json`` names."""
    from entitynet import layout

    if (folder.parent / layout.RUN_MARKER).is_file():
        return folder.parent / layout.DATASET
    try:
        named = json.loads((folder / "training_config.json").read_text(encoding="utf-8")).get("dataset")
    except (OSError, ValueError):
        return None
    return Path(named) if isinstance(named, str) and named and (Path(named) / "README.md").is_file() else None


# --- the results table in the card's text --------------------------------------------------------

def _with_table(text: str, records: Iterable[dict[str, Any]]) -> str:
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:  # a card not of our template: the table goes at its end
        text = f"{text.rstrip()}\n\n## Evaluation results\n\n{UNSEEN}\n\n{TABLE_START}\n{TABLE_END}\n"
        start, end = text.find(TABLE_START), text.find(TABLE_END)
    rows = [line for line in text[start + len(TABLE_START):end].splitlines() if line.startswith("| ")][1:]
    by_key = {_row_key(row): row for row in rows}
    for record in records:
        row = _row(record)
        by_key[_row_key(row)] = row  # an existing key keeps its place
    header = "| " + " | ".join(TABLE_COLUMNS) + " |\n|" + "---|" * len(TABLE_COLUMNS)
    table = "\n".join([header, *by_key.values()]) if by_key else ""
    return f"{text[:start]}{TABLE_START}\n{table}\n{TABLE_END}{text[end + len(TABLE_END):]}"


def _row(record: dict[str, Any]) -> str:
    shown = record.get("dataset_id") or record.get("dataset_name") or record["dataset"]
    values = {"result": result_title(record), "dataset": shown,
              "config": record.get("config") or "", "split": record.get("split") or "",
              "images": record.get("num_images") or "", "chance": record.get("chance"), **record["metrics"]}
    return "| " + " | ".join(_cell(values.get(column)) for column in TABLE_COLUMNS) + " |"


def _row_key(row: str) -> tuple[str, ...]:
    return tuple(cell.strip() for cell in row.strip("| ").split(" | ")[:4])


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "/").replace("\n", " ")
