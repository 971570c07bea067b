"""benchmarks/gpu.py, the prepared GPU check, run for real on the CPU with tiny shapes: it must
work the first time a GPU is lent, so every phase runs here and its JSON is checked (keys,
units, values that can be true). With the peer venv (open_clip), open_clip's step runs too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
PEER = REPO.parent / "peer" / "bin" / "python"


def peer_has_open_clip() -> bool:
    return PEER.exists() and subprocess.run([str(PEER), "-c", "import open_clip"], capture_output=True).returncode == 0


def check_phase(phase: dict, batch: int) -> None:
    assert phase["batch"] == batch and phase["images_per_s"] > 0
    assert 1e6 < phase["peak_memory_bytes"] < 64e9  # bytes: more than a MB, less than this machine has


@pytest.mark.slow
def test_the_gpu_check_runs_on_a_cpu_with_tiny_shapes(demo_run, tmp_path):
    out = tmp_path / "gpu.json"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--preset", "tiny", "--batch", "8", "--steps", "2",
               "--warmup", "1", "--eval-images", "16", "--num-workers", "1", "--dataset", str(demo_run / "dataset"),
               "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert {"device", "torch", "preset", "precision", "batch", "memory_method", "synthetic", "synthetic_checkpointing",
            "dataset", "real_input", "eval_images", "open_clip", "ours_vs_open_clip", "wall_s"} <= set(report)
    assert report["device"] == "cpu" and report["precision"] == "bf16" and report["preset"] == "tiny"
    for key in ("synthetic", "synthetic_checkpointing"):
        phase = report[key]
        check_phase(phase, 8)
        assert phase["half_batch"]["batch"] == 4 and phase["steps"] == 2 and phase["loss"] > 0
        assert phase["parameters"] > 100_000 and "per_sample_bytes" in phase and "largest_batch_80gb" in phase
    real = report["real_input"]
    check_phase(real, 8)
    assert 0 <= real["data_wait_share"] <= 1 and real["num_workers"] == 1
    assert real["train_rows"] * real["rows_repeated"] >= 16  # every batch full, from the dataset's own rows
    assert report["eval_images"]["images"] == 16 and report["eval_images"]["images_per_s"] > 0
    if peer_has_open_clip():
        theirs = report["open_clip"]
        assert theirs.get("images_per_s", 0) > 0, theirs
        assert theirs["batch"] == 8 and theirs["peak_memory_bytes"] > 1e6
        assert report["ours_vs_open_clip"] == pytest.approx(report["synthetic"]["images_per_s"] / theirs["images_per_s"])
    else:
        assert "skipped" in report["open_clip"] and report["ours_vs_open_clip"] is None
    assert "images/s synthetic" in done.stderr and str(out) in done.stderr


def test_our_shapes_become_open_clips_model_config():
    """The open_clip comparison runs the same shapes: our preset as open_clip's CLIP config. With the
    peer venv, open_clip builds it and counts the same parameters as our CLIPModel."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu
    from memory import Vocabulary

    from entitynet.training.model import scratch_model

    config = gpu.open_clip_config("vit-b-32", 49408)
    assert config["vision_cfg"] == {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32, "head_width": 64}
    assert config["text_cfg"] == {"context_length": 32, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}
    assert config["embed_dim"] == 512
    if not peer_has_open_clip():
        pytest.skip(f"no open_clip at {PEER}")
    count = subprocess.run([str(PEER), "-c", "import json, sys, open_clip; m = open_clip.CLIP(**json.loads(sys.argv[1])); "
                            "print(sum(p.numel() for p in m.parameters()))", json.dumps(config)],
                           capture_output=True, text=True, check=True)
    ours = sum(p.numel() for p in scratch_model("vit-b-32", Vocabulary(), 32).parameters())
    assert int(count.stdout) == ours
