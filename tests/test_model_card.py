"""The model card as the Hub reads it: the demo's run and a model evaluated twice, parsed with
huggingface_hub's own ``metadata_load`` and ``model_index_to_eval_results``. Each result once,
filed under the dataset's Hub id, one of its configurations and one of its splits; the text gives
acc1's chance level beside each score; a model pushed after its dataset names it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import DatasetCard, ModelCard, metadata_load
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

from entitynet.cli import main

pytest.importorskip("torch")

DEMO_ID = "entitynet/livingthings-demo"  # the demo's build.repo_id


def results_of(card: Path) -> list:
    """The model-index as the Hub parses it; it survives a round trip through EvalResult."""
    metadata = metadata_load(card)
    name, results = model_index_to_eval_results(metadata["model-index"])
    assert eval_results_to_model_index(name, results) == _without_none(metadata["model-index"])
    return results


def _without_none(value):
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def task_keys(results: list) -> list[tuple]:
    return [(*r.unique_identifier, r.metric_config, r.metric_name) for r in results]


def table_rows(card: Path) -> list[list[str]]:
    text = card.read_text()
    block = text[text.index("<!-- entitynet results"):text.index("<!-- end of entitynet results")]
    lines = [line for line in block.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("| ").split(" | ")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("| ").split(" | ")))) for line in lines[1:]]


def declared(dataset: Path) -> dict[str, set[str]]:
    """The dataset card's configurations and their splits."""
    configs = DatasetCard.load(dataset / "README.md").data.configs
    return {c["config_name"]: {f["split"] for f in c["data_files"]} for c in configs}


def test_the_demos_card_files_each_result_once_under_the_dataset_id_a_config_and_a_split(demo_run):
    card = demo_run / "model" / "README.md"
    results = results_of(card)
    keys = task_keys(results)
    assert len(keys) == len(set(keys))  # the trainer's test result was replaced by the eval stage's, not repeated
    splits = declared(demo_run / "dataset")
    for result in results:
        assert result.dataset_type == DEMO_ID and result.dataset_name == "LivingThings (demo, synthetic images)"
        assert result.dataset_split in splits[result.dataset_config]
    assert {r.dataset_config for r in results} == {"livingthings"}
    names = {r.dataset_split: r.task_name for r in results if r.task_type == "zero-shot-image-classification"}
    assert names == {"test": "Zero-shot classification, unseen entities",
                     "test_seen": "Zero-shot classification, seen entities"}
    # the eval stage's numbers, as its result JSONs hold them
    for split in ("test", "test_seen"):
        recorded = json.loads((demo_run / "eval" / f"livingthings-{split}.json").read_text())
        acc1 = next(r for r in results if r.dataset_split == split and r.metric_name == "acc1")
        assert acc1.metric_value == round(recorded["metrics"]["acc1"], 4)
    text = card.read_text()
    assert str(demo_run) not in text and "run/dataset" not in text  # no machine path, no folder name
    assert ModelCard.load(card).data.datasets is None  # never pushed: nothing to link to


def test_the_demos_card_text_gives_the_chance_level_beside_each_zero_shot_score(demo_run):
    card = demo_run / "model" / "README.md"
    rows = table_rows(card)
    assert [(row["split"], row["result"]) for row in rows] == [
        ("test", "LivingThings (demo, synthetic images), unseen entities"),
        ("test_seen", "LivingThings (demo, synthetic images), seen entities")]
    for row in rows:
        recorded = json.loads((demo_run / "eval" / f"livingthings-{row['split']}.json").read_text())
        assert row["dataset"] == DEMO_ID and row["config"] == "livingthings"
        assert row["acc1"] == f"{recorded['metrics']['acc1']:.4f}" and row["chance"] == f"{recorded['chance']:.4f}"
    assert "**Unseen entities**" in card.read_text() and "no image of these entities" in card.read_text()


def evaluate(model: Path, dataset: Path, *extra: str) -> int:
    return main(["eval", "--model", str(model), "--dataset", str(dataset), "--config", "livingthings",
                 "--output", str(model.parent / "eval"), "--update-card", str(model), "--no-progress", "-q", *extra])


def test_a_model_evaluated_twice_lists_each_result_once_with_the_later_values(demo_run, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(demo_run / "model", model)
    card = model / "README.md"
    before = task_keys(results_of(card))
    for _ in range(2):  # the eval stage's test split again, then once more
        assert evaluate(model, demo_run / "dataset", "--split", "test") == 0
        results = results_of(card)
        assert task_keys(results) == before
        latest = json.loads(next((model.parent / "eval").glob("*-test.json")).read_text())
        acc1 = next(r for r in results if r.dataset_split == "test" and r.metric_name == "acc1")
        assert acc1.metric_value == round(latest["metrics"]["acc1"], 4)
    assert [row["split"] for row in table_rows(card)] == ["test", "test_seen"]
    assert evaluate(model, demo_run / "dataset", "--split", "validation") == 0  # a new task: added
    results = results_of(card)
    added = [r for r in results if r.dataset_split == "validation"]
    assert len(task_keys(results)) == len(set(task_keys(results))) == len(before) + len(added) and added
    assert {r.task_name for r in added} >= {"Zero-shot classification, unseen entities"}
    assert all(r.dataset_type == DEMO_ID for r in results)
    assert [row["split"] for row in table_rows(card)] == ["test", "test_seen", "validation"]


def test_a_local_dataset_without_a_hub_id_stays_out_of_the_model_index_unless_named(demo_run, tmp_path, caplog):
    model, dataset = tmp_path / "model", tmp_path / "copy"
    shutil.copytree(demo_run / "model", model)
    shutil.copytree(demo_run / "dataset", dataset, ignore=shutil.ignore_patterns(".hub-id.json"))
    (model / "README.md").unlink()
    assert evaluate(model, dataset, "--split", "test") == 0
    assert "model-index" not in metadata_load(model / "README.md") and "no Hub id" in caplog.text
    assert [row["split"] for row in table_rows(model / "README.md")] == ["test"]  # the text has it
    assert evaluate(model, dataset, "--split", "test", "--dataset-id", "someone/living") == 0
    assert {r.dataset_type for r in results_of(model / "README.md")} == {"someone/living"}
    assert evaluate(model, dataset, "--split", "test", "--dataset-id", str(dataset)) == 2  # a path is no id


def test_a_model_pushed_after_its_dataset_names_it(demo_run, tmp_path):
    """The push of the dataset records where it went (``record_id``, what ``publish.push`` calls once
    the upload is done; the Hub is not reachable here, HF_HUB_OFFLINE); ``entitynet push model``
    then links the card before uploading, so the card is linked even though this upload fails."""
    from entitynet.hub_cards.model_card import record_id, recorded_id

    run = tmp_path / "run"
    for part in ("dataset", "model"):
        shutil.copytree(demo_run / part, run / part)
    shutil.copy(demo_run / "run.json", run / "run.json")  # a run directory: its model was trained on its dataset
    # a push that failed records nothing, and a model pushed then is not linked to it
    assert main(["push", "dataset", str(run / "dataset"), "--repo", "someone/livingthings", "-q"]) == 1
    assert recorded_id(run / "dataset") == {"repo_id": DEMO_ID, "pushed": False, "names": [DEMO_ID]}
    assert main(["push", "model", str(run / "model"), "--repo", "someone/clip", "-q"]) == 1
    assert ModelCard.load(run / "model" / "README.md").data.datasets is None
    record_id(run / "dataset", "someone/livingthings", pushed=True)
    assert main(["push", "model", str(run / "model"), "--repo", "someone/clip", "-q"]) == 1
    card = ModelCard.load(run / "model" / "README.md")
    assert card.data.datasets == ["someone/livingthings"]
    assert {r.dataset_type for r in results_of(run / "model" / "README.md")} == {"someone/livingthings"}


def test_the_trainers_dataset_id_names_a_hub_dataset_and_changes_nothing_trained(tmp_path):
    from entitynet.training.config import load_train_config
    from entitynet.typed_config import ConfigError, identity

    base = [f"dataset={tmp_path}", f"output_dir={tmp_path / 'out'}"]
    named = load_train_config("tiny", [*base, "dataset_id=someone/living"])
    assert named.dataset_id == "someone/living"
    assert identity(named) == identity(load_train_config("tiny", base))  # a rename retrains nothing
    with pytest.raises(ConfigError, match="dataset_id"):
        load_train_config("tiny", [*base, f"dataset_id={tmp_path}"])


def test_a_replay_source_is_named_in_the_card_without_local_paths_or_credentials():
    """The card named a tar pattern that is no folder verbatim: /home/alice/private/... and a URL's
    user, password and query (where keys travel) went into a file meant for the Hub."""
    from types import SimpleNamespace

    from entitynet.hub_cards.model_card import replayed

    mix = [SimpleNamespace(dataset="/home/alice/private/cc3m/{00000..00099}.tar", weight=0.25),
           SimpleNamespace(dataset="https://bob:s3cret@data.example.org:8443/laion/{0..9}.tar?token=abc", weight=0.25),
           SimpleNamespace(dataset="laion/relaion2B-en", weight=0.25)]
    names = [source["name"] for source in replayed(SimpleNamespace(batch_size=8, mix=mix))]
    assert names == ["cc3m", "https://data.example.org:8443/laion/{0..9}.tar", "laion/relaion2B-en"]
