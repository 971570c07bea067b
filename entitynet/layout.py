"""The run directory's layout: every file and folder name in it, in one place.

A stage finds its inputs here, never by importing the stage that wrote them (importing the
download stage to learn the word "images" used to load 35 modules, the SPARQL and LLM clients
among them). This module imports nothing; ``RunDir`` (rundir.py) adds the root.

```
RUN/
  entities.parquet                      kg (or import)
  natural_types.parquet                 enrich (or import)
  attributes.parquet                    enrich
  queries.parquet                       queries (or import)
  candidates/part-NNNNN.parquet         search or import (+ _fingerprint: the settings the parts were made with)
  candidates/part-NNNNN.json            import: the part's counts, written last (its completion mark)
  images/shard-NNNNN.parquet            download: stored images
  images/shard-NNNNN.failures.parquet   download: every URL of the shard that was not stored, and why
  images/shard-NNNNN.json               download: the shard's counts, written last (its completion mark)
  images/failures.parquet               download: all shards' failures
  images/duplicates.parquet             download: identical and near-identical images -> their canonical one
  dataset/                              build: README.md (the card), data/{living,other}/*.parquet, images/,
                                          decontamination.csv (with build.exclude_near: evaluation image -> stored image)
  model/                                train: the CLIPModel folder (weights, tokenizer, image processor, card)
  checkpoints/step-NNNNNNNN/            train: save_state checkpoints (the rerun resumes from the newest)
  logs/metrics.jsonl                    train: one line per logged step
  tokenizer/                            train: the BPE trained on the dataset's texts (from scratch only)
  eval/                                 eval: one JSON per task, summary.md, summary.csv, classes.json (per class, confusions)
  report/                               report (and the end of run / demo): index.html, its figures and thumbnails
  summary.json                          entitynet run / demo: what each stage made, where, and the evaluations
  run.json                              the layout version that made this folder
  export/webdataset/                    export (default place)
  config/<stage>.yaml                   the resolved configuration a stage ran with
  config/run.yaml                       the whole configuration of the last `entitynet run` (or demo)
  stages/<stage>.json                   a stage's completion mark: fingerprint, versions, statistics
  cache/<stage>/                        what lets a stage resume (pages, answers, the download plan)
  demo.json, demo-pool/                 made by `entitynet demo` only (marker, pool)
```
"""

from __future__ import annotations

# The artifacts of the flow (pipeline.STAGES names which stage writes which).
ENTITIES = "entities.parquet"
NATURAL_TYPES = "natural_types.parquet"
ATTRIBUTES = "attributes.parquet"
QUERIES = "queries.parquet"
CANDIDATES = "candidates"
IMAGES = "images"
DATASET = "dataset"
DATASET_STAGING = ".dataset.building"  # assembled here, then renamed to DATASET
DECONTAMINATION = "decontamination.csv"  # in DATASET: evaluation image -> the stored image it matched (left out)
EXPORT = "export"
# train: the trainer's output_dir is RUN itself, so the trainer's OUTPUT/ names are these (training/train.py uses them)
MODEL = "model"
CHECKPOINTS = "checkpoints"
TRAIN_LOGS = "logs"
WISE_FT = "wise-ft"  # train with wise_ft.alphas: alpha-<a>/ per alpha, wise_ft.json, scores.csv/json/png
TOKENIZER = "tokenizer"  # train: a BPE trained on the dataset (models from scratch without model.tokenizer)
TOKENIZER_RECORD = "entitynet_tokenizer.json"  # in TOKENIZER: what it was made from; another run refuses or remakes it
EVAL = "eval"
EVAL_CLASSES = "classes.json"  # in EVAL: per task, each class's top-1 recall and the most frequent confusions
SUMMARY = "summary.json"
REPORT = "report"  # entitynet report: index.html and what it shows, beside it
RUN_CONFIG = "run.yaml"  # in CONFIG: the whole configuration of the last `entitynet run` / demo
# The run directory's own version: a folder made by another layout is refused, not mixed or upgraded.
# 3: no reader of older shapes any more (phash shards, rows without position, candidates without
# alternatives/split, markers of absolute paths or of every setting hashed).
RUN_MARKER = "run.json"
LAYOUT_VERSION = 3

# Bookkeeping (rundir.RunDir).
CONFIG = "config"
STAGES = "stages"
CACHE = "cache"
FINGERPRINT = "_fingerprint"  # in a folder made piece by piece: the settings its pieces belong to

# Inside CANDIDATES and IMAGES.
PART_GLOB = "part-*.parquet"
IMAGE_SHARD_GLOB = "shard-*[0-9].parquet"
FAILURES = "failures.parquet"
DUPLICATES = "duplicates.parquet"
PLAN = "plan"  # cache/download/plan/shard-NNNNN.parquet: the URLs of each shard

# `entitynet demo`: its marker (port, size; its presence says the images are synthetic) and its pool.
DEMO_MARKER = "demo.json"
DEMO_POOL = "demo-pool/pool.jsonl"


def part(number: int) -> str:
    """``part-00012.parquet``: one part of the candidates."""
    return f"part-{number:05d}.parquet"


def part_stats(number: int) -> str:
    """``part-00012.json``: the counts of an imported part, its completion mark."""
    return f"part-{number:05d}.json"


def shard(number: int) -> str:
    """``shard-00012``: the stem of a download shard's files (plan, images, failures, stats)."""
    return f"shard-{number:05d}"


def shard_images(number: int) -> str:
    return f"{shard(number)}.parquet"


def shard_failures(number: int) -> str:
    return f"{shard(number)}.failures.parquet"


def shard_stats(number: int) -> str:
    return f"{shard(number)}.json"
