"""Evaluation of a model on rows of one of our built datasets: the function the trainer calls.

``rows`` is any iterable of dataset rows (a map-style ``Dataset``, an ``IterableDataset`` from
``load_dataset(..., streaming=True)``, a list): it is read once, batch by batch, and only the
normalised embeddings, labels and captions are kept. The classes are a parameter: by default the
entities the rows show, or any ``ClassSet`` (``ClassSet.from_entities(train_entities)`` for
held-out images of seen entities), or several named sets scored on the same embeddings.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from entitynet.training.evaluation.classes import ClassSet
from entitynet.training.evaluation.features import default_accelerator, embed_images
from entitynet.training.evaluation.inputs import built_examples
from entitynet.training.evaluation.scoring import caption_embeddings, classification, retrieval, zero_shot_classifier
from entitynet.training.evaluation.templates import SIMPLE, Templates, check

Metrics = dict[str, float | int | None]


def evaluate_built_dataset(
    model: Any,
    tokenizer: Any,
    processor: Any,
    rows: Iterable[Mapping[str, Any]],
    *,
    classes: ClassSet | Mapping[str, ClassSet] | None = None,
    templates: Sequence[str] = SIMPLE,
    accelerator: Any = None,
    batch_size: int = 64,
    max_images: int | None = None,
    retrieval_over_alt_texts: bool = True,
    name_format: str = "{name}",
    progress: bool = False,
    details: dict[str, Any] | None = None,
) -> Metrics:
    """Zero-shot classification among ``classes`` and retrieval over alt texts, as one flat dict.

    Returns ``acc1``, ``acc5`` (None with fewer than 5 classes), ``mean_per_class_recall``,
    ``chance`` (acc1's chance level: an image counts as right when the top class is any of its
    classes), ``num_classes``, ``num_images`` (images with a class of the set), and with retrieval
    ``image_retrieval_recall@{1,5,10}``, ``text_retrieval_recall@{1,5,10}``, ``num_texts``.
    With ``classes={"seen": a, "unseen": b}`` the classification keys are prefixed ``seen/``,
    ``unseen/``. ``model`` is the unwrapped CLIPModel; with an ``accelerator`` of several processes
    every process must call this with the same rows, each embeds every N-th image, and all get
    the same result. The model's train/eval mode is restored afterwards. A ``details`` dict is
    filled with each class set's per-class recall and most frequent confusions (``scoring.per_class``),
    under its prefix ("" without one).
    """
    if max_images is not None and max_images < 1:  # 0 would score nothing, not everything
        raise ValueError(f"max_images must be at least 1 (None for every row), got {max_images}")
    accelerator = accelerator or default_accelerator()
    examples = built_examples(rows, name_format)
    if max_images is not None:
        examples = itertools.islice(examples, max_images)
    total = min(len(rows), max_images or len(rows)) if hasattr(rows, "__len__") else None
    features = embed_images(model, processor, examples, accelerator, batch_size, total=total, progress=progress,
                            description="evaluation images")
    metrics: Metrics = {"num_images": len(features)}
    prompts = Templates("custom", check(templates, "templates"))
    if classes is None:
        classes = ClassSet.from_mapping(dict(sorted(features.names.items())))
    named = classes.items() if isinstance(classes, Mapping) else [(None, classes)]
    for prefix, class_set in named:
        weights = zero_shot_classifier(model, tokenizer, class_set, prompts, accelerator)
        scored = classification(features, class_set, weights, accelerator.device)
        if details is not None:
            details[prefix or ""] = {"classes": scored["classes"], "confusions": scored["confusions"]}
        found = {**scored["metrics"], "chance": scored["chance"], "num_classes": scored["num_classes"],
                 "num_images": scored["num_images"]}
        metrics.update({f"{prefix}/{key}" if prefix else key: value for key, value in found.items()})
    if retrieval_over_alt_texts and any(features.captions):
        texts, owners = caption_embeddings(model, tokenizer, features, accelerator)
        scored = retrieval(features, texts, owners, device=accelerator.device)
        metrics.update(scored["metrics"])
        metrics["num_texts"] = scored["num_texts"]
    return metrics


def entity_classes(rows: Iterable[Mapping[str, Any]], name_format: str = "{name}", aliases: bool = True) -> ClassSet:
    """The entities of ``rows`` (e.g. the train split's, for "seen entities") as a class set.
    Pass ``rows.select_columns(["entities"])`` to avoid decoding images."""
    return ClassSet.from_entities((entity for row in rows for entity in row.get("entities") or []), name_format, aliases)
