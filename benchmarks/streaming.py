"""Streaming against map-style input on the same dataset: time to the first batch, batches/s,
peak RSS, and what each leaves in the datasets cache.

A Hub-layout dataset of N rows (small 64 x 48 JPEGs, so the run measures the pipeline, not the
decoder; 1,000-row shards, row groups of 100 as `entitynet build` writes) is generated once.
Then, each in a fresh process with an empty HF_DATASETS_CACHE, the trainer's own input path:

- map-style: ``load_dataset`` (which writes the Arrow copy) + the train split's DataLoader with
  the seedable sampler, as ``training.train`` builds it when ``streaming`` is off;
- streaming: ``training.sources.resolve`` + ``StreamedRows`` + the same DataLoader settings.

Both use the trainer's Collator (text mix, crops, tokens) and 2 workers, and read ``--batches``
batches of 256 after the first. The time to the first batch counts from after the imports.
Targets (issue 9): streaming >= 0.9x map-style batches/s; first
step in seconds, not minutes.

    python benchmarks/streaming.py                    # 200,000 rows
    python benchmarks/streaming.py --rows 20000       # quick look
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CARD = """---
configs:
- config_name: livingthings
  data_files:
  - split: train
    path: data/living/train-*
---
"""

READER = r"""
import json, os, sys, time
import torch
from torch.utils.data import DataLoader
from entitynet.training.config import AugmentConfig, TextConfig
from entitynet.training.data import TRAIN_COLUMNS, Collator
from entitynet.training.model import train_tokenizer

mode, dataset, batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
tokenizer = train_tokenizer(["a picture of thing", "thing 1 2 3"] * 50, 400, 32)
collator = Collator(tokenizer, TextConfig(), AugmentConfig(), 48, seed=0, context_length=32)
started = time.perf_counter()  # imports and the tokenizer are the same for both
if mode == "map":
    import datasets
    rows = datasets.load_dataset(dataset, "livingthings", split="train")
    rows = rows.select_columns(list(TRAIN_COLUMNS)).cast_column("image", datasets.Image(decode=False))
    loader = DataLoader(rows, batch_size=256, shuffle=True, drop_last=True, collate_fn=collator, num_workers=2,
                        generator=torch.Generator().manual_seed(0))
else:
    from entitynet.training.sources import resolve
    from entitynet.training.stream import StreamedRows
    stream = StreamedRows(resolve(dataset, "livingthings", "train"), TRAIN_COLUMNS, 256, 0, 0, 1, 2, 10_000)
    loader = DataLoader(stream, batch_size=256, collate_fn=collator, num_workers=2, drop_last=True)
iterator = iter(loader)
next(iterator)
first = time.perf_counter() - started
begin = time.perf_counter()
for _ in range(batches):
    next(iterator)
rate = batches / (time.perf_counter() - begin)
cache = os.environ["HF_DATASETS_CACHE"]
arrow = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(cache) for f in fs if f.endswith(".arrow"))
print(json.dumps({"first_batch_s": round(first, 2), "batches_per_s": round(rate, 2), "arrow_cache_mb": round(arrow / 1e6, 1)}))
"""


def generate(folder: Path, rows: int) -> None:
    import datasets
    from PIL import Image

    from entitynet.builders.entitynet import FEATURES

    (folder / "data" / "living").mkdir(parents=True)
    (folder / "README.md").write_text(CARD)
    shards = -(-rows // 1000)
    for shard in range(shards):
        items = []
        for n in range(shard * 1000, min(rows, shard * 1000 + 1000)):
            buffer = io.BytesIO()
            Image.new("RGB", (64, 48), (n % 251, n % 241, n % 239)).save(buffer, "JPEG", quality=90)
            entity = {"id": f"Q{n // 8}", "name": f"thing {n // 8}", "aliases": [], "description": None,
                      "natural_type": "thing", "domain": "living", "common_names": [], "taxon_name": None,
                      "natural_type_aliases": [], "natural_type_description": None}
            items.append({"image": {"bytes": buffer.getvalue(), "path": None}, "image_id": f"{n:08d}", "width": 64,
                          "height": 48, "alt_texts": [f"a picture of thing {n // 8}"],
                          "queries": [{"text": entity["name"], "kind": "noun", "entity_id": entity["id"], "attribute": None}],
                          "entities": [entity], "urls": [], "page_urls": [], "engines": [], "license": None,
                          "attribution": None, "domain": "living"})
        datasets.Dataset.from_list(items, features=FEATURES).to_parquet(
            folder / "data" / "living" / f"train-{shard:05d}-of-{shards:05d}.parquet", batch_size=100)


def measure(mode: str, dataset: Path, batches: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "HF_DATASETS_CACHE": cache, "HF_HUB_OFFLINE": "1"}
        process = subprocess.Popen([sys.executable, "-c", READER, mode, str(dataset), str(batches)], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        result = json.loads(process.stdout.read())
    return {**result, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        dataset = Path(folder) / "dataset"
        started = time.perf_counter()
        generate(dataset, args.rows)
        print(f"generated {args.rows} rows in {time.perf_counter() - started:.0f}s", file=sys.stderr)
        runs: dict[str, list[dict]] = {"map": [], "stream": []}
        for _ in range(args.rounds):
            for mode in runs:
                runs[mode].append(measure(mode, dataset, args.batches))
    best = {mode: max(results, key=lambda r: r["batches_per_s"]) for mode, results in runs.items()}
    first = {mode: min(r["first_batch_s"] for r in results) for mode, results in runs.items()}
    summary = {"rows": args.rows, **{f"{mode}_{key}": value for mode in best for key, value in best[mode].items()},
               "map_first_batch_s": first["map"], "stream_first_batch_s": first["stream"],
               "stream_vs_map": round(best["stream"]["batches_per_s"] / best["map"]["batches_per_s"], 3)}
    print(json.dumps(summary))
    print(f"streaming {summary['stream_vs_map']:.2f}x map-style batches/s (target >= 0.9); first batch "
          f"{first['stream']:.1f}s streaming vs {first['map']:.1f}s map-style; Arrow copy "
          f"{best['stream']['arrow_cache_mb']} MB vs {best['map']['arrow_cache_mb']} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
