"""Replay (``mix``): every batch holds each source's share in whole rows, on one process and two, with
any number of workers; a replay source runs through epochs of its own and a resume continues every
source exactly; replay sets without entity fields (webdataset .jpg + .txt, a plain image-text
parquet) give their alt texts; bad mixes are refused with the entry named."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import datasets  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from test_streaming import CARD, hub_layout, picture, row  # noqa: E402,F401  (hub_layout: 120 rows, ids img0000-img0119)
from torch.utils.data import DataLoader  # noqa: E402

from entitynet.builders.entitynet import FEATURES  # noqa: E402
from entitynet.training import train as trainer  # noqa: E402
from entitynet.training.config import TextConfig, load_train_config  # noqa: E402
from entitynet.training.mix import MixedRows  # noqa: E402
from entitynet.training.sources import resolve  # noqa: E402
from entitynet.training.text_mix import sample_text  # noqa: E402

CASES = Path(__file__).with_name("distributed_cases.py")


@pytest.fixture(scope="module")
def replay_layout(tmp_path_factory) -> Path:
    """A second dataset in our layout: 8 rows (ids rep0000-rep0007), so a replay runs through many epochs."""
    folder = tmp_path_factory.mktemp("replay") / "dataset"
    (folder / "data" / "living").mkdir(parents=True)
    (folder / "README.md").write_text(CARD.replace("  - split: test\n    path: data/living/test-*\n", ""))
    rows = [{**row(2000 + n, 900 + n), "image_id": f"rep{n:04d}"} for n in range(8)]
    datasets.Dataset.from_list(rows, features=FEATURES).to_parquet(
        folder / "data" / "living" / "train-00000-of-00001.parquet", batch_size=10)
    return folder


@pytest.fixture(scope="module")
def tar_replay(tmp_path_factory) -> Path:
    """img2dataset-style tars: only {key}.jpg and {key}.txt (no entity fields), keys tar0000-tar0011."""
    folder = tmp_path_factory.mktemp("tars")
    for shard in range(2):
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as archive:
            for n in range(shard * 6, shard * 6 + 6):
                for suffix, data in (("jpg", picture(3000 + n)), ("txt", f"a caption from the web, number {n}".encode())):
                    info = tarfile.TarInfo(f"tar{n:04d}.{suffix}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    return folder


def write_tar(path: Path, samples: list[tuple[str, str | None]]) -> None:
    """{key}.jpg, with {key}.txt when its caption is not None."""
    with tarfile.open(path, "w") as archive:
        for number, (key, caption) in enumerate(samples):
            parts = [("jpg", picture(4000 + number))] + ([("txt", caption.encode())] if caption is not None else [])
            for suffix, data in parts:
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))


def prefix_counts(batch: list[str]) -> dict[str, int]:
    return dict(Counter(image_id[:3] for image_id in batch))


def mixed_batches(mixed: MixedRows, workers: int) -> list[list[str]]:
    loader = DataLoader(mixed, batch_size=mixed.batch_size, num_workers=workers, drop_last=True,
                        collate_fn=lambda rows: [r["image_id"] for r in rows])
    return list(loader)


def mixed(sources, shares: list[int], workers: int, rank: int = 0, world: int = 1) -> MixedRows:
    return MixedRows(sources, shares, ("image_id", "alt_texts", "queries"), 0, rank, world, workers, 16)


@pytest.mark.parametrize("workers", [0, 2])
def test_every_batch_holds_each_sources_share_and_replays_run_through_their_own_epochs(
        hub_layout, replay_layout, tar_replay, workers):  # noqa: F811
    sources = [resolve(str(hub_layout), "livingthings", "train"), resolve(str(replay_layout), "livingthings", "train"),
               resolve(str(tar_replay), "livingthings", "train")]
    rows = mixed(sources, [5, 2, 1], workers)
    batches = mixed_batches(rows, workers)
    assert len(batches) == rows.batches_per_epoch() == 24  # the main dataset's 120 rows, 5 a batch
    assert all(prefix_counts(batch) == {"img": 5, "rep": 2, "tar": 1} for batch in batches), batches[:3]
    main = [i for batch in batches for i in batch if i.startswith("img")]
    assert sorted(main) == [f"img{n:04d}" for n in range(120)]  # the main epoch: every row once
    # the replay of 8 rows, 2 a batch: an epoch of its own every 4 batches, each its 8 rows once, in a new order
    replay = [i for batch in batches for i in batch if i.startswith("rep")]
    epochs = [replay[start:start + 8] for start in range(0, len(replay), 8)]
    assert len(epochs) == 6 and all(sorted(epoch) == [f"rep{n:04d}" for n in range(8)] for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1
    tars = [i for batch in batches for i in batch if i.startswith("tar")]
    assert all(sorted(tars[start:start + 12]) == [f"tar{n:04d}" for n in range(12)] for start in (0, 12))
    # the next main epoch continues the replays where the last one left them
    rows.epoch = 1
    following = mixed_batches(rows, workers)
    assert [i for batch in following for i in batch if i.startswith("rep")][:8] != epochs[0]


def test_a_resumed_mix_continues_every_source_exactly(hub_layout, replay_layout, tar_replay):  # noqa: F811
    """Stopped anywhere, in the middle of a replay epoch or of the main one, the batches that follow
    are the uninterrupted run's, for every source."""
    sources = [resolve(str(hub_layout), "livingthings", "train"), resolve(str(replay_layout), "livingthings", "train"),
               resolve(str(tar_replay), "livingthings", "train")]
    for workers, rank, world in [(2, 0, 1), (2, 1, 2)]:
        rows = mixed(sources, [5, 2, 1], workers, rank, world)
        per_epoch = rows.batches_per_epoch()
        whole = []
        for epoch in range(2):
            rows.epoch, rows.skip_batches = epoch, 0
            whole.extend(mixed_batches(rows, workers))
        assert len(whole) == 2 * per_epoch
        for epoch, skip in [(0, 1), (0, 3), (0, 5), (1, 0), (1, 2), (1, per_epoch - 1)]:
            rows.epoch, rows.skip_batches = epoch, skip
            resumed = mixed_batches(rows, workers)
            start = epoch * per_epoch + skip
            assert resumed == whole[start:(epoch + 1) * per_epoch], (workers, world, epoch, skip)


def test_two_processes_split_every_source_and_each_global_batch_holds_twice_the_shares(
        hub_layout, replay_layout, tar_replay):  # noqa: F811
    """The plan of each process, as the trainer builds it per rank: disjoint main rows, the replay
    shares in every batch of both, so a global batch of 2 x 8 holds 10 + 4 + 2."""
    sources = [resolve(str(hub_layout), "livingthings", "train"), resolve(str(replay_layout), "livingthings", "train"),
               resolve(str(tar_replay), "livingthings", "train")]
    for workers in (0, 2):
        ranks = [mixed_batches(mixed(sources, [5, 2, 1], workers, rank, 2), workers) for rank in range(2)]
        assert len(ranks[0]) == len(ranks[1]) == 12
        for first, second in zip(*ranks):
            assert prefix_counts(first + second) == {"img": 10, "rep": 4, "tar": 2}
        main = [i for batches in ranks for batch in batches for i in batch if i.startswith("img")]
        assert len(main) == len(set(main)) == 120
        # 8 replay rows: 4 per process, an epoch of the replay every 2 batches on each
        assert {i for batch in ranks[0] for i in batch if i.startswith("rep")}.isdisjoint(
            {i for batch in ranks[1] for i in batch if i.startswith("rep")})


def test_a_webdataset_replay_of_jpg_and_txt_pairs_each_image_with_its_caption(tar_replay):
    source = resolve(str(tar_replay), "livingthings", "train")
    assert source.kind == "webdataset" and source.rows == 12
    rows = list(mixed([source, source], [1, 1], 0))
    assert len(rows) == 24
    text = TextConfig()
    for row_ in rows:
        number = int(row_["image_id"][3:])
        assert row_["queries"] == [] and row_["entities"] == []
        assert sample_text(row_, text, 0, 0) == f"a caption from the web, number {number}"


def test_a_plain_image_text_parquet_replays_its_alt_texts(tmp_path):
    """A parquet of image, image_id and alt_texts only: the missing columns are not read."""
    folder = tmp_path / "plain"
    (folder / "data").mkdir(parents=True)
    features = datasets.Features({"image": datasets.Image(), "image_id": datasets.Value("string"),
                                  "alt_texts": datasets.Sequence(datasets.Value("string"))})
    datasets.Dataset.from_dict({"image": [{"bytes": picture(n), "path": None} for n in range(6)],
                                "image_id": [f"pla{n}" for n in range(6)],
                                "alt_texts": [[f"plain caption {n}"] for n in range(6)]},
                               features=features).to_parquet(folder / "data" / "train-00000.parquet")
    source = resolve(str(folder), "livingthings", "train")  # only a "default" configuration: found all the same
    assert source.columns == ("alt_texts", "image", "image_id")
    rows = list(mixed([source, source], [1, 2], 0))
    assert {sample_text(r, TextConfig(), 0, 0) for r in rows} == {f"plain caption {n}" for n in range(6)}


# --- through the trainer -----------------------------------------------------------------------
def mixed_config(dataset: Path, out: Path, mix: str, *extra: str):
    return load_train_config("tiny", [f"dataset={dataset}", f"output_dir={out}", "batch_size=8", "log_every=1",
                                      "shuffle_buffer=16", "num_workers=2", f"mix={mix}", *extra])


def same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


def test_a_stopped_mixed_run_resumes_to_the_weights_of_an_uninterrupted_one_and_refuses_another_mix(
        hub_layout, replay_layout, tar_replay, tmp_path, caplog):  # noqa: F811
    # 8 rows per process: 5 of the main dataset, 2 of the 8-row replay (an epoch every 4 batches), 1 of the tars;
    # stopped at step 3, the resumed steps cross the replay's epoch
    mix = f"[{{dataset: {replay_layout}, weight: 0.25}}, {{dataset: {tar_replay}, weight: 0.125}}]"
    steps = ["max_steps=6", "checkpoint_every=3"]
    with caplog.at_level("INFO", logger="entitynet.training.train"):
        trainer.train(mixed_config(hub_layout, tmp_path / "straight", mix, *steps))
    assert "streaming" in caplog.text and "a mix is always streamed" in caplog.text  # a small local main dataset
    assert f"5 rows of {hub_layout}, 2 of {replay_layout} (weight 0.25; its 8 rows are an epoch every 4 batches)" \
        in caplog.text
    state = json.loads((tmp_path / "straight" / "checkpoints" / "step-00000006" / trainer.STATE_FILE).read_text())
    assert state["data"]["mix_rows"] == [5, 2, 1] and state["data"]["mix"][0]["weight"] == 0.25
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed", ignore=shutil.ignore_patterns("model", "step-00000006"))
    result = trainer.train(mixed_config(hub_layout, tmp_path / "resumed", mix, *steps))
    assert [point["step"] for point in result["history"]] == [4, 5, 6]
    assert same_weights(tmp_path / "straight", tmp_path / "resumed")
    card = (tmp_path / "straight" / "model" / "README.md").read_text()
    assert "replay" in card and "weight 0.25" in card and "2 of 8 rows" in card, card
    # another mix is another experiment: refused before anything is loaded or written
    shutil.rmtree(tmp_path / "resumed" / "model")
    other = f"[{{dataset: {replay_layout}, weight: 0.375}}]"
    with pytest.raises(trainer.ResumeMismatch, match=r"\(mix differ\)"):
        trainer.train(mixed_config(hub_layout, tmp_path / "resumed", other, *steps))
    assert not (tmp_path / "resumed" / "model").exists()
    with pytest.raises(trainer.ResumeMismatch, match=r"\(mix differ\)"):  # the checkpoint had a mix, this run none
        trainer.train(mixed_config(hub_layout, tmp_path / "resumed", "[]", *steps))


def test_a_replay_source_that_cannot_feed_training_is_named(hub_layout, tmp_path):  # noqa: F811
    texts = tmp_path / "textless"
    (texts / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({"image": [{"bytes": picture(1), "path": None}], "image_id": ["x"]},
                               features=datasets.Features({"image": datasets.Image(), "image_id": datasets.Value("string")})
                               ).to_parquet(texts / "data" / "train-00000.parquet")
    with pytest.raises(trainer.DataError, match=rf"^mix\[1\] \({texts}\): .*lack the columns training needs: alt_texts or queries"):
        trainer.train(mixed_config(hub_layout, tmp_path / "a", f"[{{dataset: {hub_layout}, weight: 0.25}}, "
                                                              f"{{dataset: {texts}, weight: 0.25}}]", "max_steps=1"))
    with pytest.raises(trainer.DataError, match=rf"^mix\[0\] \({tmp_path / 'nowhere'}\): .*no such dataset"):
        trainer.train(mixed_config(hub_layout, tmp_path / "b", f"[{{dataset: {tmp_path / 'nowhere'}, weight: 0.25}}]",
                                   "max_steps=1"))
    small = tmp_path / "small"
    small.mkdir()
    write_tar(small / "00000.tar", [(f"s{n}", f"caption {n}") for n in range(3)])
    # 3 samples cannot give 2 workers a batch of 2 rows each
    with pytest.raises(trainer.DataError, match=rf"^mix\[0\] \({small}\): the train split has 3 rows, fewer than 2 rows "
                                                r"per batch x 2 workers x 1 processes"):
        trainer.train(mixed_config(hub_layout, tmp_path / "c", f"[{{dataset: {small}, weight: 0.25}}]", "max_steps=1"))
    assert not (tmp_path / "c" / "checkpoints").exists()


@pytest.mark.slow
def test_two_real_processes_draw_each_share_of_every_global_batch(hub_layout, replay_layout, tar_replay, tmp_path):  # noqa: F811
    """Under debug_launcher, each process takes the trainer's mixed batches as it builds them for its
    rank; gathered, every global batch of 2 x 8 holds 10 + 4 + 2 rows, with 0 and 2 workers."""
    mix = f"[{{dataset: {replay_layout}, weight: 0.25}}, {{dataset: {tar_replay}, weight: 0.125}}]"
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        done = subprocess.run([sys.executable, str(CASES), "mixed_batches", str(hub_layout), str(out), "batch_size=8",
                               f"num_workers={workers}", "shuffle_buffer=16", f"mix={mix}"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        ranks = json.loads((out / "batches.json").read_text())
        assert len(ranks) == 2 and len(ranks[0]) == len(ranks[1]) == 12
        for first, second in zip(*ranks):
            assert prefix_counts(first + second) == {"img": 10, "rep": 4, "tar": 2}
        main = [i for batches in ranks for batch in batches for i in batch if i.startswith("img")]
        assert len(main) == len(set(main)) == 120


@pytest.mark.slow
def test_two_real_processes_resume_a_mixed_run_exactly(hub_layout, replay_layout, tar_replay, tmp_path):  # noqa: F811
    """Stopped after the step-3 checkpoint and resumed, on two processes: the weights of an
    uninterrupted two-process run (each replay crosses its epoch on both processes after the stop)."""
    mix = f"[{{dataset: {replay_layout}, weight: 0.25}}, {{dataset: {tar_replay}, weight: 0.125}}]"
    steps = ["batch_size=8", "max_steps=5", "checkpoint_every=3", "log_every=1", "num_workers=2", "shuffle_buffer=16",
             f"mix={mix}"]

    def two_processes(case: str, *args: object) -> None:
        done = subprocess.run([sys.executable, str(CASES), case, *map(str, args)], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

    two_processes("train", hub_layout, tmp_path / "straight", *steps)
    two_processes("stopped", 3, hub_layout, tmp_path / "resumed", *steps)
    assert not (tmp_path / "resumed" / "model").exists()
    two_processes("train", hub_layout, tmp_path / "resumed", *steps)
    assert same_weights(tmp_path / "straight", tmp_path / "resumed")


@pytest.mark.parametrize("workers", [0, 2])
def test_tar_samples_without_a_text_are_named_before_any_work_or_at_their_batch(hub_layout, tmp_path, workers):  # noqa: F811
    """img2dataset run without captions writes .jpg alone: the first version stopped at the first
    batch with a traceback from the collator ("neither an alt text nor a query")."""
    bare = tmp_path / "bare"
    bare.mkdir()
    write_tar(bare / "00000.tar", [(f"b{n}", None) for n in range(12)])
    with pytest.raises(trainer.DataError, match=rf"^mix\[0\] \({bare}\): {bare / '00000.tar'}: sample b0 has an image "
                                                r"but no text to pair it with"):
        trainer.train(mixed_config(hub_layout, tmp_path / "a", f"[{{dataset: {bare}, weight: 0.25}}]", "max_steps=1"))
    assert not (tmp_path / "a" / "checkpoints").exists()
    # the first samples have their captions, a late one none: refused at the batch that reads it (in a
    # loader worker with workers > 0), in one line, the steps before it kept
    late = tmp_path / "late"
    late.mkdir()
    write_tar(late / "00000.tar", [(f"l{n}", None if n == 20 else f"caption {n}") for n in range(24)])
    config = load_train_config("tiny", [f"dataset={late}", f"output_dir={tmp_path / 'b'}", "batch_size=4",
                                        "shuffle_buffer=4", f"num_workers={workers}", "max_steps=6",
                                        "checkpoint_every=1", "model.vocab_size=300", "model.tokenizer_rows=4"])
    with pytest.raises(trainer.DataError) as raised:
        trainer.train(config)
    assert str(raised.value) == f"{late / '00000.tar'}: sample l20 has an image but no text to pair it with " \
                                "(a .txt, or alt_texts or queries in its .json)"
    assert trainer.latest_checkpoint(tmp_path / "b" / "checkpoints") is not None


def test_each_pass_over_a_small_replay_set_draws_new_crops_and_texts(hub_layout, replay_layout):  # noqa: F811
    """The collator seeded crops and texts by (seed, main epoch, image): a replay set that runs
    through 6 of its epochs in one main epoch showed each image 6 times with the same crop and text."""
    from entitynet.training.config import AugmentConfig
    from entitynet.training.data import Collator
    from entitynet.training.mix import DRAW
    from entitynet.training.model import train_tokenizer

    sources = [resolve(str(hub_layout), "livingthings", "train"), resolve(str(replay_layout), "livingthings", "train")]
    loader = DataLoader(mixed(sources, [6, 2], 0), batch_size=8, collate_fn=lambda rows: rows)
    rows = [row for batch in loader for row in batch]
    replays = [row for row in rows if row["image_id"] == "rep0000"]
    assert [row[DRAW] for row in replays] == [f"replay1.{epoch}" for epoch in range(len(replays))] and len(replays) >= 3
    assert all(DRAW not in row for row in rows if row["image_id"].startswith("img"))
    collator = Collator(train_tokenizer(["a b c"] * 4, 300, 16), TextConfig(), AugmentConfig(), 32, 0, 16)
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()  # a gradient, so that two crops of it differ
    Image.fromarray(np.add.outer(np.arange(96), np.arange(128)).astype(np.uint8)).convert("RGB").save(buffer, "PNG")
    image = {"bytes": buffer.getvalue(), "path": None}
    crops = [collator.crop({**row, "image": image}) for row in replays]
    assert len({crop.tobytes() for crop in crops}) == len(crops)  # a new crop on each pass
    same_pass = {**replays[0], "image": image}
    assert collator.crop(same_pass).tobytes() == crops[0].tobytes()  # and the same one for the same pass: exact resume


def test_a_replay_row_without_text_or_with_a_broken_image_stops_training_in_one_line(hub_layout, tmp_path):  # noqa: F811
    """A row of a plain parquet replay with no alt text, or an undecodable image, raised a ValueError
    inside a loader worker: a traceback, without the mix entry it came from."""
    features = datasets.Features({"image": datasets.Image(), "image_id": datasets.Value("string"),
                                  "alt_texts": datasets.Sequence(datasets.Value("string"))})
    for case, image, texts, message in [
            ("textless", picture(1), [], "image bad has neither an alt text nor a query to be paired with "
                                         "(replay source mix[0])"),
            ("broken", b"not an image", ["a caption"], "image bad (replay source mix[0]) cannot be decoded")]:
        folder = tmp_path / case
        (folder / "data").mkdir(parents=True)
        datasets.Dataset.from_dict({"image": [{"bytes": picture(n), "path": None} for n in range(11)] +
                                             [{"bytes": image, "path": None}],
                                    "image_id": [f"ok{n}" for n in range(11)] + ["bad"],
                                    "alt_texts": [["a caption"]] * 11 + [texts]},
                                   features=features).to_parquet(folder / "data" / "train-00000.parquet")
        with pytest.raises(trainer.DataError) as raised:
            trainer.train(mixed_config(hub_layout, tmp_path / f"out-{case}", f"[{{dataset: {folder}, weight: 0.25}}]",
                                       "max_steps=6", "num_workers=2"))
        assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_a_resume_refuses_a_replay_source_whose_train_split_changed_size(hub_layout, replay_layout, tmp_path):  # noqa: F811
    """A replay's place in its epochs is arithmetic on its rows: a source that grew between the kill and
    the rerun (an unpinned Hub dataset, a folder gaining a shard) moved every position silently."""
    replay = tmp_path / "replay"
    shutil.copytree(replay_layout, replay)
    mix = f"[{{dataset: {replay}, weight: 0.25}}]"
    trainer.train(mixed_config(hub_layout, tmp_path / "out", mix, "max_steps=2", "checkpoint_every=1"))
    shard = replay / "data" / "living" / "train-00000-of-00001.parquet"
    shutil.copy(shard, shard.with_name("train-00001-of-00001.parquet"))  # 8 more rows
    with pytest.raises(trainer.ResumeMismatch, match=r"train splits of other sizes \(mix\[0\]: 8 then, 16 now\)"):
        trainer.train(mixed_config(hub_layout, tmp_path / "out", mix, "max_steps=4", "checkpoint_every=1"))
