"""Streaming training data: a Hub-layout folder and webdataset tars read where they lie, split
between processes and workers without overlap, resumed exactly (also after kill -9), no Arrow
copy in the datasets cache, and one clear message for a dataset that cannot feed training."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import datasets  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from entitynet.builders.entitynet import FEATURES  # noqa: E402
from entitynet.training import train as trainer  # noqa: E402
from entitynet.training.config import load_train_config  # noqa: E402
from entitynet.training.sources import DatasetProblem, expand_braces, resolve  # noqa: E402
from entitynet.training.stream import ShuffleOrder, StreamedRows  # noqa: E402

CARD = """---
configs:
- config_name: livingthings
  data_files:
  - split: train
    path: data/living/train-*
  - split: test
    path: data/living/test-*
---
# a streamed test dataset
"""


def picture(n: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), ((n * 37) % 256, (n * 91) % 256, (n * 53) % 256)).save(buffer, "JPEG")
    return buffer.getvalue()


def row(n: int, entity: int) -> dict:
    name = f"thing {entity}"
    return {"image": {"bytes": picture(n), "path": None}, "image_id": f"img{n:04d}", "width": 48, "height": 40,
            "alt_texts": [f"a picture of {name}, number {n}"],
            "queries": [{"text": name, "kind": "noun", "entity_id": f"Q{entity}", "attribute": None}],
            "entities": [{"id": f"Q{entity}", "name": name, "aliases": [], "description": None, "natural_type": "thing",
                          "domain": "living", "common_names": [], "taxon_name": None, "natural_type_aliases": [],
                          "natural_type_description": None}],
            "urls": [], "page_urls": [], "engines": [], "license": None, "attribution": None, "domain": "living"}


@pytest.fixture(scope="module")
def hub_layout(tmp_path_factory) -> Path:
    """3 train shards of 40 rows in row groups of 10 (an uneven count for 2 processes), a test shard."""
    folder = tmp_path_factory.mktemp("streamed") / "dataset"
    (folder / "data" / "living").mkdir(parents=True)
    (folder / "README.md").write_text(CARD)
    for shard in range(3):
        rows = [row(shard * 40 + i, (shard * 40 + i) // 4) for i in range(40)]
        datasets.Dataset.from_list(rows, features=FEATURES).to_parquet(
            folder / "data" / "living" / f"train-{shard:05d}-of-00003.parquet", batch_size=10)
    datasets.Dataset.from_list([row(1000 + i, 500 + i) for i in range(12)], features=FEATURES).to_parquet(
        folder / "data" / "living" / "test-00000-of-00001.parquet", batch_size=10)
    return folder


def ids_of(stream: StreamedRows, workers: int) -> list[str]:
    loader = DataLoader(stream, batch_size=stream.batch_size, num_workers=workers, drop_last=True,
                        collate_fn=lambda rows: [r["image_id"] for r in rows])
    return [image_id for batch in loader for image_id in batch]


def streams(source, world: int, workers: int, batch: int = 5, seed: int = 0) -> list[StreamedRows]:
    return [StreamedRows(source, ("image_id",), batch, seed, rank, world, workers, 16) for rank in range(world)]


def test_the_shuffle_buffer_is_a_seeded_permutation_with_bounded_reach():
    order = list(ShuffleOrder(0, 1000, 64, __import__("random").Random(1)))
    assert sorted(order) == list(range(1000)) and order != list(range(1000))
    assert order == list(ShuffleOrder(0, 1000, 64, __import__("random").Random(1)))
    # an item leaves the buffer at most a few buffer lengths after it entered
    assert max(abs(position - index) for index, position in enumerate(order)) < 64 * 8


def test_processes_and_workers_read_disjoint_parts_that_make_the_whole_epoch(hub_layout):
    source = resolve(str(hub_layout), "livingthings", "train")
    assert source.rows == 120 and len(source.files) == 3 and len(source.units) == 12  # row groups of 10
    for world, workers in [(1, 0), (2, 2), (3, 2)]:
        seen = [ids_of(stream, workers) for stream in streams(source, world, workers)]
        flat = [image_id for part in seen for image_id in part]
        assert len(flat) == len(set(flat)), f"{world} processes x {workers} workers: a row read twice"
        assert len({len(part) for part in seen}) == 1  # every process the same number of batches
        # 3 shards over 2 or 3 processes: rows, not shards, are split, so at most a batch per worker is left over
        assert len(flat) >= 120 - world * max(1, workers) * 5, (world, workers, len(flat))
    # epochs differ in order; the same epoch is the same order
    one = streams(source, 1, 2)[0]
    first = ids_of(one, 2)
    assert ids_of(one, 2) == first
    one.epoch = 1
    assert ids_of(one, 2) != first and sorted(ids_of(one, 2)) == sorted(first)


def test_a_resumed_stream_continues_with_the_same_rows(hub_layout):
    source = resolve(str(hub_layout), "livingthings", "train")
    stream = streams(source, 2, 2, batch=4)[1]
    whole = ids_of(stream, 2)
    for skip in (1, 2, 5, 9):
        stream.skip_batches = skip
        assert ids_of(stream, 2) == whole[skip * 4:], f"resumed after {skip} batches"
    stream.skip_batches = 0


def test_webdataset_tars_stream_like_the_parquet_they_were_exported_from(hub_layout, tmp_path):
    from entitynet.export import export_webdataset

    export_webdataset(hub_layout, tmp_path / "wds", samples_per_shard=25)
    indexed = resolve(str(tmp_path / "wds"), "livingthings", "train")
    assert indexed.kind == "webdataset" and indexed.rows == 120 and len(indexed.files) == 5
    (tmp_path / "wds" / "living" / "index.json").unlink()  # local tars are counted without an index
    counted = resolve(str(tmp_path / "wds"), "livingthings", "train")
    assert counted.units == indexed.units
    stream = StreamedRows(counted, ("image_id",), 5, 0, 0, 1, 2, 16)
    assert sorted(ids_of(stream, 2)) == sorted(f"img{n:04d}" for n in range(120))
    pattern = str(tmp_path / "wds" / "living" / "train-{00000..00004}.tar")
    assert expand_braces(pattern) == list(counted.files)
    assert resolve(pattern, "livingthings", "train").rows == 120


def tiny(dataset: Path, out: Path, *extra: str):
    return load_train_config("tiny", [f"dataset={dataset}", f"output_dir={out}", "batch_size=4", "streaming=true",
                                      "shuffle_buffer=16", "num_workers=2", "log_every=1", *extra])


def test_a_streaming_run_writes_no_arrow_copy_and_evaluates_on_a_sample(hub_layout, tmp_path, monkeypatch):
    cache = tmp_path / "hf-datasets-cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    result = trainer.train(tiny(hub_layout, tmp_path / "out", "max_steps=4"))
    assert result["step"] == 4 and result["metrics"]["num_classes"] > 1
    arrow = [p for p in cache.rglob("*") if p.suffix == ".arrow"] if cache.exists() else []
    assert not arrow, f"an Arrow copy was written: {arrow[:3]}"
    lines = [json.loads(line) for line in (tmp_path / "out" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]


@pytest.mark.slow
def test_two_processes_stream_disjoint_rows(hub_layout, tmp_path):
    """A real two-process run (debug_launcher) streams without deadlock: the processes read their
    own parts (checked above) and take the same number of steps."""
    command = [sys.executable, str(Path(__file__).with_name("distributed_cases.py")), "train", str(hub_layout),
               str(tmp_path / "two"), "batch_size=8", "streaming=true", "num_workers=2", "max_steps=8",
               "log_every=1", "checkpoint_every=8"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in (tmp_path / "two" / "logs" / "metrics.jsonl").read_text().splitlines()]
    # 60 rows per process, 30 per worker: 3 batches of 8 each, 6 per epoch
    assert [line["epoch"] for line in lines if "epoch" in line] == [0] * 6 + [1] * 2


@pytest.mark.slow
def test_kill_9_during_a_streaming_run_resumes_to_the_same_weights(hub_layout, tmp_path, caplog):
    from helpers import kill_when

    arguments = ["--config", "tiny", "--dataset", str(hub_layout), "--max-steps", "40", "--set", "batch_size=4",
                 "--set", "streaming=true", "--set", "shuffle_buffer=16", "--set", "num_workers=2",
                 "--set", "checkpoint_every=3", "--set", "log_every=40"]
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "entitynet.training.train", *arguments, "--output-dir", str(killed)]
    # step 33 is in the second epoch (30 batches per epoch): the resume lands mid-epoch
    kill_when(command, killed / "checkpoints" / "step-00000033", seconds=180)
    assert not (killed / "model").exists(), "the run finished before it could be killed"
    with caplog.at_level("INFO", logger="entitynet.training.train"):  # the same command, rerun in this process
        assert trainer.main([*arguments, "--output-dir", str(killed)]) == 0
    assert "resuming from" in caplog.text
    trainer.train(tiny(hub_layout, tmp_path / "straight", "max_steps=40", "checkpoint_every=40", "log_every=40"))
    a, b = load_file(str(tmp_path / "straight" / "model" / "model.safetensors")), load_file(str(killed / "model" / "model.safetensors"))
    assert all(torch.equal(a[name], b[name]) for name in a), "the resumed streaming run differs from an uninterrupted one"


def test_a_dataset_that_cannot_feed_training_stops_with_one_clear_message(hub_layout, tmp_path, capsys):
    def run(dataset: str, *extra: str) -> str:
        capsys.readouterr()
        started = time.monotonic()
        code = trainer.main(["--config", "tiny", "--dataset", dataset, "--output-dir", str(tmp_path / "out"), *extra])
        error = capsys.readouterr().err
        assert code == 1 and time.monotonic() - started < 60, error
        assert "Traceback" not in error and error.count("\n") == 1, error
        return error

    assert "no such dataset folder" in run(str(tmp_path / "nowhere"))
    assert "BuilderConfig 'entitynet' not found" in run(str(hub_layout), "--set", "dataset_config=entitynet")
    with pytest.raises(DatasetProblem, match="has no split 'validation'; it has: train, test"):
        resolve(str(hub_layout), "livingthings", "validation")
    plain = tmp_path / "plain"
    (plain / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).to_parquet(plain / "data" / "train-00000.parquet")
    assert "lack the columns training needs: image, image_id" in run(str(plain))
    tars = tmp_path / "tars"
    tars.mkdir()
    import tarfile

    with tarfile.open(tars / "00000.tar", "w") as archive:
        info = tarfile.TarInfo("a.txt")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))
    assert "hold no images" in run(str(tars))
    with pytest.raises(DatasetProblem, match="no tar shards for the test split"):
        resolve(str(tars), "livingthings", "test")


def test_streaming_is_chosen_by_source_and_size(hub_layout, tmp_path):
    source = resolve(str(hub_layout), "livingthings", "train")
    config = load_train_config("tiny", [f"dataset={hub_layout}", f"output_dir={tmp_path}"])
    assert not trainer.wants_streaming(config, source)  # small and local
    assert trainer.wants_streaming(load_train_config("tiny", [f"dataset={hub_layout}", f"output_dir={tmp_path}",
                                                              "streaming=true"]), source)
    big = type(source)(source.name, source.kind, source.split, source.files, source.units, 3 * 1024**3)
    assert trainer.wants_streaming(config, big)
    hub = load_train_config("tiny", ["dataset=someone/entitynet", f"output_dir={tmp_path}"])
    assert trainer.wants_streaming(hub, source)
    assert Counter(u.file for u in source.units).most_common(1)[0][1] == 4
