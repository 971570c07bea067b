"""Resuming a training run is exact or refused: a checkpoint records its global batch (batch per
process x processes x accumulation), its position in the data in global rows and, streamed, the
workers its plan was cut for; a resume with another process count or another streamed worker
count is refused with both values and the way on. It records its paths independently of how they
were spelled: from another working directory, with absolute or relative paths, or in a copied
output folder, the same run resumes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from helpers import accelerate_launch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from test_streaming import hub_layout  # noqa: E402,F401  (a module fixture: 120 rows in 3 parquet shards)

from entitynet.training import train as trainer  # noqa: E402
from entitynet.training.config import load_train_config  # noqa: E402

CASES = Path(__file__).with_name("distributed_cases.py")


def tiny(dataset: Path | str, out: Path | str, *extra: str):
    return load_train_config("tiny", [f"dataset={dataset}", f"output_dir={out}", "batch_size=4", "log_every=1",
                                      "shuffle_buffer=16", *extra])


def two_processes(case: str, *args: str) -> None:
    """A case of distributed_cases.py under accelerate's debug_launcher (2 real CPU processes)."""
    done = subprocess.run([sys.executable, str(CASES), case, *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def weights(out: Path) -> dict:
    return load_file(str(out / "model" / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    first, second = weights(a), weights(b)
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


def checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


# --- item 6: another number of processes or workers ------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("streaming", ["false", "true"])
def test_two_processes_resume_exactly_from_their_checkpoint(hub_layout, tmp_path, streaming):  # noqa: F811
    """Stopped after the step-3 checkpoint and resumed on two processes again: the weights of an
    uninterrupted two-process run (the position is kept in global rows and read back per process)."""
    steps = ["batch_size=4", "max_steps=6", "checkpoint_every=3", "log_every=1", f"streaming={streaming}",
             "num_workers=2", "shuffle_buffer=16"]
    two_processes("train", hub_layout, tmp_path / "straight", *steps)
    two_processes("stopped", 3, hub_layout, tmp_path / "resumed", *steps)
    assert checkpoints(tmp_path / "resumed") == ["step-00000003"] and not (tmp_path / "resumed" / "model").exists()
    two_processes("train", hub_layout, tmp_path / "resumed", *steps)
    assert same_weights(tmp_path / "straight", tmp_path / "resumed")


@pytest.mark.slow
def test_a_checkpoint_of_two_processes_is_not_resumed_on_one(hub_layout, tmp_path, capsys):  # noqa: F811
    """2 processes x 4 images made the checkpoint (a global batch of 8); one process would take
    steps of 4 from a position counted in steps of 8. Refused, with both batches and the way on,
    and nothing written."""
    out = tmp_path / "out"
    two_processes("stopped", 2, hub_layout, out, "batch_size=4", "max_steps=4", "checkpoint_every=2", "shuffle_buffer=16")
    before = checkpoints(out)
    with pytest.raises(trainer.ResumeMismatch) as refused:
        trainer.train(tiny(hub_layout, out, "max_steps=4", "checkpoint_every=2"))
    message = str(refused.value)
    assert "global batch of 8" in message and "4 per process x 2 processes" in message, message
    assert "1 process" in message and "makes 4" in message and "--output-dir" in message, message
    assert checkpoints(out) == before and not (out / "model").exists()


@pytest.mark.slow
def test_a_real_launch_on_two_processes_refuses_a_one_process_checkpoint(hub_layout, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    trainer.train(tiny(hub_layout, out, "max_steps=2", "checkpoint_every=2"))
    before = checkpoints(out)
    shutil.rmtree(out / "model")  # as if stopped after its checkpoint
    done = accelerate_launch(["-m", "entitynet.training.train", "--config", "tiny", "--dataset", str(hub_layout),
                              "--output-dir", str(out), "--max-steps", "4", "--set", "batch_size=4",
                              "--set", "shuffle_buffer=16", "--set", "log_every=1"], seconds=300)
    assert done.returncode != 0
    assert "global batch of 4 (4 per process x 1 process" in done.stderr and "makes 8" in done.stderr, done.stderr[-3000:]
    # a one-line error from each process, no traceback through the trainer (the launcher prints its own)
    assert done.stderr.count("error: ") >= 2 and "training/train.py" not in done.stderr, done.stderr[-3000:]
    assert checkpoints(out) == before and not (out / "model").exists()


def test_another_worker_count_is_refused_for_a_streamed_run_and_exact_for_a_map_style_one(hub_layout, tmp_path):  # noqa: F811
    streamed = tmp_path / "streamed"
    trainer.train(tiny(hub_layout, streamed, "streaming=true", "num_workers=2", "max_steps=2", "checkpoint_every=2"))
    shutil.rmtree(streamed / "model")
    with pytest.raises(trainer.ResumeMismatch, match=r"num_workers=2.*num_workers=1") as refused:
        trainer.train(tiny(hub_layout, streamed, "streaming=true", "num_workers=1", "max_steps=2", "checkpoint_every=2"))
    assert "resume with num_workers=2" in str(refused.value)
    assert not (streamed / "model").exists()
    # map-style, the order is drawn in the main process: other workers read the same rows
    steps = ["streaming=false", "max_steps=6", "checkpoint_every=3"]
    trainer.train(tiny(hub_layout, tmp_path / "straight", "num_workers=0", *steps))
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed", ignore=shutil.ignore_patterns("model", "step-00000006"))
    result = trainer.train(tiny(hub_layout, tmp_path / "resumed", "num_workers=2", *steps))
    assert [point["step"] for point in result["history"]] == [4, 5, 6]
    assert same_weights(tmp_path / "straight", tmp_path / "resumed")


# --- item 14: however the paths are spelled -------------------------------------------------
def test_a_run_resumes_from_another_directory_with_other_spellings_and_when_copied(hub_layout, tmp_path, monkeypatch):  # noqa: F811
    """The dataset inside the output folder, as in a run directory: trained with relative paths
    from one working directory, resumed with absolute ones from another, and in a copy."""
    first = tmp_path / "first"
    (first / "run").mkdir(parents=True)
    shutil.copytree(hub_layout, first / "run" / "dataset")
    monkeypatch.chdir(first)
    steps = ["max_steps=6", "checkpoint_every=3"]
    trainer.train(tiny("run/dataset", "run", *steps))
    shutil.copytree(first / "run", tmp_path / "copy", ignore=shutil.ignore_patterns("model", "step-00000006"))
    shutil.copytree(first / "run", tmp_path / "stopped", ignore=shutil.ignore_patterns("model", "step-00000006"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    stopped = tmp_path / "stopped"
    result = trainer.train(tiny(stopped / "dataset", stopped, *steps))  # absolute, another working directory
    assert [point["step"] for point in result["history"]] == [4, 5, 6]
    assert same_weights(first / "run", stopped)
    monkeypatch.chdir(tmp_path)
    result = trainer.train(tiny("copy/dataset", "copy", *steps))  # a copy, relative from its parent
    assert [point["step"] for point in result["history"]] == [4, 5, 6]
    assert same_weights(first / "run", tmp_path / "copy")
    # a dataset outside the output folder is recorded where it lies: another one is another experiment
    other = tmp_path / "other-dataset"
    shutil.copytree(hub_layout, other)
    shutil.rmtree(tmp_path / "copy" / "model")
    with pytest.raises(trainer.ResumeMismatch, match="dataset differ"):
        trainer.train(tiny(other, tmp_path / "copy", *steps))
    assert os.path.isdir(tmp_path / "copy" / "checkpoints" / "step-00000006")


def test_a_checkpoint_from_before_data_plans_is_refused_saying_what_to_do(hub_layout, tmp_path):  # noqa: F811
    import json

    steps = ["max_steps=4", "checkpoint_every=2"]
    trainer.train(tiny(hub_layout, tmp_path / "straight", *steps))
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "straight", old, ignore=shutil.ignore_patterns("model", "step-00000004"))
    state_file = old / "checkpoints" / "step-00000002" / trainer.STATE_FILE
    state = json.loads(state_file.read_text())
    assert state["data"]["global_batch"] == 4 and state["rows_in_epoch"] == 8  # 2 steps of 4 rows
    del state["data"]
    state["batch_in_epoch"] = state.pop("rows_in_epoch") // 4  # as the first version wrote it
    state_file.write_text(json.dumps(state))
    with pytest.raises(trainer.ResumeMismatch, match=r"made by an earlier version \(no data plan recorded\).*"
                                                     r"train into another output folder, or remove its checkpoints/"):
        trainer.train(tiny(hub_layout, old, *steps))
    assert json.loads(state_file.read_text()) == state  # nothing of it changed
