"""Same weights, same data, same numbers as LAION's CLIP_benchmark (benchmarks/clip_benchmark_parity.py).

Needs the peer venv with open_clip and clip-benchmark (../shared/ENVIRONMENT.md) at ../peer or
ENTITYNET_PEER_VENV; skipped without it, also in CI: the peer is a yardstick, not a dependency."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PEER = Path(os.environ.get("ENTITYNET_PEER_VENV", REPO.parent / "peer"))


@pytest.mark.slow
def test_entitynet_eval_gives_clip_benchmarks_numbers_for_the_same_open_clip_weights(realdata, tmp_path):
    if not (PEER / "bin" / "python").exists() or not list(PEER.glob("lib/python*/site-packages/clip_benchmark")):
        pytest.skip(f"no open_clip + clip-benchmark venv at {PEER}")
    command = [sys.executable, str(REPO / "benchmarks" / "clip_benchmark_parity.py"), "--peer", str(PEER),
               "--model", "tiny", "--keep", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PARITY: every metric equal" in done.stdout
    assert "token ids equal: True" in done.stdout
