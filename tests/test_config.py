"""Configuration: presets, files, overrides, and errors that name the key and the place."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from entitynet.config import Config, load_config, preset_names, preset_path
from entitynet.typed_config import ConfigError, describe


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return str(path)


def test_presets_describe_the_two_datasets():
    assert {"livingthings", "entitynet", "demo"} <= set(preset_names())
    living = load_config(domain="livingthings")
    assert living.kg.wikidata.mode == "organisms"
    assert living.kg.wikidata.roots == ["Q729", "Q756", "Q764"]
    assert living.kg.wikidata.require_image is True
    entitynet = load_config(domain="entitynet")
    assert entitynet.kg.wikidata.mode == "classes"
    assert len(entitynet.kg.wikidata.roots) == 21 and entitynet.kg.wikidata.min_sitelinks == 5  # as the authors' released class query
    assert entitynet.kg.wikidata.require_image is False


def test_every_preset_sets_every_key_explicitly():
    for name in ("livingthings", "entitynet"):
        data = yaml.safe_load(preset_path(name).read_text())
        for key, *_ in describe(Config):
            if key.startswith("train.") and key not in ("train.enabled", "train.preset"):
                continue  # the trainer's keys: its preset (train.preset) is their base layer
            node = data
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{name}.yaml does not set {key}"
                node = node[part]


def test_a_partial_file_changes_only_its_keys(tmp_path):
    config = load_config(write(tmp_path, "domain: entitynet\nkg:\n  sparql:\n    page_size: 500\n"))
    assert config.domain == "entitynet"
    assert config.kg.sparql.page_size == 500
    assert config.kg.wikidata.mode == "classes"  # still the entitynet preset


def test_layers_order_file_then_set_then_flags(tmp_path):
    path = write(tmp_path, "kg:\n  limit_per_root: 7\n  sparql:\n    endpoint: wdqs\n")
    config = load_config(path, assignments=["kg.limit_per_root=9", "kg.sources=[wikidata]"], flags={"--limit": ("kg.limit_per_root", 11)})
    assert config.kg.limit_per_root == 11
    assert config.kg.sources == ["wikidata"]
    assert config.kg.sparql.endpoint_url == "https://query.wikidata.org/sparql"


def test_relative_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "graphs").mkdir()
    config = load_config(write(tmp_path, "kg:\n  sparql:\n    dump: graphs/g.ttl\n"))
    assert config.kg.sparql.dump == str(tmp_path / "graphs" / "g.ttl")
    shipped = load_config("demo")
    assert Path(shipped.kg.sparql.dump).is_file()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kg:\n  sparql:\n    pagesize: 5\n", "unknown key 'kg.sparql.pagesize' (did you mean 'kg.sparql.page_size'?)"),
        ("kg:\n  sparql:\n    page_size: ten\n", "kg.sparql.page_size: expected integer, got 'ten'"),
        ("kg:\n  sparql:\n    page_size: 0\n", "kg.sparql.page_size: must be at least 1"),
        ("kg:\n  sparql:\n    page_size: true\n", "kg.sparql.page_size: expected integer, got True"),
        ("kg:\n  wikidata:\n    roots: [Q729, lion]\n", "kg.wikidata.roots: every entry must be a Q-id"),
        ("kg:\n  wikidata:\n    mode: everything\n", "kg.wikidata.mode: must be one of organisms|classes"),
        ("kg:\n  sources: wikidata\n", "kg.sources: expected list of wikidata|wordnet"),
        ("kg:\n  sources: [wikidata, dbpedia]\n", "kg.sources[1]: must be one of wikidata|wordnet"),
        ("kg:\n  sparql:\n    endpoint: ftp://x\n", "kg.sparql.endpoint: must be one of qlever, wdqs or an http(s) URL"),
        ("kg:\n  sparql:\n    endpoint: https://me:pw@example.org/sparql\n", "kg.sparql.endpoint: must not carry user:password"),
        ("kg: 3\n", "kg: expected"),
        ("- a list\n", "expected a mapping"),
        ("kg:\n  sparql:\n    api_key: abc\n", "secrets never go in a config"),
        ("kg: [\n", "not valid YAML"),
    ],
)
def test_bad_files_fail_naming_the_key_and_the_file(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert expected in str(error.value)
    assert path in str(error.value)


def test_errors_from_overrides_name_the_override():
    with pytest.raises(ConfigError, match=r"^--set: kg.sparql.timeout: must be positive"):
        load_config(assignments=["kg.sparql.timeout=-1"])
    with pytest.raises(ConfigError, match=r"^--limit: kg.limit_per_root: must be at least 1"):
        load_config(flags={"--limit": ("kg.limit_per_root", 0)})
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(assignments=["kg.sparql.timeout"])


def test_unknown_config_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="demo, entitynet, livingthings"):
        load_config("no-such-config")


def test_the_livingthings_preset_is_the_code_defaults():
    """The dataclass defaults (used when the library is called directly) and the shipped
    preset (used by the CLI) must not drift apart. The trainer's keys are those of its preset."""
    from dataclasses import fields, replace

    from entitynet.train_config import TrainConfig, load_train_config

    loaded = load_config(domain="livingthings")
    assert replace(loaded, train=Config().train) == Config()
    trainer = load_train_config(Config().train.preset, ["dataset=d", "output_dir=o"])
    differing = [item.name for item in fields(TrainConfig)
                 if getattr(loaded.train, item.name) != getattr(trainer, item.name) and item.name not in ("dataset", "output_dir")]
    assert not differing


RETRY_KEYS = [f"{section}.{key}" for section in ("kg.sparql", "enrich.llm", "search", "download")
              for key in ("backoff", "max_wait")]


@pytest.mark.parametrize("key", RETRY_KEYS)
def test_negative_retry_settings_are_refused_for_every_remote_client(key):
    with pytest.raises(ConfigError, match=rf"--set: {key}: must not be negative"):
        load_config("demo", assignments=[f"{key}=-1"])


def test_every_remote_client_takes_one_retry_configuration():
    from entitynet.config import RetryConfig

    config = load_config("demo")
    for section in (config.kg.sparql, config.enrich.llm, config.search, config.download):
        assert isinstance(section, RetryConfig)
    with pytest.raises(ConfigError, match="download.max_attempts: must be at least 1"):
        load_config("demo", assignments=["download.max_attempts=0"])


# --- the trainer's keys in the run's configuration ----------------------------------------------
def test_the_run_holds_the_trainers_configuration_on_its_preset(tmp_path):
    """`train:` is the trainer's configuration: its preset is the base layer, the run's file and
    --set train.KEY=VALUE go on top, and the trainer gets exactly that on the run's dataset."""
    from entitynet.rundir import RunDir
    from entitynet.train_config import load_train_config, run_train_config

    tiny = load_train_config("tiny", ["dataset=d", "output_dir=o"])
    config = load_config("demo", assignments=["train.optimizer.learning_rate=0.0002", "train.max_steps=7"])
    assert config.train.preset == "tiny" and config.train.model.preset == "tiny" and config.train.batch_size == tiny.batch_size
    trainer = run_train_config(config, RunDir(tmp_path / "run"))
    assert trainer.optimizer.learning_rate == 0.0002 and trainer.max_steps == 7
    assert trainer.optimizer.warmup_steps == tiny.optimizer.warmup_steps  # the rest of the preset's section stays
    assert trainer.dataset == str(tmp_path / "run" / "dataset") and trainer.output_dir == str(tmp_path / "run")
    assert load_config(None, "entitynet").train.dataset_config == "entitynet"


def test_a_trainer_value_names_where_it_came_from(tmp_path):
    trainer = tmp_path / "trainer.yaml"
    trainer.write_text("batch_size: 1\n")
    with pytest.raises(ConfigError, match=r"train preset trainer.yaml: train.batch_size: a contrastive batch"):
        load_config("demo", assignments=[f"train.preset={trainer}"])
    run = tmp_path / "run.yaml"
    run.write_text("train:\n  optimizer:\n    warmup_steps: -1\n")
    with pytest.raises(ConfigError, match=rf"{run}: train.optimizer.warmup_steps: must not be negative"):
        load_config(str(run))


@pytest.mark.parametrize("old", ["train.config=tiny", "train.set=[max_steps=5]"])
def test_the_old_spelling_of_the_trainer_is_refused_with_the_new_one(old):
    with pytest.raises(ConfigError, match=r"train\.(config|set): .* train\.preset .* --set train\.optimizer\.learning_rate="):
        load_config("demo", assignments=[old])


# --- replay: a list of mappings (train.mix) -----------------------------------------------------
def test_a_mix_is_a_list_of_checked_entries_and_errors_name_the_entry_and_where_it_was_set(tmp_path):
    from entitynet.train_config import MixEntry, load_train_config, mix_rows

    base = ["dataset=main", "output_dir=out", "batch_size=16"]
    trainer = load_train_config("tiny", [*base, "mix=[{dataset: laion, weight: 0.25}, "
                                         "{dataset: other, config: entitynet, weight: 0.1}]"])
    assert trainer.mix == [MixEntry("laion", None, 0.25), MixEntry("other", "entitynet", 0.1)]
    assert mix_rows(16, trainer.mix) == [11, 4, 1]  # whole rows, rounded down; the remainder to the main dataset
    assert mix_rows(100, [MixEntry("a", None, 0.29)]) == [71, 29]  # not 28: 0.29 x 100 is 28.999999999999996
    refused = {
        "mix=[{dataset: a, weight: 0.5}, {dataset: b, weight: 0.5}]": r"mix: the weights sum to 1; they must sum below 1",
        "mix=[{dataset: a, weight: 0}]": r"mix\[0\]\.weight: must be a share between 0 and 1",
        "mix=[{dataset: a, weight: -0.2}]": r"mix\[0\]\.weight: must be a share between 0 and 1",
        "mix=[{dataset: a, weight: 0.1}, {weight: 0.2}]": r"mix\[1\]\.dataset: name a dataset",
        "mix=[{dataset: a, weight: 0.05}]": r"mix\[0\]\.weight: a at weight 0.05 is less than one row of a batch of 16 "
                                            r"per process \(batch_size\); raise the weight to at least 0.0625",
        "mix=[{dataset: a, wieght: 0.2}]": r"unknown key 'mix\[0\]\.wieght' \(did you mean 'mix\[0\]\.weight'\?\); "
                                           r"known keys here: dataset, config, weight",
        "mix=[laion]": r"mix\[0\]: expected mapping with keys dataset, config, weight, got 'laion'",
        "mix=[{dataset: a, config: other, weight: 0.2}]": r"mix\[0\]\.config: expected livingthings\|entitynet or null, got 'other'",
    }
    for assignment, message in refused.items():
        with pytest.raises(ConfigError, match=rf"^--set: {message}"):
            load_train_config("tiny", [*base, assignment])
    with pytest.raises(ConfigError, match=r"streaming: a mix is always streamed"):
        load_train_config("tiny", [*base, "streaming=false", "mix=[{dataset: a, weight: 0.25}]"])
    # in a file, the error names the file; in the run's configuration, train.mix
    path = tmp_path / "trainer.yaml"
    path.write_text("mix:\n  - dataset: laion\n    weight: 1.5\n")
    with pytest.raises(ConfigError, match=rf"^{path}: mix\[0\]\.weight: must be a share"):
        load_train_config(str(path), base)
    run = tmp_path / "run.yaml"
    run.write_text("train:\n  mix:\n    - {dataset: laion, weight: 0.2}\n    - {dataset: more}\n")
    with pytest.raises(ConfigError, match=rf"^{run}: train\.mix\[1\]\.weight: must be a share"):
        load_config(str(run))
    assert [key for key, *_ in describe(type(trainer)) if key.startswith("mix")] == ["mix"]
    assert dict((key, kind) for key, kind, *_ in describe(type(trainer)))["mix"] == \
        "list of mapping with keys dataset, config, weight"
