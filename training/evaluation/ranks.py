"""Top-1 accuracy at every rank of a tree: is the wrong answer at least the right genus?

Each class may carry a lineage, ``{rank: ancestor id}`` (from the ``lineage`` field of a built
dataset's entities; ``entitynet/build/lineage.py``, its ranks in ``builders/entitynet.py``). Two
chains are scored, each on its own: the taxonomic ranks (``acc1_species``, ``acc1_genus``, ``acc1_family``, ``acc1_order``,
``acc1_class``: CLIP_benchmark-style keys) and WordNet's hypernym levels (``acc1_hypernym1``
the direct hypernym, ``acc1_hypernym2``, ``acc1_hypernym3``).

Every rank of a chain is scored over the same images, so a column never falls up the tree (the
first version scored each rank over the images whose class had it, and the demo read family
0.636, order 0.357: other images, not worse answers):

- the chain's images are those with a true class carrying any of its ranks; a rank is shown when
  one of their classes carries it;
- an image is right at rank R when its predicted class is one of its true classes, or shares with
  one of them its ancestor at R or at a rank below R (two species of one genus are of one family,
  even where one's family is not recorded). A class without an ancestor at R (a family-level
  entity asked for its genus, or a rank the graph did not record) is thus judged at the nearest
  rank below R it has, or as the class itself. A class that is itself another's ancestor at R
  (the entity Felidae, the lion's family) falls in that taxon at R: Felidae for a lion's picture
  is right at the family, and so is the lion for a picture of Felidae.

How many images were scored is in the task result's ``rank_images`` (one count per key, the same
for a chain's keys).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from entitynet.builders.entitynet import HYPERNYMS, RANK_METRICS, TAXONOMIC

__all__ = ["RANK_METRICS", "rank_accuracies"]


def rank_accuracies(top1: Sequence[int], references: Sequence[Sequence[int]],
                    lineages: Sequence[Mapping[str, str]],
                    ids: Sequence[str] | None = None) -> tuple[dict[str, float], dict[str, int]]:
    """``({acc1_RANK: accuracy}, {acc1_RANK: images scored})`` for the shown ranks of both chains.
    ``top1[i]`` is image i's predicted class, ``references[i]`` its true classes, ``lineages[c]``
    class c's ``{rank: ancestor id}``, ``ids[c]`` its own id (a class that is itself a taxon of
    another class's lineage, Felidae for the lion, is that taxon: predicting it is right at its rank)."""
    scores: dict[str, float] = {}
    counted: dict[str, int] = {}
    for chain, with_species in ((TAXONOMIC, True), (HYPERNYMS, False)):
        chain_scores, images = _chain_accuracies(chain, top1, references, lineages, ids)
        if not chain_scores:
            continue
        species = chain_scores.pop("species")
        ranked = {"species": species, **chain_scores} if with_species else chain_scores
        for rank, value in ranked.items():
            scores[f"acc1_{rank}"], counted[f"acc1_{rank}"] = value, images
    return scores, counted


def _chain_accuracies(chain: Sequence[str], top1: Sequence[int], references: Sequence[Sequence[int]],
                      lineages: Sequence[Mapping[str, str]], ids: Sequence[str] | None) -> tuple[dict[str, float], int]:
    """``({rank: accuracy} with "species" for the classes themselves, images scored)`` of one chain."""
    in_chain = [(predicted, own) for predicted, own in zip(top1, references)
                if any(rank in lineages[c] for c in own for rank in chain)]
    shown = [rank for rank in chain if any(rank in lineages[c] for _, own in in_chain for c in own)]
    if not shown:
        return {}, 0
    right = dict.fromkeys(["species", *shown], 0)
    for predicted, own in in_chain:
        exact = predicted in own
        right["species"] += exact
        shared = exact
        for rank in chain:  # upwards: once an ancestor is shared, every rank above counts as right
            shared = shared or any(_same_taxon(rank, predicted, c, lineages, ids) for c in own)
            if rank in right:
                right[rank] += shared
    return {rank: hits / len(in_chain) for rank, hits in right.items()}, len(in_chain)


def _same_taxon(rank: str, predicted: int, true: int, lineages: Sequence[Mapping[str, str]],
                ids: Sequence[str] | None) -> bool:
    """Whether the two classes fall in one taxon at ``rank``: the same ancestor there, or one of
    them is the other's ancestor at that rank."""
    mine, theirs = lineages[true].get(rank), lineages[predicted].get(rank)
    if mine is not None and theirs == mine:
        return True
    return ids is not None and ((mine is not None and mine == ids[predicted]) or
                                (theirs is not None and theirs == ids[true]))
