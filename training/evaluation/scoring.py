"""Zero-shot classification and retrieval from embeddings, in CLIP_benchmark's pieces and names:
``zero_shot_classifier`` builds the class weights (names x templates, each embedding normalised,
averaged, normalised again), ``rank`` keeps only the top k of every query (chunked, so a
25k x 5k retrieval never holds its full score matrix), and the local ``evaluate`` metric modules
shipped in ``metrics/`` turn rankings into ``acc1``, ``acc5``, ``mean_per_class_recall``,
``image_retrieval_recall@K`` and ``text_retrieval_recall@K``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import torch
import torch.nn.functional as F

from entitynet.training.evaluation.classes import ClassSet
from entitynet.training.evaluation.features import ImageFeatures, embed_texts
from entitynet.training.evaluation.templates import Templates

logger = logging.getLogger(__name__)
RECALL_KS = (1, 5, 10)


@lru_cache(maxsize=None)
def metric(name: str) -> Any:
    """One of the shipped metric modules, loaded offline with ``evaluate.load``."""
    import evaluate

    return evaluate.load(str(resources.files("entitynet.training.evaluation") / "metrics" / name), keep_in_memory=True)


def zero_shot_classifier(model: Any, tokenizer: Any, classes: ClassSet, templates: Templates, accelerator: Any = None,
                         batch_size: int = 256) -> torch.Tensor:
    """(classes, dim) weights: every (name, template) prompt of a class, normalised, averaged, normalised."""
    prompts, owner = [], []
    for index, names in enumerate(classes.names):
        for name in names:
            filled = templates.fill(name)
            prompts += filled
            owner += [index] * len(filled)
    embeddings = embed_texts(model, tokenizer, prompts, accelerator, batch_size)
    owners = torch.tensor(owner)
    sums = torch.zeros(len(classes), embeddings.shape[1]).index_add_(0, owners, embeddings)
    counts = torch.bincount(owners, minlength=len(classes)).unsqueeze(1)
    return F.normalize(sums / counts, dim=-1)


def rank(queries: torch.Tensor, items: torch.Tensor, k: int, device: Any = "cpu", chunk: int = 4096) -> torch.Tensor:
    """Indices of the k best items for every query by dot product, best first: (queries, min(k, items))."""
    k = min(k, len(items))
    on_device = items.to(device)
    out = [torch.zeros(0, k, dtype=torch.long)]
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk].to(device) @ on_device.T
        out.append(scores.topk(k, dim=1).indices.cpu())
    return torch.cat(out)


def classification(features: ImageFeatures, classes: ClassSet, weights: torch.Tensor, device: Any = "cpu") -> dict[str, Any]:
    """acc1, acc5, mean_per_class_recall over the images that have a class of ``classes``, and
    the chance level of acc1.

    An image whose classes are all outside the set is left out (an ImageNet "living" task keeps
    only images of living classes); an image with several classes counts as correct when the
    top class is any of them. Chance is therefore the mean over the scored images of (its
    classes in the set) / (the set's size): the mean top-1 of always guessing one class, over the
    classes. It is 1 / classes only when every image has one class."""
    index = {class_id: n for n, class_id in enumerate(classes.ids)}
    keep, references = [], []
    for row, labels in enumerate(features.labels):
        own = [index[label] for label in labels if label in index]
        if own:
            keep.append(row)
            references.append(own)
    if not keep:
        raise ValueError(f"no image has any of the {len(classes)} classes")
    ranked = rank(features.embeddings[keep], weights, k=5, device=device)
    scores = metric("zeroshot_classification").compute(predictions=ranked.tolist(), references=references,
                                                       num_classes=len(classes))
    chance = sum(len(own) for own in references) / (len(references) * len(classes))
    return {"metrics": scores, "num_images": len(keep), "num_classes": len(classes), "chance": chance,
            "images_without_class": len(features) - len(keep)}


def retrieval(features: ImageFeatures, captions: torch.Tensor, owners: Sequence[int], ks: Sequence[int] = RECALL_KS,
              device: Any = "cpu") -> dict[str, Any]:
    """Recall@K both ways; every caption of an image is a positive for it. ``captions`` are the
    caption embeddings and ``owners[t]`` the image caption t belongs to."""
    if not len(captions):
        raise ValueError("no captions to retrieve")
    retrieval_metric = metric("zeroshot_retrieval")
    # image retrieval: each caption asks for its image
    found_images = rank(captions, features.embeddings, max(ks), device)
    images = retrieval_metric.compute(predictions=found_images.tolist(), references=[[o] for o in owners], ks=list(ks))
    # text retrieval: each image with captions asks for them
    positives: dict[int, list[int]] = {}
    for text, owner in enumerate(owners):
        positives.setdefault(owner, []).append(text)
    queries = sorted(positives)
    found_texts = rank(features.embeddings[queries], captions, max(ks), device)
    texts = retrieval_metric.compute(predictions=found_texts.tolist(), references=[positives[q] for q in queries],
                                     ks=list(ks))
    scores = {f"image_retrieval_{name}": value for name, value in images.items()}
    scores |= {f"text_retrieval_{name}": value for name, value in texts.items()}
    return {"metrics": scores, "num_images": len(features), "num_texts": len(captions)}


def caption_embeddings(model: Any, tokenizer: Any, features: ImageFeatures, accelerator: Any = None,
                       batch_size: int = 256) -> tuple[torch.Tensor, list[int]]:
    texts, owners = [], []
    for image, captions in enumerate(features.captions):
        texts += captions
        owners += [image] * len(captions)
    return embed_texts(model, tokenizer, texts, accelerator, batch_size), owners
