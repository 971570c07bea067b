"""The ``datasets`` builder of EntityNet and LivingThings (installed as ``entitynet.builders.entitynet``).

datasets 5 runs no loading scripts, so this builder runs in-process: ``entitynet build`` prepares
the rows of each (domain, split) from a run directory and calls ``download_and_prepare`` with
parquet output, then lays the shards out as a Hub dataset repository (``data/living/``,
``data/other/``) whose card declares the two configs. Users never import this module: they call
``load_dataset("RUN/dataset", "livingthings")`` or ``load_dataset("ORG/entitynet", ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq

_DESCRIPTION = """\
EntityNet: image-text pairs harvested for the entities of a knowledge graph (Wikidata and WordNet),
after "Using Knowledge Graphs to harvest datasets for efficient CLIP model training" (Ging et al.,
2025). Each row is one unique image with every alt text, search query and entity that found it.
LivingThings is the subset of animals, plants and fungi.
"""

CITATION = """\
@article{ging2025knowledgegraphs,
  title   = {Using Knowledge Graphs to harvest datasets for efficient CLIP model training},
  author  = {Ging, Simon and Walter, Sebastian and Bratuli{\\'c}, Jelena and Dienert, Johannes and Bast, Hannah and Brox, Thomas},
  journal = {arXiv preprint arXiv:2505.02746},
  year    = {2025}
}
"""

FEATURES = datasets.Features({
    "image": datasets.Image(),
    "image_id": datasets.Value("string"),
    "width": datasets.Value("int32"),
    "height": datasets.Value("int32"),
    "alt_texts": datasets.List(datasets.Value("string")),
    "queries": datasets.List({
        "text": datasets.Value("string"),
        "kind": datasets.Value("string"),
        "entity_id": datasets.Value("string"),
        "attribute": datasets.Value("string"),
    }),
    "entities": datasets.List({
        "id": datasets.Value("string"),
        "name": datasets.Value("string"),
        "aliases": datasets.List(datasets.Value("string")),
        "description": datasets.Value("string"),
        "natural_type": datasets.Value("string"),
        "domain": datasets.Value("string"),
        "common_names": datasets.List(datasets.Value("string")),
        "taxon_name": datasets.Value("string"),
        # other names and the description of the natural type, for the trainer's text mix
        "natural_type_aliases": datasets.List(datasets.Value("string")),
        "natural_type_description": datasets.Value("string"),
        # ancestors the evaluation scores at (acc1_genus, acc1_hypernym1, ...): entitynet/build/lineage.py
        "lineage": datasets.List({"rank": datasets.Value("string"), "id": datasets.Value("string"),
                                  "name": datasets.Value("string")}),
    }),
    "urls": datasets.List(datasets.Value("string")),
    "page_urls": datasets.List(datasets.Value("string")),
    "engines": datasets.List(datasets.Value("string")),
    "license": datasets.Value("string"),
    "attribution": datasets.Value("string"),
    "domain": datasets.Value("string"),
})


@dataclass
class EntityNetConfig(datasets.BuilderConfig):
    """``rows``: a prepared folder with one parquet per split listing (shard, row, entity ids)
    and the lookups (entities, queries, merged duplicates) the examples are made from."""

    domains: tuple[str, ...] = ("living", "other")
    rows: str | None = None
    splits: tuple[str, ...] = ("train", "validation", "test", "test_seen")
    notes: dict[str, Any] = field(default_factory=dict)


class EntityNet(datasets.GeneratorBasedBuilder):
    BUILDER_CONFIG_CLASS = EntityNetConfig
    BUILDER_CONFIGS = [
        EntityNetConfig(name="entitynet", description="All domains.", domains=("living", "other")),
        EntityNetConfig(name="livingthings", description="Animals, plants and fungi only.", domains=("living",)),
    ]
    DEFAULT_CONFIG_NAME = "entitynet"

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION, features=FEATURES, citation=CITATION,
            homepage="https://arxiv.org/abs/2505.02746",
            license="Each image keeps the licence of its source, given in its row; the metadata is CC0.",
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        if not self.config.rows:
            raise ValueError("the EntityNet builder reads a prepared run: use `entitynet build --run RUN`")
        folder = Path(self.config.rows)
        generators = []
        for split in self.config.splits:
            path = folder / f"{split}.parquet"
            if not path.exists():
                continue
            table = pq.read_table(path, columns=["shard"]).column("shard").unique().to_pylist()
            # One job per image shard: num_proc splits this list between processes.
            generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"shards": sorted(table), "split": split}))
        return generators

    def _generate_examples(self, shards: list[str], split: str):
        from entitynet.build.rows import Lookups

        lookups = Lookups(Path(self.config.rows))
        for shard in shards:
            yield from lookups.examples(shard, split, self.config.domains)
