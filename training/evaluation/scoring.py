"""Zero-shot classification and retrieval from embeddings, in CLIP_benchmark's pieces and names:
``zero_shot_classifier`` builds the class weights (per name: its templates' embeddings normalised,
averaged, normalised again; several names of a class averaged and normalised once more),
``rank`` keeps only the top k of every query (chunked, so a 25k x 5k retrieval never holds its
full score matrix), and the local ``evaluate`` metric modules
shipped in ``metrics/`` turn rankings into ``acc1``, ``acc5``, ``mean_per_class_recall``,
``image_retrieval_recall@K`` and ``text_retrieval_recall@K``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import torch
import torch.nn.functional as F

from entitynet.training.evaluation.classes import ClassSet
from entitynet.training.evaluation.features import ImageFeatures, embed_texts
from entitynet.training.evaluation.ranks import rank_accuracies
from entitynet.training.evaluation.templates import Templates

logger = logging.getLogger(__name__)
RECALL_KS = (1, 5, 10)


@cache
def metric(name: str) -> Any:
    """One of the shipped metric modules, loaded offline with ``evaluate.load``."""
    import evaluate

    return evaluate.load(str(resources.files("entitynet.training.evaluation") / "metrics" / name), keep_in_memory=True)


def zero_shot_classifier(model: Any, tokenizer: Any, classes: ClassSet, templates: Templates, accelerator: Any = None,
                         batch_size: int = 256) -> torch.Tensor:
    """(classes, dim) weights. Each name of a class gets CLIP_benchmark's embedding: its prompts (one
    per template) normalised, averaged, normalised. A class with one name is that embedding; a class
    with several names (synonyms, an entity's aliases) is the normalised mean of its names'
    embeddings, as the paper's authors build it, so every name weighs the same whatever its prompts'
    norms (a flat mean over names x templates would let one name dominate)."""
    prompts, name_owner, per_name = [], [], []
    for index, names in enumerate(classes.names):
        for name in names:
            filled = templates.fill(name)
            prompts += filled
            per_name.append(len(filled))
            name_owner.append(index)
    embeddings = embed_texts(model, tokenizer, prompts, accelerator, batch_size)
    names = _normalised_means(embeddings, torch.arange(len(per_name)).repeat_interleave(torch.tensor(per_name)),
                              len(per_name))
    owners = torch.tensor(name_owner)
    single = torch.bincount(owners, minlength=len(classes)) == 1
    weights = _normalised_means(names, owners, len(classes))
    # one name: its own embedding, not normalised twice, so the numbers stay CLIP_benchmark's exactly
    weights[single] = names[torch.nonzero(single[owners]).squeeze(1)]
    return weights


def _normalised_means(rows: torch.Tensor, owners: torch.Tensor, groups: int) -> torch.Tensor:
    """The normalised mean of the rows of each group (``owners[i]`` is row i's group)."""
    sums = torch.zeros(groups, rows.shape[1]).index_add_(0, owners, rows)
    counts = torch.bincount(owners, minlength=groups).unsqueeze(1)
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
    the chance level of acc1; where classes carry a lineage (``features.lineages``), acc1 at each
    rank of it (``acc1_genus``, ...: ``ranks.py``) with the images each rank scored.

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
    chance = sum(len(set(own)) for own in references) / (len(references) * len(classes))  # a label given twice is one class
    result = {"metrics": scores, "num_images": len(keep), "num_classes": len(classes), "chance": chance,
              "images_without_class": len(features) - len(keep),
              **per_class(classes, references, ranked[:, 0].tolist())}
    lineages = [features.lineages.get(class_id, {}) for class_id in classes.ids]
    if any(lineages):
        at_ranks, counted = rank_accuracies(ranked[:, 0].tolist(), references, lineages, list(classes.ids))
        scores.update(at_ranks)
        result["rank_images"] = counted
    return result


def per_class(classes: ClassSet, references: Sequence[Sequence[int]], top: Sequence[int], confusions: int = 20
              ) -> dict[str, Any]:
    """Top-1 recall of each class (an image counts for each of its classes) and the most frequent
    confusions (an image's first class -> the class it was taken for), with the classes' names."""
    right: dict[int, list[int]] = {}
    wrong: dict[tuple[int, int], int] = {}
    for own, predicted in zip(references, top):
        hit = predicted in own
        for label in set(own):
            right.setdefault(label, [0, 0])[0] += hit
            right[label][1] += 1
        if not hit:
            wrong[(own[0], predicted)] = wrong.get((own[0], predicted), 0) + 1
    name = lambda index: classes.names[index][0]  # noqa: E731
    return {"classes": [{"id": classes.ids[c], "name": name(c), "right": n, "images": total}
                        for c, (n, total) in sorted(right.items())],
            "confusions": [{"true": classes.ids[t], "true_name": name(t), "predicted": classes.ids[p],
                            "predicted_name": name(p), "count": n}
                           for (t, p), n in sorted(wrong.items(), key=lambda kv: (-kv[1], kv[0]))[:confusions]]}


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
    # text retrieval: each image asks for its captions; one without captions scores 0 (CLIP_benchmark)
    positives: list[list[int]] = [[] for _ in range(len(features))]
    for text, owner in enumerate(owners):
        positives[owner].append(text)
    found_texts = rank(features.embeddings, captions, max(ks), device)
    texts = retrieval_metric.compute(predictions=found_texts.tolist(), references=positives, ks=list(ks))
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
