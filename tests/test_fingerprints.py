"""How a stage runs is not what it makes: settings that cannot change the output (processes,
threads, concurrency) are marked in the config schema and left out of every fingerprint, so
changing them never forces a finished or half-done stage to start over."""

from __future__ import annotations

import json

import pytest
import test_download as dl

from entitynet.config import Config
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

