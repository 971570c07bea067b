"""The entitynet command end to end: main(argv) in-process, and a real process killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from entitynet.cli import main
from entitynet.tables import read_entities

FAST = ["--config", "demo", "--sources", "wikidata"]


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as done:
        main(["kg", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for option in ("--run", "--config", "--domain", "--set", "--force", "--endpoint", "--kg-dump", "--sources", "--limit", "--contact"):
        assert option in text
    for key in ("kg.sparql.page_size", "kg.wikidata.require_image", "kg.wordnet.blacklist"):
        assert key in text


def test_kg_writes_entities_summary_and_resolved_config(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["kg", "--run", str(run), *FAST, "--contact", "me@example.org"]) == 0
    out = capsys.readouterr().out
    assert "source" in out and "Q729" in out and "living" in out
    entities = list(read_entities(run / "entities.parquet"))
    assert len(entities) >= 150 and len({e.id for e in entities}) == len(entities)
    assert pq.read_schema(run / "entities.parquet").field("ancestors").type.value_type.names == ["id", "label", "sitelinks", "hops", "rank"]
    recorded = yaml.safe_load((run / "config" / "kg.yaml").read_text())
    assert recorded["kg"]["sparql"]["contact"] == "me@example.org"
    marker = json.loads((run / "stages" / "kg.json").read_text())
    assert marker["stats"]["entities"] == len(entities)
    assert {row["root"] for row in marker["stats"]["summary"]} == {"Q729", "Q756", "Q764"}
    assert not list(run.glob(".*.tmp"))


def test_rerun_skips_a_config_change_is_refused_and_force_redoes(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["kg", "--run", run, *FAST, "--limit", "3"]) == 0
    made = os.stat(Path(run) / "entities.parquet").st_mtime_ns
    capsys.readouterr()
    assert main(["kg", "--run", run, *FAST, "--limit", "3"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert os.stat(Path(run) / "entities.parquet").st_mtime_ns == made

    assert main(["kg", "--run", run, *FAST, "--limit", "4"]) == 1
    error = capsys.readouterr().err
    assert "different configuration" in error and "(kg.limit_per_root differs;" in error, error  # names the key
    assert len(list(read_entities(Path(run) / "entities.parquet"))) == 8  # untouched: 3 + 3 + the 2 fungi

    assert main(["kg", "--run", run, *FAST, "--limit", "4", "--force"]) == 0
    assert len(list(read_entities(Path(run) / "entities.parquet"))) == 10  # 4 + 4 + the 2 fungi


def test_configuration_errors_exit_2_and_name_the_key(tmp_path, capsys):
    assert main(["kg", "--run", str(tmp_path), *FAST, "--set", "kg.sparql.page_sise=3"]) == 2
    assert "kg.sparql.page_sise" in capsys.readouterr().err
    assert main(["kg", "--run", str(tmp_path), "--config", "demo", "--limit", "0"]) == 2
    assert "--limit: kg.limit_per_root" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:
        main(["kg", "--run", str(tmp_path), "--sources", "wikidata,dbpedia"])
    assert bad.value.code == 2


def test_unreachable_endpoint_fails_with_exit_1_and_no_artifact(tmp_path, capsys):
    from helpers import free_port

    run = tmp_path / "run"
    code = main([
        "kg", "--run", str(run), "--sources", "wikidata", "--endpoint", f"http://127.0.0.1:{free_port()}/sparql",
        "--set", "kg.sparql.max_attempts=2", "--set", "kg.sparql.backoff=0.01",
    ])
    assert code == 1
    err = capsys.readouterr().err
    assert "gave up" in err and "127.0.0.1" in err and "rerun" in err
    assert not (run / "entities.parquet").exists() and not (run / "stages" / "kg.json").exists()


def test_kill_9_mid_harvest_loses_nothing_and_the_rerun_resumes(tmp_path, fault_proxy, capsys):
    run = tmp_path / "run"
    args = ["kg", "--run", str(run), "--sources", "wikidata", "--set", "kg.wikidata.require_image=false",
            "--set", "kg.sparql.page_size=15", "--set", "kg.sparql.batch_size=15"]
    reference = tmp_path / "reference"
    clean = fault_proxy()
    assert main([*args[:2], str(reference), *args[3:], "--endpoint", clean.url]) == 0
    total = len(clean.requests)

    proxy = fault_proxy(script=["ok"] * 8, then="hang", hang=60)
    child = subprocess.Popen(
        [sys.executable, "-m", "entitynet", "-q", *args, "--endpoint", proxy.url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(proxy.requests) < 9 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    assert len(proxy.requests) == 9, "the child never reached the hanging request"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert not (run / "entities.parquet").exists()
    cached = len(list((run / "cache" / "kg" / "sparql").glob("*.json")))
    assert 6 <= cached <= 8  # answers still being parsed when the kill came are lost, nothing else

    proxy.then = "ok"
    before = len(proxy.requests)
    assert main([*args, "--endpoint", proxy.url]) == 0
    assert len(proxy.requests) - before == total - cached  # pages fetched before the kill are reused
    resumed = list(read_entities(run / "entities.parquet"))
    assert resumed == list(read_entities(reference / "entities.parquet"))
    assert not list(run.glob(".*.tmp"))


@pytest.mark.slow
def test_demo_config_with_wordnet_merges_the_sources(tmp_path, capsys, wordnet_reader):
    run = tmp_path / "run"
    assert main(["kg", "--run", str(run), "--config", "demo"]) == 0
    out = capsys.readouterr().out
    assert "wn:living_thing.n.01" in out and "merged" in out
    entities = {e.id: e for e in read_entities(run / "entities.parquet")}
    assert entities["Q140"].same_as == ["wn:lion.n.01"] and "wn:lion.n.01" not in entities
    assert any(a.label == "big cat" for a in entities["Q140"].ancestors)
    assert sum(e.source == "wordnet" for e in entities.values()) > 8000


@pytest.mark.parametrize(("flags", "shown"), [([], True), (["-q"], False), (["kg-first"], False)])
def test_quiet_hides_progress_logs(tmp_path, caplog, flags, shown):
    import logging

    caplog.set_level(logging.DEBUG, logger="nothing")  # capture whatever reaches the root handlers
    argv = ["kg", "--run", str(tmp_path / "run"), *FAST, "--limit", "1"]
    if flags == ["kg-first"]:
        argv.append("-q")  # the subcommand's -q works too
    else:
        argv = flags + argv
    assert main(argv) == 0
    infos = [r for r in caplog.records if r.levelno == logging.INFO and r.name.startswith("entitynet")]
    assert bool(infos) is shown


def test_run_chains_the_stages_and_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["run", "--run", str(run), "--config", "demo", "--set", "kg.sources=[wikidata]", "--until", "queries"]
    assert main(args) == 0
    first = capsys.readouterr().out
    for stage in ("kg: done", "enrich: done", "queries: done"):
        assert stage in first
    assert all((run / name).is_file() for name in ("entities.parquet", "natural_types.parquet", "attributes.parquet", "queries.parquet"))
    (run / "stages" / "queries.json").unlink()  # as if killed during the last stage
    assert main(args) == 0
    second = capsys.readouterr().out
    assert "kg: already complete" in second and "enrich: already complete" in second and "queries: done" in second


def test_every_flag_is_declared_once_on_the_option_it_sets():
    """A stage's command gives the flags its configuration section declares, and nothing else sets
    configuration; the run's --contact, declared on three options, sets the three."""
    from entitynet import pipeline
    from entitynet.cli import build_parser
    from entitynet.config import Config
    from entitynet.typed_config import flags

    declared: dict[str, set[str]] = {}
    for flag in flags(Config):
        declared.setdefault(flag.name, set()).add(flag.key)
    commands = next(action for action in build_parser()._actions if action.dest == "command").choices
    for entry in pipeline.STAGES:
        if entry.command is None:
            continue
        given = commands[entry.name].parse_args(["--run", "RUN"]).flag_keys
        assert {key for _, key, _ in given} == {key for keys in declared.values() for key in keys
                                                if key.startswith(f"{entry.name}.")}, entry.name
    kg = commands["kg"].parse_args(["--run", "RUN"]).flag_keys
    assert sorted(label for label, _, _ in kg) == ["--contact", "--endpoint", "--kg-dump", "--limit", "--sources"]
    run = commands["run"].parse_args(["--run", "RUN", "--contact", "me@example.org"])
    assert sorted(key for _, key, _ in run.flag_keys) == ["download.contact", "kg.sparql.contact", "search.contact"]
