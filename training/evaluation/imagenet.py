"""ImageNet-1k's classes split into living things and other, derived from WordNet.

A class is *living* when its synset is living_thing.n.01 or one of its hyponyms (following
hypernyms and instance hypernyms). ImageNet's wnids are WordNet 3.0 noun offsets ("n01440764"),
so the synset is ``synset_from_pos_and_offset("n", 1440764)``. With WordNet 3.0 this gives 410
living and 590 other classes: the paper's "living things (410 of 1000 classes)".

The shipped table ``data/imagenet1k_classes.tsv`` (label index, wnid, CLIP_benchmark's class
name, domain) was written by this module::

    python -m entitynet.training.evaluation.imagenet \\
        --classnames PEER/site-packages/clip_benchmark/datasets/en_classnames.json \\
        --wnids PEER/site-packages/timm/data/_info/imagenet_synsets.txt

and the tests derive the domains again from WordNet and compare.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LIVING_ROOT = "living_thing.n.01"
TABLE = Path(__file__).parent / "data" / "imagenet1k_classes.tsv"
HEADER = (
    "# ImageNet-1k classes: label index, WordNet 3.0 id, class name, domain (living = hyponym of living_thing.n.01).\n"
    "# Class names: CLIP_benchmark's en_classnames.json (MIT licence, see LICENSE-CLIP_benchmark.txt).\n"
    "# Written by python -m entitynet.training.evaluation.imagenet.\n"
)


def domain_of(wordnet: Any, wnid: str) -> str:
    """``living`` or ``other`` for an ImageNet wnid, by WordNet 3.0's hypernym closure."""
    synset = wordnet.synset_from_pos_and_offset("n", int(wnid[1:]))
    living = wordnet.synset(LIVING_ROOT)
    above = set(synset.closure(lambda s: s.hypernyms() + s.instance_hypernyms()))
    return "living" if synset == living or living in above else "other"


def domains(wordnet: Any, wnids: Sequence[str]) -> list[str]:
    return [domain_of(wordnet, wnid) for wnid in wnids]


def write_table(path: Path, wnids: Sequence[str], names: Sequence[str], kinds: Sequence[str]) -> None:
    if len(wnids) != 1000 or list(wnids) != sorted(wnids):
        raise ValueError("expected the 1000 ImageNet-1k wnids in sorted order (the label order)")
    if len(names) != len(wnids):
        raise ValueError(f"{len(names)} class names for {len(wnids)} wnids")
    lines = [HEADER, "index\twnid\tname\tdomain\n"]
    lines += [f"{index}\t{wnid}\t{name}\t{kind}\n" for index, (wnid, name, kind) in enumerate(zip(wnids, names, kinds))]
    path.write_text("".join(lines), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    from entitynet.kg.wordnet import load_wordnet

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classnames", required=True, help="CLIP_benchmark's en_classnames.json")
    parser.add_argument("--wnids", required=True, help="the 1000 wnids, one per line, in label order")
    parser.add_argument("--out", default=str(TABLE), help="where the table goes")
    args = parser.parse_args(argv)
    names = json.loads(Path(args.classnames).read_text(encoding="utf-8"))["imagenet1k"]
    wnids = [line.strip() for line in Path(args.wnids).read_text().splitlines() if line.strip()]
    kinds = domains(load_wordnet(), wnids)
    write_table(Path(args.out), wnids, names, kinds)
    print(f"{kinds.count('living')} living, {kinds.count('other')} other classes -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
