"""Top-1 accuracy at every rank of a tree: is the wrong answer at least the right genus?

Each class may carry a lineage, ``{rank: ancestor id}`` (from the ``lineage`` field of a built
dataset's entities; ``entitynet/build/lineage.py``, its ranks in ``builders/entitynet.py``). At a rank R an image counts when its true
class has an ancestor at R, and is right when the predicted class has the same ancestor at R (a
predicted class without an ancestor at R is wrong there, unless it is the true class). With
several true classes an image is right when any of them qualifies. Keys are CLIP_benchmark-style:

- ``acc1_species``: the classes themselves (top-1 over the scored images whose classes carry a
  taxonomic lineage: a dataset's entities are mostly species), then ``acc1_genus``,
  ``acc1_family``, ``acc1_order``, ``acc1_class``, for the ranks at least one class has;
- ``acc1_hypernym1``, ``acc1_hypernym2``, ``acc1_hypernym3``: WordNet's hypernym that many
  levels above the class (1 = the direct hypernym).

How many images each rank scored is in the task result's ``rank_images``: a rank known for
few classes scores few images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from entitynet.builders.entitynet import RANK_METRICS, TAXONOMIC

__all__ = ["RANK_METRICS", "rank_accuracies"]


def rank_accuracies(top1: Sequence[int], references: Sequence[Sequence[int]],
                    lineages: Sequence[Mapping[str, str]]) -> tuple[dict[str, float], dict[str, int]]:
    """``({acc1_RANK: accuracy}, {acc1_RANK: images scored})`` for the ranks of ``RANK_METRICS``
    that some true class has. ``top1[i]`` is image i's predicted class, ``references[i]`` its true
    classes, ``lineages[c]`` class c's ``{rank: ancestor id}``."""
    scores: dict[str, float] = {}
    counted: dict[str, int] = {}
    taxonomic = any(rank in lineage for lineage in lineages for rank in TAXONOMIC)
    for key in RANK_METRICS:
        rank = key.removeprefix("acc1_")
        right = total = 0
        for predicted, own in zip(top1, references):
            if rank == "species":
                if not (taxonomic and any(any(r in lineages[c] for r in TAXONOMIC) for c in own)):
                    continue
                hit = predicted in own
            else:
                known = [c for c in own if rank in lineages[c]]
                if not known:
                    continue
                hit = predicted in own or any(lineages[predicted].get(rank) == lineages[c][rank] for c in known)
            total += 1
            right += hit
        if total:
            scores[key], counted[key] = right / total, total
    return scores, counted
