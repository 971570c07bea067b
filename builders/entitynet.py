"""The ``datasets`` builder of EntityNet and LivingThings (installed as ``entitynet.builders.entitynet``).

datasets 5 runs no loading scripts, so this builder runs in-process: ``entitynet build`` prepares
the rows of each (domain, split) from a run directory and calls ``download_and_prepare`` with
parquet output, then lays the shards out as a Hub dataset repository (``data/living/``,
``data/other/``) whose card declares the two configs. Users never import this module: they call
``load_dataset("RUN/dataset", "livingthings")`` or ``load_dataset("ORG/entitynet", ...)``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq

from entitynet.records import Finding, StoredImage
from entitynet.tables import image_from_row, read_rows

# test_seen: held-out images of entities that have images in train (how well the model learnt the
# entities it saw), beside test (entities never seen: transfer)
SPLITS = ("train", "validation", "test", "test_seen")
# an image is living when one of its entities is; each configuration reads the domains it names
DOMAINS = ("living", "other")
CONFIG_DOMAINS = {"entitynet": DOMAINS, "livingthings": ("living",)}
# The ranks an entity's ``lineage`` names (entitynet/build/lineage.py fills it) and the result keys
# the evaluation scores at them (training/evaluation/ranks.py, the model card).
TAXONOMIC = ("genus", "family", "order", "class")
HYPERNYMS = ("hypernym1", "hypernym2", "hypernym3")
RANK_METRICS = ("acc1_species", *(f"acc1_{rank}" for rank in TAXONOMIC), *(f"acc1_{rank}" for rank in HYPERNYMS))

# The prepared rows: entitynet/build/rows.py writes them into one folder, Lookups reads them back.
PREPARED_ENTITIES = "entities.parquet"
PREPARED_QUERIES = "queries.parquet"
PREPARED_DUPLICATES = "duplicates.parquet"


def prepared_split(split: str) -> str:
    """The file listing a split's rows: (shard, row, domain) of each."""
    return f"{split}.parquet"


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

    domains: tuple[str, ...] = DOMAINS
    rows: str | None = None
    splits: tuple[str, ...] = SPLITS
    notes: dict[str, Any] = field(default_factory=dict)


class EntityNet(datasets.GeneratorBasedBuilder):
    BUILDER_CONFIG_CLASS = EntityNetConfig
    BUILDER_CONFIGS = [
        EntityNetConfig(name="entitynet", description="All domains.", domains=CONFIG_DOMAINS["entitynet"]),
        EntityNetConfig(name="livingthings", description="Animals, plants and fungi only.",
                        domains=CONFIG_DOMAINS["livingthings"]),
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
            path = folder / prepared_split(split)
            if not path.exists():
                continue
            table = pq.read_table(path, columns=["shard"]).column("shard").unique().to_pylist()
            # One job per image shard: num_proc splits this list between processes.
            generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"shards": sorted(table), "split": split}))
        return generators

    def _generate_examples(self, shards: list[str], split: str):
        lookups = Lookups(Path(self.config.rows))
        for shard in shards:
            yield from lookups.examples(shard, split, self.config.domains)


def unique_values(values: list[str | None]) -> list[str]:
    """The non-empty values, each once, in their first order."""
    seen: dict[str, None] = {}
    for value in values:
        if value and value not in seen:
            seen[value] = None
    return list(seen)


class Lookups:
    """What examples are made from, loaded once per builder process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.entities = {row["id"]: row for row in read_rows(folder / PREPARED_ENTITIES)}
        self.queries = {row["query_id"]: row for row in read_rows(folder / PREPARED_QUERIES)}
        self.extra: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in read_rows(folder / PREPARED_DUPLICATES):
            self.extra[row["canonical_url"]].append(row)
        self._assigned: dict[str, dict[str, list[tuple[int, str]]]] = {}

    def rows_of(self, split: str) -> dict[str, list[tuple[int, str]]]:
        if split not in self._assigned:
            by_shard: dict[str, list[tuple[int, str]]] = defaultdict(list)
            path = self.folder / prepared_split(split)
            for row in read_rows(path) if path.exists() else ():
                by_shard[row["shard"]].append((row["row"], row["domain"]))
            self._assigned[split] = by_shard
        return self._assigned[split]

    def examples(self, shard: str, split: str, domains: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
        wanted = [(row, domain) for row, domain in self.rows_of(split).get(shard, []) if domain in domains]
        if not wanted:
            return
        table = pq.read_table(shard).take([row for row, _ in wanted])
        for stored, (_, domain) in zip(map(image_from_row, table.to_pylist()), wanted):
            yield stored.image_id, self.example(stored, domain)

    def example(self, stored: StoredImage, domain: str) -> dict[str, Any]:
        duplicates = self.extra.get(stored.url, [])
        sources = stored.sources + [Finding(**s) for dup in duplicates for s in dup["sources"]]
        queries, entity_ids = [], []
        for source in sources:
            query = self.queries.get(source.query_id)
            for use in query["uses"] if query else []:
                if use["entity_id"] in self.entities:
                    queries.append((query["text"], use["kind"], use["entity_id"], use["attribute"]))
                    entity_ids.append(use["entity_id"])
        first = stored.sources[0] if stored.sources else None
        return {
            "image": {"bytes": stored.image, "path": None},
            "image_id": stored.image_id,
            "width": stored.width,
            "height": stored.height,
            "alt_texts": unique_values([s.text for s in sources]),
            "queries": [dict(zip(("text", "kind", "entity_id", "attribute"), q)) for q in dict.fromkeys(queries)],
            "entities": [self.entities[e] for e in dict.fromkeys(entity_ids)],
            # the stored image's URL first, then its alternatives (an import's other links), then duplicates'
            "urls": unique_values([stored.url, *stored.alternatives]
                            + [url for dup in duplicates for url in [dup["url"], *(dup.get("alternatives") or [])]]),
            "page_urls": unique_values([s.page_url for s in sources]),
            "engines": unique_values([s.engine for s in sources]),
            "license": first.license if first else None,
            "attribution": first.attribution if first else None,
            "domain": domain,
        }
