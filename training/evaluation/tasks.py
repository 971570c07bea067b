"""One evaluation task: a dataset, which classes, which templates; its result is one flat record.

``run_task`` composes the pieces: open the source, embed its images once (``FeatureCache``: every
task on the same images reuses them), then score zero-shot classification when the images have
classes and retrieval when they have captions. The record carries CLIP_benchmark's fields
(``dataset``, ``task``, ``model``, ``metrics`` with its metric names) and ours (split, ``format``,
templates, numbers of images and classes, the ``class_names`` prompted, ``skipped_images``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from entitynet.training.evaluation.classes import ClassSet, ClassSetError, named_subset
from entitynet.training.evaluation.features import ImageFeatures, embed_images
from entitynet.training.evaluation.images import UnreadableImage
from entitynet.training.evaluation.inputs import DataSpec, EvalInput, open_input
from entitynet.training.evaluation.models import Clip
from entitynet.training.evaluation.scoring import caption_embeddings, classification, retrieval, zero_shot_classifier
from entitynet.training.evaluation.templates import Templates, resolve_templates

logger = logging.getLogger(__name__)
KINDS = ("auto", "zeroshot_classification", "zeroshot_retrieval")


class TaskError(ValueError):
    """A task that cannot run as configured (no classes, no captions, a bad class subset)."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    data: DataSpec
    task: str = "auto"  # auto: classification when the images have classes, retrieval when they have captions
    templates: str | None = None  # openai, simple, none, dataset (default) or a file
    classes: str | None = None  # a named subset (imagenet1k-living, imagenet1k-other) or a file of class ids
    name_format: str | None = None  # string labels: class names from the row's fields, "{sciName} ({common})"
    group: str | None = None  # tasks of one group differ only in prompts or names; the table adds their best

    def __post_init__(self) -> None:
        if self.task not in KINDS:
            raise TaskError(f"{self.name}: unknown task {self.task!r}; one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class Settings:
    batch_size: int = 64
    text_batch_size: int = 256
    workers: int | None = None
    progress: bool = True
    skip_unreadable: bool = False  # leave images that cannot be decoded out (counted), instead of failing

    def __post_init__(self) -> None:
        for name in ("batch_size", "text_batch_size"):
            if getattr(self, name) < 1:
                raise TaskError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.workers is not None and self.workers < 0:
            raise TaskError(f"workers must not be negative, got {self.workers}")


@dataclass
class FeatureCache:
    """Image features per source key, so tasks on the same images embed them once; and class
    weights per (names, templates), so ImageNet-living reuses the rows of ImageNet-all."""

    entries: dict[str, ImageFeatures] = field(default_factory=dict)
    weights: dict[tuple[tuple[str, ...], tuple[str, ...]], torch.Tensor] = field(default_factory=dict)

    def get(self, key: str, compute: Callable[[], ImageFeatures]) -> ImageFeatures:
        if key not in self.entries:
            self.entries[key] = compute()
        return self.entries[key]

    def drop(self, key: str) -> None:
        self.entries.pop(key, None)
        self.weights.clear()  # the next source has other classes

    def classifier(self, classes: ClassSet, templates: Templates, embed: Callable[[ClassSet], torch.Tensor]) -> torch.Tensor:
        """(classes, dim) weights, computing with ``embed`` only the classes not seen with these templates."""
        missing = [n for n, names in enumerate(classes.names) if (names, templates.texts) not in self.weights]
        if missing:
            rows = embed(ClassSet(tuple(classes.ids[n] for n in missing), tuple(classes.names[n] for n in missing)))
            for n, row in zip(missing, rows):
                self.weights[(classes.names[n], templates.texts)] = row
        return torch.stack([self.weights[(names, templates.texts)] for names in classes.names])


def run_task(clip: Clip, spec: TaskSpec, accelerator: Any, cache: FeatureCache | None = None,
             settings: Settings = Settings(), source: EvalInput | None = None) -> dict[str, Any]:
    source = source or open_input(spec.data)
    cache = cache if cache is not None else FeatureCache()
    classify = spec.task == "zeroshot_classification" or (spec.task == "auto" and source.labels)
    find = spec.task == "zeroshot_retrieval" or (spec.task == "auto" and source.captions)
    if spec.task == "zeroshot_retrieval" and not source.captions:
        raise TaskError(f"{spec.name}: {source.name} has no captions to retrieve")
    if classify and not source.labels:
        raise TaskError(f"{spec.name}: {source.name} has no class labels")
    try:
        features = cache.get(source.key, lambda: embed_images(
            clip.model, clip.processor, source.read(), accelerator, settings.batch_size, settings.workers,
            progress=settings.progress, skip_unreadable=settings.skip_unreadable,
            description=source.name if source.split == "-" else f"{source.name} [{source.split}]"))
    except UnreadableImage as error:
        raise TaskError(f"{error}; to leave such images out and count them, pass --skip-unreadable "
                        "(Settings.skip_unreadable)") from None
    if not len(features):
        raise TaskError(f"{spec.name}: {source.name} [{source.split}] has no images")
    record: dict[str, Any] = {
        "task_name": spec.name, "dataset": source.name, "split": source.split, "format": source.format,
        **card_names(spec.data, source.format),
        "task": "+".join(k for k, on in (("zeroshot_classification", classify), ("zeroshot_retrieval", find)) if on),
        "model": clip.name, "templates": None, "classes": spec.classes or "all", "group": spec.group,
        "num_images": len(features), "num_classes": None, "class_names": None, "metrics": {}, "language": "en",
        "precision": accelerator.mixed_precision, "batch_size": settings.batch_size,
        "skipped_images": len(features.skipped),
    }
    if classify:
        classes = task_classes(spec, source, features)
        templates = resolve_templates(spec.templates, source.templates)
        weights = cache.classifier(classes, templates, lambda missing: zero_shot_classifier(
            clip.model, clip.tokenizer, missing, templates, accelerator, settings.text_batch_size))
        scored = classification(features, classes, weights, accelerator.device)
        record.update(templates=templates.name, num_classes=scored["num_classes"], num_images=scored["num_images"],
                      class_names=recorded_names(classes), chance=scored["chance"])
        if "rank_images" in scored:
            record["rank_images"] = scored["rank_images"]
        record["metrics"].update(scored["metrics"])
    if find:
        texts, owners = caption_embeddings(clip.model, clip.tokenizer, features, accelerator, settings.text_batch_size)
        scored = retrieval(features, texts, owners, device=accelerator.device)
        record["num_texts"] = scored["num_texts"]
        record["metrics"].update(scored["metrics"])
    return record


def card_names(data: DataSpec, format: str) -> dict[str, Any]:
    """How a model card files the result: the dataset's Hub id, its configuration (a built
    dataset read without one is its default, entitynet) and, for a built folder, its card's title."""
    from entitynet.hub_cards.model_card import dataset_id, pretty_name

    built = format == "entitynet"
    local = Path(data.dataset).is_dir()
    return {"dataset_id": dataset_id(data.dataset, data.dataset_id),
            "config": data.config or ("entitynet" if built else None),
            **({"dataset_name": pretty_name(Path(data.dataset))} if built and local else {})}


def recorded_names(classes: ClassSet) -> list[str | list[str]]:
    """The names prompted, in class order, as a ``--class-names`` JSON file gives them: a class's
    one name, or the list of its synonyms."""
    return [names[0] if len(names) == 1 else list(names) for names in classes.names]


def task_classes(spec: TaskSpec, source: EvalInput, features: ImageFeatures) -> ClassSet:
    """The source's classes (or the labels its images carry), cut to the task's subset."""
    classes = source.classes
    if classes is None:
        ids = sorted({label for labels in features.labels for label in labels})
        classes = ClassSet(tuple(ids), tuple(_names(spec, features, class_id) for class_id in ids))
    if not spec.classes:
        return classes
    try:
        subset = named_subset(spec.classes) if not Path(spec.classes).is_file() else {
            line.strip() for line in Path(spec.classes).read_text(encoding="utf-8").splitlines() if line.strip()}
        return classes.subset(subset)
    except (ClassSetError, OSError, UnicodeDecodeError) as error:
        raise TaskError(f"{spec.name}: classes {spec.classes!r}: {error}") from None


def _names(spec: TaskSpec, features: ImageFeatures, class_id: str) -> tuple[str, ...]:
    if class_id in features.names:  # rows that name their classes (entities, already formatted)
        return features.names[class_id]
    if spec.name_format:
        fields = features.fields.get(class_id)
        if fields is None:
            raise TaskError(f"{spec.name}: a name format needs string labels with row fields")
        try:
            return (spec.name_format.format_map(fields).strip(),)
        except (KeyError, ValueError, IndexError) as error:
            raise TaskError(f"{spec.name}: name format {spec.name_format!r}: {error.args[0]!r} is not a field "
                            f"(fields: {', '.join(fields)})") from None
    return (class_id,)
