"""``entitynet demo``: README's main job, at its small size. The session's one demo run
(``demo_made`` in conftest.py) runs the command as a newcomer does; these tests read the run and
what it printed, rerun copies of it, and kill -9 fresh runs at several points."""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path

import datasets
import pytest
import yaml
from helpers import DEMO, kill_when

from entitynet.cli import main
from entitynet.demo import draw


def copy_of(run: Path, tmp_path: Path) -> Path:
    """A copy of the session's demo run, to rerun or retrain without changing what other tests read."""
    return Path(shutil.copytree(run, tmp_path / "demo"))


def test_the_demo_makes_a_dataset_that_load_dataset_reads(demo_run):
    living = datasets.load_dataset(str(demo_run / "dataset"), "livingthings")
    everything = datasets.load_dataset(str(demo_run / "dataset"), "entitynet")
    assert set(living) == {"train", "validation", "test", "test_seen"}
    assert sum(len(split) for split in living.values()) > 20
    assert sum(len(s) for s in everything.values()) >= sum(len(s) for s in living.values())
    row = living["train"][0]
    assert row["image"].size == (row["width"], row["height"])
    assert row["domain"] == "living" and row["entities"] and row["alt_texts"]
    # every stored image was drawn for one of its entities, and its alt text names that entity
    for row in living["train"]:
        assert any(name.lower() in " ".join(row["alt_texts"]).lower() for name in (e["name"] for e in row["entities"]))
    # test_seen holds new images of entities the model trains on
    trained = {e["id"] for row in living["train"] for e in row["entities"]}
    assert all(e["id"] in trained for row in living["test_seen"] for e in row["entities"])


def test_the_demo_says_its_images_are_synthetic(demo_run):
    card = (demo_run / "dataset" / "README.md").read_text()
    assert "synthetic" in card.lower() and "synthetic" in (demo_run / "model" / "README.md").read_text().lower()
    assert json.loads((demo_run / "demo.json").read_text())["size"] == "small"


def test_the_summary_says_what_each_stage_made_and_what_the_model_learnt(demo_run):
    summary = json.loads((demo_run / "summary.json").read_text())
    stages = {stage["name"]: stage for stage in summary["stages"]}
    assert [s["status"] for s in summary["stages"]][:8] == ["done"] * 8 and stages["push"]["status"] == "left out"
    assert stages["download"]["stats"]["stored"] > 0 and "images stored" in stages["download"]["summary"]
    assert summary["dataset"].endswith("dataset") and summary["model"].endswith("model")
    assert Path(summary["eval_table"]).is_file()
    evaluations = summary["evaluations"]
    for key in ("seen_entities", "unseen_entities"):
        found = evaluations[key]
        assert set(found) >= {"acc1", "chance", "images", "classes"}
        assert found["images"] >= found["classes"] >= 1
        # chance of the rule scored (right when the top class is any of the image's entities), read
        # from the result: the mean over the split's images (all of them: fewer than eval.max_images)
        # of its entities / the entities of the split
        rows = datasets.load_dataset(str(demo_run / "dataset"), "livingthings", split=found["split"])
        entities = [{e["id"] for e in row["entities"]} for row in rows]
        assert (len(rows), len(set().union(*entities))) == (found["images"], found["classes"])
        assert found["chance"] == pytest.approx(sum(map(len, entities)) / (len(rows) * found["classes"]))
        assert found["chance"] == json.loads((demo_run / "eval" / f"livingthings-{found['split']}.json").read_text())["chance"]
    trained = json.loads((demo_run / "model" / "eval_results.json").read_text())
    card = (demo_run / "model" / "README.md").read_text()
    assert "acc1's chance level" in card and f"{trained['chance']:.4f}" in card
    # the model learnt the entities it saw: well above chance on new pictures of them
    seen = evaluations["seen_entities"]
    assert seen["acc1"] >= 3 * seen["chance"], seen


def test_a_second_demo_run_redoes_nothing_and_stops_its_server(demo_run, tmp_path, capsys):
    demo_run = copy_of(demo_run, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in (demo_run / "images").glob("shard-*.parquet")}
    weights = (demo_run / "model" / "model.safetensors").stat().st_mtime_ns
    assert main(["demo", "--out", str(demo_run), "--size", "small"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("already complete") >= 8, printed  # kg ... eval, each once in the log and the summary
    assert before == {p: p.stat().st_mtime_ns for p in (demo_run / "images").glob("shard-*.parquet")}
    assert weights == (demo_run / "model" / "model.safetensors").stat().st_mtime_ns
    port = json.loads((demo_run / "demo.json").read_text())["port"]
    with socket.socket() as probe:  # the picture server is gone once the demo returns
        assert probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow  # two trainings and evaluations: as long as the whole demo
def test_another_seed_trains_and_evaluates_again_on_the_same_dataset(demo_run, tmp_path, capsys):
    """--seed 1 retrains on the same dataset; --seed 0 again gives back the first model exactly."""
    demo_run = copy_of(demo_run, tmp_path)
    dataset = (demo_run / "stages" / "build.json").read_text()
    weights = (demo_run / "model" / "model.safetensors").read_bytes()
    assert main(["demo", "--out", str(demo_run), "--size", "small", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "build: already complete" in printed and "train: done" in printed and "eval: done" in printed
    assert (demo_run / "stages" / "build.json").read_text() == dataset
    assert (demo_run / "model" / "model.safetensors").read_bytes() != weights
    assert yaml.safe_load((demo_run / "config" / "run.yaml").read_text())["train"]["seed"] == 1
    assert main(["demo", "--out", str(demo_run), "--size", "small"]) == 0
    assert (demo_run / "model" / "model.safetensors").read_bytes() == weights


def test_a_copied_demo_named_another_way_is_complete(demo_run, tmp_path, monkeypatch, capsys):
    """A copy of a finished demo, rerun by a relative --out from another working directory: every
    stage is complete (its paths are recorded relative to the run, the pool's among them), nothing
    is refused or redone."""
    shutil.copytree(demo_run, tmp_path / "copy")
    weights = (tmp_path / "copy" / "model" / "model.safetensors").stat().st_mtime_ns
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["demo", "--out", "copy", "--size", "small"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    for stage in ("kg", "enrich", "queries", "search", "download", "build", "train", "eval"):
        assert f"{stage}: already complete" in printed, printed
    assert (tmp_path / "copy" / "model" / "model.safetensors").stat().st_mtime_ns == weights
    assert yaml.safe_load((tmp_path / "copy" / "config" / "search.yaml").read_text())["search"]["pool"]["path"] == \
        "demo-pool/pool.jsonl"


def test_the_cards_link_only_to_what_exists_and_say_what_ran(demo_run):
    cards = [demo_run / "dataset" / "README.md", demo_run / "model" / "README.md"]
    for card in cards:
        assert "github.com/entitynet" not in card.read_text(), card  # no such repository
    text = cards[0].read_text()
    built = text[text.index("## How it was built"):text.index("## Statistics")]
    assert "?" not in built and "not recorded" not in built  # the demo ran every stage: all is known
    assert "| image search | pool, " in built


def test_pictures_are_a_function_of_the_entity():
    assert draw("Q140", "cat", 0) == draw("Q140", "cat", 0)
    assert draw("Q140", "cat", 0) != draw("Q140", "cat", 1)
    assert draw("Q140", "cat", 0) != draw("Q7378", "elephant", 0)


def test_without_the_train_extra_the_demo_says_so_and_stops_after_the_dataset(demo_run, monkeypatch, caplog):
    from entitynet.demo import demo_config
    from entitynet.rundir import RunDir

    for name in ("entitynet.training", "entitynet.training.train", "entitynet.training.config"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails, as without torch and transformers
    with caplog.at_level("WARNING", logger="entitynet.demo"):
        config = demo_config(RunDir(demo_run), "small", 8000, train=True)
    assert not config.train.enabled and "pip install 'entitynet[train]'" in caplog.text


# --- the command as a newcomer runs it, and killed on the way ----------------------------------
def test_what_a_newcomer_reads_is_stage_lines_and_the_summary(demo_made):
    _, done = demo_made
    printed = done.stdout + done.stderr
    for noise in ("it/s", "Generating", "[transformers]", "torchvision", "Warning", "WARNING", "Traceback", " INFO "):
        assert noise not in printed, f"{noise!r} in the demo's output:\n{printed[-3000:]}"
    assert "SYNTHETIC" in printed and "What the numbers mean" in printed
    assert "seen_entities: top-1" in printed and "unseen_entities: top-1" in printed and "chance" in printed
    for stage in ("kg", "enrich", "queries", "search", "download", "build", "train", "eval"):
        assert f"\n{stage}: done in" in printed


def split_ids(out: Path) -> dict[str, list[str]]:
    data = datasets.load_dataset(str(out / "dataset"), "entitynet")
    return {split: sorted(data[split]["image_id"]) for split in data}


def weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "model" / "model.safetensors"))


@pytest.mark.slow
def test_kill_9_at_any_point_then_the_same_command_ends_as_an_uninterrupted_run(demo_run, tmp_path):
    """kill -9 at the end of the download (its first shard written: before the build), then
    mid-training (after a checkpoint), then at the evaluation, each time rerunning the same command:
    the last rerun (in this process: the CLI's own entry point) ends with the same image ids per
    split and the same model weights as the session's uninterrupted run. One run killed three
    times, one stage further each time, costs one demo where three runs killed once each cost
    three; each kill must land before the stage named beside it ended."""
    torch = pytest.importorskip("torch")
    out = tmp_path / "demo"
    for point, unfinished in (("images/shard-00000.json", "build"), ("checkpoints/step-00000100", "train"),
                              ("stages/train.json", "eval")):
        kill_when([*DEMO, str(out)], out / point, seconds=900)
        assert (out / point).exists(), f"the demo never reached {point}"
        assert not (out / "stages" / f"{unfinished}.json").exists(), f"{unfinished} ended before the kill at {point}"
    assert not (out / "summary.json").exists(), "the demo finished before it could be killed"
    assert main([*DEMO[3:], str(out)]) == 0
    assert split_ids(out) == split_ids(demo_run)
    a, b = weights(demo_run), weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
