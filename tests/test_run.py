"""``entitynet run`` to the end: bad configuration stops before any work, the mini preset is
accepted by every stage offline, a finished run is taken again from RUN/config/run.yaml, and the
same command under ``accelerate launch`` trains and evaluates on two processes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import accelerate_launch

from entitynet import pipeline
from entitynet.cli import main
from entitynet.config import load_config
from entitynet.rundir import RunDir

# a short retrain: the trainer's keys set on `entitynet run` as any other key of the run
TRAIN_SHORT = ["--set", "train.max_steps=6", "--set", "train.batch_size=8", "--set", "train.checkpoint_every=3",
               "--set", "train.seed=7"]


def nothing_written(run: Path) -> bool:
    return not run.exists() or not any(p.name != "run.json" for p in run.iterdir())


@pytest.mark.parametrize("arguments, code, message", [
    (["--until", "bogus"], 2, "invalid choice: 'bogus'"),
    (["--set", "kg.sparql.endpoint="], 2, "kg.sparql.endpoint: must be one of qlever, wdqs or an http(s) URL"),
    (["--set", "search.engine=google"], 1, "needs the environment variables GOOGLE_API_KEY, GOOGLE_CSE_ID"),
    (["--set", "train.batch_size=1"], 2, "--set: train.batch_size: a contrastive batch needs at least 2 images"),
    (["--set", "train.preset=no-such-preset"], 2, "train.preset: no-such-preset: no such file, nor a shipped training config"),
    (["--set", "train.set=[max_steps=3]"], 2, "--set: train.set: the run's train section is the trainer's configuration"),
    (["--set", "train.dataset=elsewhere"], 2, "--set: train.dataset: the run trains on RUN/dataset: leave it unset"),
    (["--set", "train.preset=livingthings-vit-b-32"], 1,  # HF_HUB_OFFLINE=1 (conftest), an empty Hub cache
     "train: model.tokenizer openai/clip-vit-base-patch32 is neither a folder nor in the Hub cache"),
    (["--set", "train.mix=[{dataset: ./no-such-replay, weight: 0.25}]"], 1,  # found before the crawl, not after it
     "train: mix[0] (./no-such-replay): ./no-such-replay: no such dataset folder"),
])
def test_bad_configuration_stops_before_any_work(tmp_path, capsys, monkeypatch, arguments, code, message):
    import huggingface_hub.constants

    for name in ("GOOGLE_API_KEY", "GOOGLE_CSE_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached
    run = tmp_path / "run"
    try:
        status = main(["run", "--run", str(run), "--config", "livingthings-mini", *arguments])
    except SystemExit as exit:  # argparse refuses an unknown stage itself
        status = exit.code
    assert status == code
    assert message in capsys.readouterr().err
    assert nothing_written(run)


def test_contact_goes_to_every_stage_that_asks_the_web(tmp_path):
    run = tmp_path / "run"
    assert main(["run", "--config", "demo", "--run", str(run), "--until", "kg", "--set", "kg.sources=[wikidata]",
                 "--contact", "you@example.org"]) == 0
    config = yaml.safe_load((run / "config" / "run.yaml").read_text())
    assert config["kg"]["sparql"]["contact"] == config["search"]["contact"] == config["download"]["contact"] == "you@example.org"


@pytest.mark.parametrize("command", [["run"], ["build"]])
def test_a_run_directory_of_the_previous_layout_is_refused_before_any_stage(command, tmp_path, capsys):
    """Layout 2 (read today only through upgrade code, now removed) is refused by the preflight
    with one message saying what to do, and nothing in the folder changes."""
    from entitynet import layout

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"layout": 2, "entitynet": "0.1.0"}))
    (run / "images").mkdir()
    assert layout.LAYOUT_VERSION == 3
    assert main([*command, "--run", str(run), "--config", "livingthings-mini"]) == 1
    error = capsys.readouterr().err
    assert "made by entitynet 0.1.0 (run-directory layout 2)" in error and "(layout 3)" in error
    assert "use another --run and run the stages again there" in error
    assert len(error.strip().splitlines()) == 1
    assert sorted(p.name for p in run.iterdir()) == ["images", "run.json"]
    assert json.loads((run / "run.json").read_text())["layout"] == 2
    # layout 1 stamped nothing: a folder with stages and no run.json is that, not a new run
    older = tmp_path / "older"
    (older / "stages").mkdir(parents=True)
    (older / "stages" / "images.json").write_text("{}")
    assert main([*command, "--run", str(older), "--config", "livingthings-mini"]) == 1
    error = capsys.readouterr().err
    assert "made before run directories recorded their layout (layout 1)" in error and len(error.strip().splitlines()) == 1
    assert not (older / "run.json").exists()


def test_the_mini_preset_is_accepted_by_every_stage_offline(tmp_path):
    """It cannot run here (QLever, Commons): its configuration loads, every stage's check passes,
    and what each stage builds from it is what the preset promises."""
    from entitynet.train_config import run_train_config as train_config

    config = load_config("livingthings-mini")
    run = RunDir(tmp_path / "run")
    pipeline.preflight(config, run, pipeline.STAGES)
    assert config.kg.sparql.endpoint_url.startswith("https://") and config.search.engine == "commons"
    assert config.kg.sources == ["wikidata", "wordnet"] and config.train.enabled and config.eval.enabled
    # about a thousand images: queries x candidates per query
    assert 800 <= config.search.max_queries * config.search.per_query <= 1500
    trainer = train_config(config, run)
    assert trainer.model.preset == "tiny" and trainer.max_steps == 1500 and trainer.dataset_config == "livingthings"
    assert Path(trainer.dataset) == run.path("dataset") and Path(trainer.output_dir) == run.root
    assert [entry.name for entry in pipeline.STAGES if entry.enabled(config)] == [
        "kg", "enrich", "queries", "search", "download", "build", "train", "eval"]


def test_a_finished_run_is_taken_again_from_its_config(demo_run, tmp_path, capsys):
    """RUN/config/run.yaml is the whole configuration: `entitynet run` with it skips every stage
    and writes the summary again."""
    copy = tmp_path / "run"
    shutil.copytree(demo_run, copy, ignore=shutil.ignore_patterns("cache"))
    assert main(["run", "--config", str(copy / "config" / "run.yaml"), "--run", str(copy)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("already complete") >= 8 and "seen_entities: top-1" in printed
    assert json.loads((copy / "summary.json").read_text())["evaluations"]["seen_entities"]["images"] > 0


def test_the_summary_is_made_from_what_is_on_disk_so_a_run_that_runs_nothing_forgets_nothing(demo_run, tmp_path, capsys):
    """`--from eval --until train` runs no stage: the summary still has every stage's record and
    the evaluations, read from RUN/stages/. A stage whose inputs were redone since is outdated."""
    copy = tmp_path / "run"
    shutil.copytree(demo_run, copy, ignore=shutil.ignore_patterns("cache"))
    before = json.loads((copy / "summary.json").read_text())
    config = ["--config", str(copy / "config" / "run.yaml"), "--run", str(copy)]
    capsys.readouterr()  # what the session's demo printed, if it was made for this test
    assert main(["run", *config, "--from", "eval", "--until", "train"]) == 0
    after = json.loads((copy / "summary.json").read_text())
    assert after["evaluations"] == before["evaluations"] and after["evaluations"]["seen_entities"]["images"] > 0
    assert {s["name"]: s["status"] for s in after["stages"]} == {
        **{name: "finished earlier" for name in ("kg", "enrich", "queries", "search", "download", "build", "train", "eval")},
        "push": "left out"}
    for old, new in zip(before["stages"], after["stages"]):
        assert {k: v for k, v in old.items() if k != "status"} == {k: v for k, v in new.items() if k != "status"}
    printed = capsys.readouterr().out
    assert "seen_entities: top-1" in printed
    # a copied run's summary names its own folders, not the ones of the run it was copied from
    assert str(demo_run) not in printed and "the model: RUN/model" in printed

    # another dataset: the model and its evaluation were made from the old one
    assert main(["build", *config, "--force", "--set", "build.seed=1", "-q"]) == 0
    assert main(["run", *config, "--until", "kg"]) == 0
    statuses = {s["name"]: s["status"] for s in json.loads((copy / "summary.json").read_text())["stages"]}
    assert statuses["kg"] == "already complete" and statuses["build"] == "finished earlier"
    assert statuses["train"] == statuses["eval"] == "outdated"
    printed = capsys.readouterr().out
    assert "train     outdated" in printed and "entitynet run --from train --force" in printed


def test_from_train_with_force_trains_again_and_leaves_the_data_stages_alone(demo_run, tmp_path, capsys):
    """`--from train --force` with another seed: a new model from scratch (the old experiment's
    checkpoints are discarded, not refused), a new evaluation; the data stages are not touched."""
    copy = tmp_path / "run"
    shutil.copytree(demo_run, copy, ignore=shutil.ignore_patterns("cache"))
    before = {name: (copy / "stages" / f"{name}.json").read_text() for name in ("download", "build", "train")}
    old_model = (copy / "model" / "model.safetensors").read_bytes()
    # a suite result of the old model: the suite skips tasks whose JSON exists (to resume), so a kept
    # one would be reported, and put in the new model's card, as the new model's
    stale = copy / "eval" / "suite" / "rare_species.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"task_name": "rare_species", "metrics": {"acc1": 0.9}}))
    assert main(["run", "--config", str(copy / "config" / "run.yaml"), "--run", str(copy), "--from", "train", "--force",
                 *TRAIN_SHORT]) == 0
    assert not stale.exists() and "rare_species" not in (copy / "eval" / "summary.md").read_text()
    printed = capsys.readouterr().out
    assert "train: done" in printed and "eval: done" in printed and "kg:" not in printed
    after = {name: (copy / "stages" / f"{name}.json").read_text() for name in before}
    assert after["download"] == before["download"] and after["build"] == before["build"] and after["train"] != before["train"]
    assert json.loads(after["train"])["stats"]["steps"] == 6
    assert (copy / "model" / "model.safetensors").read_bytes() != old_model
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]


def test_an_interrupted_forced_retrain_says_to_rerun_without_force_which_resumes_it(demo_run, tmp_path, capsys,
                                                                                      monkeypatch, caplog):
    """`--from train --force` interrupted after a checkpoint: the hint drops --force (which would
    discard the checkpoint); the hinted command, spelled another way from another working
    directory (a relative --run), resumes from the checkpoint and evaluates the new model, ending
    with the weights of an uninterrupted forced run."""
    from entitynet.training import train as trainer

    retrain = ["--from", "train", *TRAIN_SHORT]
    copies = {name: tmp_path / name for name in ("straight", "interrupted")}
    for copy in copies.values():
        shutil.copytree(demo_run, copy, ignore=shutil.ignore_patterns("cache"))
    assert main(["run", "--config", str(copies["straight"] / "config" / "run.yaml"), "--run", str(copies["straight"]),
                 *retrain, "--force"]) == 0
    copy = copies["interrupted"]
    original = trainer.save_checkpoint

    def interrupted_after_step_three(accelerator, folder, state, keep):
        original(accelerator, folder, state, keep)
        if state["step"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_checkpoint", interrupted_after_step_three)
    capsys.readouterr()
    assert main(["run", "--config", str(copy / "config" / "run.yaml"), "--run", str(copy), *retrain, "--force"]) == 130
    error = capsys.readouterr().err
    assert "rerun the same command without --force to resume" in error, error
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["step-00000003"]
    monkeypatch.setattr(trainer, "save_checkpoint", original)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO", logger="entitynet.training.train"):
        assert main(["run", "--config", "interrupted/config/run.yaml", "--run", "interrupted", *retrain]) == 0, \
            capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "train: done" in printed and "eval: done" in printed, printed  # not the evaluation of the model before
    assert "resuming from" in caplog.text and "step-00000003 (step 3)" in caplog.text, caplog.text
    assert (copy / "model" / "model.safetensors").read_bytes() == \
        (copies["straight"] / "model" / "model.safetensors").read_bytes()


def test_from_a_stage_whose_inputs_are_missing_says_what_to_run_first(tmp_path, capsys):
    assert main(["run", "--config", "demo", "--run", str(tmp_path / "run"), "--from", "train"]) == 1
    assert "has no finished build stage" in capsys.readouterr().err


@pytest.mark.slow
def test_entitynet_run_under_accelerate_launch_trains_and_evaluates_on_two_processes(demo_run, tmp_path):
    """The data stages finished, `accelerate launch --num_processes 2 -m entitynet run` passes them by
    on both processes, trains on both and evaluates: the summary and the model are there."""
    copy = tmp_path / "run"
    shutil.copytree(demo_run, copy, ignore=shutil.ignore_patterns("cache", "model", "checkpoints", "logs", "eval",
                                                                  "tokenizer", "summary.json"))
    for stage in ("train", "eval"):
        (copy / "stages" / f"{stage}.json").unlink()
    done = accelerate_launch(["-m", "entitynet", "run", "--config", str(copy / "config" / "run.yaml"), "--run", str(copy),
                              "--set", "train.max_steps=20", "--set", "train.batch_size=8", "--set", "train.checkpoint_every=10"], seconds=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    summary = json.loads((copy / "summary.json").read_text())
    assert {s["name"]: s["status"] for s in summary["stages"]}["train"] == "done"
    assert json.loads((copy / "stages" / "train.json").read_text())["stats"]["processes"] == 2
    assert done.stderr.count("step 20/20") == 1  # one process group of two: the main process logs
    assert (copy / "model" / "model.safetensors").is_file() and summary["evaluations"]["seen_entities"]["images"] > 0
    assert done.stdout.count("Summary (also in") == 1  # the main process reports, once
    assert done.stdout.count(f"Report: {copy / 'report' / 'index.html'}") == 1 and (copy / "report" / "index.html").is_file()
