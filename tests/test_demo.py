"""``entitynet demo``: README's main job, run here through the same code path at its small size
(the ``demo_run`` fixture in conftest.py)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import datasets
from entitynet.cli import main
from entitynet.demo import draw


def test_the_demo_makes_a_dataset_that_load_dataset_reads(demo_run):
    living = datasets.load_dataset(str(demo_run / "dataset"), "livingthings")
    everything = datasets.load_dataset(str(demo_run / "dataset"), "entitynet")
    assert set(living) == {"train", "validation", "test"}
    assert sum(len(split) for split in living.values()) > 20
    assert sum(len(s) for s in everything.values()) >= sum(len(s) for s in living.values())
    row = living["train"][0]
    assert row["image"].size == (row["width"], row["height"])
    assert row["domain"] == "living" and row["entities"] and row["alt_texts"]
    # every stored image was drawn for one of its entities, and its alt text names that entity
    for row in living["train"]:
        assert any(name.lower() in " ".join(row["alt_texts"]).lower() for name in (e["name"] for e in row["entities"]))


def test_the_demo_says_its_images_are_synthetic(demo_run, capsys):
    card = (demo_run / "dataset" / "README.md").read_text()
    assert "synthetic" in card.lower()
    assert json.loads((demo_run / "demo.json").read_text())["size"] == "small"


def test_a_second_demo_run_redoes_nothing_and_stops_its_server(demo_run, capsys):
    before = {p: p.stat().st_mtime_ns for p in (demo_run / "images").glob("shard-*.parquet")}
    assert main(["demo", "--out", str(demo_run), "--size", "small"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("already complete") == 7, printed  # six stages and the tiny CLIP
    assert before == {p: p.stat().st_mtime_ns for p in (demo_run / "images").glob("shard-*.parquet")}
    port = json.loads((demo_run / "demo.json").read_text())["port"]
    with socket.socket() as probe:  # the picture server is gone once the demo returns
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_the_cards_link_only_to_what_exists_and_say_what_ran(demo_run):
    cards = [demo_run / "dataset" / "README.md", demo_run / "clip" / "model" / "README.md"]
    for card in filter(Path.exists, cards):
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
    import sys

    from entitynet.demo import train_tiny_clip
    from entitynet.rundir import RunDir

    for name in ("entitynet.training", "entitynet.training.train", "entitynet.training.config"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails, as without torch and transformers
    with caplog.at_level("WARNING", logger="entitynet.demo"):
        assert train_tiny_clip(RunDir(demo_run), force=False) is None
    assert "pip install 'entitynet[train]'" in caplog.text
