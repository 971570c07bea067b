"""How a stage runs is not what it makes: settings that cannot change the output (processes,
threads, concurrency) are marked in the config schema and left out of every fingerprint, so
changing them never forces a finished or half-done stage to start over."""

from __future__ import annotations

import json

import pytest
import test_download as dl

from entitynet.config import Config
from entitynet.rundir import fingerprint
from entitynet.typed_config import runtime_keys


def test_the_schema_marks_what_only_changes_how_a_stage_runs():
    assert runtime_keys(Config) == {
        "enrich.llm.concurrency", "search.commons.min_interval", "download.processes", "download.threads",
        "download.per_host", "build.num_proc", "eval.batch_size",
        "search.inaturalist.memory_limit", "search.inaturalist.index",  # where and how the join runs
        "kg.sparql.contact", "search.contact", "download.contact",  # who asks, not what is made
        # the trainer's (train: is its configuration): how it runs and reports, not what it learns
        "train.model.gradient_checkpointing", "train.model.compile", "train.num_workers", "train.checkpoint_every",
        "train.keep_checkpoints", "train.log_every", "train.report_to", "train.process_group_timeout",
        "train.dataset_id",  # names the dataset in the model card; changes nothing trained
    }


@pytest.fixture
def finished(tmp_path):
    server = dl.ImageHost()
    urls = [f"{server.base}/gen/{200 + i}x160/{i}.jpg" for i in range(12)]
    run = dl.searched_run(tmp_path / "run", urls)
    assert dl.download(run, "--set", "download.urls_per_shard=4") == 0
    yield run, server
    server.close()


def test_a_finished_download_rerun_with_other_processes_or_threads_is_complete(finished, capsys):
    run, server = finished
    fetched = sum(server.hits.values())
    capsys.readouterr()
    assert dl.download(run, "--set", "download.urls_per_shard=4", "--processes", "2",
                       "--set", "download.threads=3", "--set", "download.per_host=1") == 0
    assert "download: already complete" in capsys.readouterr().out
    assert dl.download(run, "--set", "download.urls_per_shard=4", "--set", "download.contact=someone@example.org") == 0
    assert "download: already complete" in capsys.readouterr().out  # a run made without a contact is not redone
    assert sum(server.hits.values()) == fetched


def test_an_interrupted_download_keeps_its_shards_when_only_threads_change(finished):
    run, server = finished
    fetched = sum(server.hits.values())
    run.marker("download").unlink()  # as if killed after the last shard, before the stage's mark
    assert dl.download(run, "--set", "download.urls_per_shard=4", "--set", "download.per_host=2",
                       "--set", "download.threads=2") == 0
    assert sum(server.hits.values()) == fetched  # the plan and its finished shards were kept
    assert json.loads(run.marker("download").read_text())["stats"]["stored"] == 12


def test_a_run_marked_by_an_older_version_is_still_complete(finished, capsys):
    """Markers written before runtime settings left the fingerprint hashed all settings: a rerun
    with the settings they recorded is complete, not a changed configuration."""
    run, server = finished
    marker = json.loads(run.marker("download").read_text())
    recorded = run.recorded_config("download")
    marker["fingerprint"] = fingerprint({"settings": recorded, "inputs": marker["inputs"]})
    run.marker("download").write_text(json.dumps(marker))
    capsys.readouterr()
    assert dl.download(run, "--set", "download.urls_per_shard=4") == 0
    assert "download: already complete" in capsys.readouterr().out
    assert dl.download(run, "--set", "download.urls_per_shard=4", "--processes", "2") == 0
    assert dl.download(run, "--set", "download.urls_per_shard=5") == 1  # what it makes did change


def test_every_process_of_a_launch_takes_an_older_marker_for_complete(tmp_path, monkeypatch):
    """Skip or redo is decided by one rule on every process: a marker of a version that hashed every
    setting is complete on the other processes of a launch too (they used to redo the stage)."""
    from entitynet import pipeline
    from entitynet.config import load_config
    from entitynet.rundir import RunDir

    config, run, kg = load_config("demo"), RunDir(tmp_path / "run"), pipeline.stage("kg")
    assert not kg.run(config, run).skipped
    marker = json.loads(run.marker("kg").read_text())
    marker["fingerprint"] = fingerprint(run.recorded_config("kg"))  # kg reads no stage: its settings alone
    run.marker("kg").write_text(json.dumps(marker))
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "2")
        result = kg.run(config, run)
        assert result.skipped and result.stats["entities"] == marker["stats"]["entities"], rank
