"""Forgetting and what keeps it away, measured (benchmarks/two_domains.py, issue 22): a tiny CLIP
pretrained on domain A (half the demo's entities) and finetuned on domain B (the other half)
loses A; WiSE-FT at 0.5 (the trainer's ``wise_ft.alphas``) and replay of A (``mix``) each keep
more of A while gaining on B. Two seeds, the margins of benchmarks/README.md (chosen from the
spread over more seeds), in-process ``train()`` calls on one torch thread: about 26 s of CPU, the session's
demo aside (benchmarks/README.md)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from helpers import REPO


def two_domains():
    spec = importlib.util.spec_from_file_location("two_domains", REPO / "benchmarks" / "two_domains.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["two_domains"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_the_domains_are_the_demo_entities_in_two_halves(demo_run, tmp_path):
    import pyarrow.parquet as pq

    bench = two_domains()
    settings = bench.Settings(train_pictures=2, test_pictures=1)
    a, b = bench.write_domains(demo_run / "dataset", tmp_path, settings)

    def entities(folder: Path, split: str) -> list[str]:
        rows = pq.read_table(folder / "data" / "living" / f"{split}-00000-of-00001.parquet", columns=["entities"])
        return [entity["id"] for row in rows.column("entities").to_pylist() for entity in row]

    built = {e["entity"]["id"] for half in bench.split_entities(bench.demo_rows(demo_run / "dataset")) for e in half}
    for folder in (a, b):
        train, test = entities(folder, "train"), entities(folder, "test")
        assert sorted(set(train)) == sorted(set(test)) and len(train) == 2 * len(test) == 2 * len(set(test))
    in_a, in_b = set(entities(a, "train")), set(entities(b, "train"))
    assert not in_a & in_b and in_a | in_b == built and abs(len(in_a) - len(in_b)) <= 1
    assert len(built) >= 30  # the demo's entities, one record each


@pytest.fixture
def one_thread():
    """torch on one thread, as the benchmark measured: the tiny model's products gain nothing from a
    second, and two threads on 2 cores shared with other work waited for each other (268 s of CPU
    for what one thread does in 26)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_wise_ft_and_replay_keep_domain_a_that_a_plain_finetune_on_b_loses(demo_run, tmp_path, one_thread):
    bench = two_domains()
    results = bench.experiment(demo_run / "dataset", tmp_path, seeds=[0, 1], settings=bench.Settings())
    print(bench.report(results))
    for seed, scores in results.items():
        found = bench.differences(scores)
        assert set(found) == set(bench.MARGINS)
        for claim, value in found.items():
            assert value >= bench.MARGINS[claim], f"seed {seed}: {claim}: {value:+.3f} < {bench.MARGINS[claim]}"
        # the finetune learnt B: beyond the pretrained model's chance-level guess at entities it never saw
        assert scores["finetune on B"]["B"] - scores["pretrained on A"]["B"] >= bench.MARGINS[
            "WiSE-FT learns B (WiSE-FT B - pretrained B)"]
        # the trainer's wise_ft.alphas wrote its table: the ensemble's score on B's test split
        table = json.loads((tmp_path / f"seed-{seed}" / "finetune" / "wise-ft" / "scores.json").read_text())
        assert table["alphas"] == [0.5] and table["tasks"]["test"]["acc1"] == [scores["WiSE-FT 0.5"]["B"]]
