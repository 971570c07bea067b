"""Files and folders a run writes get the modes the umask gives new ones (0644 and 0755 under the
usual 022), so colleagues on a shared machine can read a dataset, a model or results. Temporary
files made by ``tempfile`` (0600, 0700) and safetensors' weights (0600) used to keep theirs."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from entitynet.cli import main


def process_umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def wrong_modes(root: Path, umask: int) -> list[str]:
    """Every file and folder under ``root`` whose mode is not what the umask gives a new one."""
    expected = {True: 0o777 & ~umask, False: 0o666 & ~umask}
    wrong = []
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != expected[path.is_dir()]:
            wrong.append(f"{oct(mode)} {path.relative_to(root)}")
    return wrong


@pytest.fixture
def umask(request) -> Iterator[int]:
    """This process's umask set to ``request.param`` for the test, then put back."""
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


@pytest.mark.parametrize("umask", [0o022, 0o027], indirect=True)
def test_an_import_and_its_export_follow_the_umask(tmp_path, umask):
    (tmp_path / "l.csv").write_text("url,caption\nhttp://h/1.jpg,one\nhttps://h/2.jpg,two\n")
    run = tmp_path / "run"
    assert main(["-q", "import", "--from", str(tmp_path / "l.csv"), "--run", str(run)]) == 0
    assert (run / "candidates" / "part-00000.parquet").is_file()
    assert wrong_modes(run, umask) == []


def test_a_finished_demo_run_is_readable_by_others_under_umask_022(demo_run):
    """Every stage, the trainer's checkpoints and model, the evaluation and the summary: the demo
    fixture ran it in a child of this process, which has its umask."""
    if process_umask() != 0o022:
        pytest.skip(f"this test process runs under umask {oct(process_umask())}, not 022")
    wrong = wrong_modes(demo_run, 0o022)
    assert wrong == [], f"{len(wrong)} files or folders with other modes, e.g. {wrong[:8]}"
    assert stat.S_IMODE((demo_run / "model" / "model.safetensors").stat().st_mode) == 0o644
