"""The build stage: a Hub-layout dataset read back with the real load_dataset, its card, the
webdataset export, and publishing's dry run."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import tarfile

import datasets
import pytest
from image_host import picture
from PIL import Image

from entitynet.cli import main
from entitynet.config import DownloadConfig
from entitynet.download.dedup import find_duplicates
from entitynet.download.images import process
from entitynet.download.shards import write_shard
from entitynet.records import Entity, Finding, NaturalType, Query, QueryUse, StoredImage
from entitynet.rundir import RunDir
from entitynet.tables import (
    NATURAL_TYPE_SCHEMA,
    QUERY_SCHEMA,
    RecordWriter,
    entity_writer,
    natural_type_to_row,
    query_to_row,
)

POLICY = DownloadConfig(min_side=16)


def stored(url: str, data: bytes, query_ids: list[str], position: int = 0) -> StoredImage:
    image = process(data, POLICY, "jpeg")
    name = url.rsplit("/", 1)[1]
    sources = [Finding(q, "pool", 0, f"alt of {name}", f"https://example.org/page/{name}", "CC BY 4.0", None, "a photographer")
               for q in query_ids]
    return StoredImage(image.sha256, image.data, image.width, image.height, image.original_width, image.original_height,  # type: ignore[arg-type]
                       image.dhash, "jpeg", url, url, sources, position)


def scaled(data: bytes, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).resize(size).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def write_entities(run: RunDir, living: list[str], other: list[str], non_visual: set[str] = frozenset(),
                   queries: list[Query] = ()) -> None:
    """Entities (living ones are animals, others tools), their natural types and one noun query each."""
    entities = [Entity(id=q, source="wikidata", name=f"animal {q}", domain="living", root="Q729", sitelinks=10) for q in living]
    entities += [Entity(id=q, source="wikidata", name=f"tool {q}", domain="other", root="Q39546", sitelinks=10) for q in other]
    with entity_writer(run.path("entities.parquet")) as writer:
        writer.write_all(entities)
    with RecordWriter(run.path("natural_types.parquet"), NATURAL_TYPE_SCHEMA, natural_type_to_row) as writer:
        writer.write_all(NaturalType(e.id, "animal" if e.domain == "living" else "tool", "test", "kg",
                                     visual=False if e.id in non_visual else None) for e in entities)
    with RecordWriter(run.path("queries.parquet"), QUERY_SCHEMA, query_to_row) as writer:
        writer.write_all([Query(f"q-{e.id}", e.name, None, [QueryUse("noun", e.id)]) for e in entities] + list(queries))


def write_images(run: RunDir, rows: list[StoredImage], download_stats: dict) -> None:
    """Stored images in shards of 20, their duplicates, and every stage up to download marked done."""
    images = run.path("images")
    for number in range(0, len(rows), 20):
        chunk = rows[number:number + 20]
        placed = [dataclasses.replace(row, position=index) for index, row in enumerate(chunk)]
        write_shard(images, number // 20, placed, [], {"shard": number // 20, "stored": len(chunk)})
    find_duplicates(images, images / "duplicates.parquet", 4)
    for stage in ("kg", "enrich", "queries", "search"):
        run.run_stage(stage, {"made": "by hand"}, [], lambda: {})
    run.run_stage("download", {"made": "by hand"}, [], lambda: download_stats)


@pytest.fixture(scope="module")
def made_run(tmp_path_factory) -> tuple[RunDir, dict]:
    """A run directory made by hand: living and other entities, duplicates, a non-visual entity,
    an image of both domains, an image of a train and a test entity, and an evaluation image to
    keep out. With seed 0 and fractions 0.25, Q1, Q4, Q12 and Q105 fall in test, Q2 in train."""
    root = tmp_path_factory.mktemp("build")
    run = RunDir(root / "run")
    living = [f"Q{i}" for i in range(1, 21)]
    other = [f"Q{100 + i}" for i in range(1, 13)]
    shared = Query("q-shared", "shared thing", None, [QueryUse("noun", "Q1"), QueryUse("noun", "Q105")])
    straddling = Query("q-straddling", "a test and a train thing", None, [QueryUse("noun", "Q1"), QueryUse("noun", "Q2")])
    write_entities(run, living, other + ["Q999"], non_visual={"Q999"}, queries=[shared, straddling])
    rows = [stored(f"https://example.org/{q}-{copy}.jpg", picture(200, 150, 2 * number + copy + 1), [f"q-{q}"])
            for number, q in enumerate(living + other) for copy in range(2)]
    original = picture(200, 150, 1)  # Q1's first image
    rows.append(stored("https://example.org/identical.jpg", original, ["q-Q4"]))
    rows.append(stored("https://example.org/near.jpg", scaled(original, (400, 300)), ["q-Q12"]))
    rows.append(stored("https://example.org/both.jpg", picture(200, 150, 777), ["q-shared"]))
    rows.append(stored("https://example.org/straddling.jpg", picture(200, 150, 999), ["q-straddling"]))
    rows.append(stored("https://example.org/justice.jpg", picture(200, 150, 888), ["q-Q999"]))
    write_images(run, rows, {"stored": len(rows), "urls": len(rows) + 3, "reasons": {"http_404": 2, "timeout": 1}})
    evaluation = root / "evaluation"
    evaluation.mkdir()
    (evaluation / "eval.jpg").write_bytes(scaled(picture(200, 150, 12), (300, 225)))  # near Q6's second image
    args = ["build", "--run", str(run.root), "--config", "demo", "--exclude-near", str(evaluation),
            "--set", "build.validation_fraction=0.25", "--set", "build.test_fraction=0.25",
            "--set", "build.seen_test_fraction=0", "--repo", "entitynet/demo-test"]
    assert main(args) == 0
    return run, {"stored": len(rows), "living": living, "other": other}


def load(run: RunDir, config: str, **options):
    return datasets.load_dataset(str(run.path("dataset")), config, **options)


def test_the_two_configs_hold_exactly_their_rows(made_run):
    run, facts = made_run
    everything, living = load(run, "entitynet"), load(run, "livingthings")
    stats = json.loads(run.marker("build").read_text())["stats"]
    assert stats["merged_duplicates"] == 2 and stats["excluded_near_evaluation_images"] == 1 and stats["without_entity"] == 1
    assert stats["straddles_splits"] == 1
    total = sum(len(everything[split]) for split in everything)
    # stored minus duplicates, the excluded, the entity-less and the straddling image
    assert total == facts["stored"] - 2 - 1 - 1 - 1
    assert sum(len(living[split]) for split in living) == sum(
        1 for split in everything for row in everything[split] if row["domain"] == "living")
    assert {row["domain"] for split in living for row in living[split]} == {"living"}
    assert {row["domain"] for split in everything for row in everything[split]} == {"living", "other"}


def test_rows_merge_duplicates_and_keep_everything_that_found_them(made_run):
    run, _ = made_run
    rows = [row for split in load(run, "entitynet").values() for row in split]
    canonical = next(row for row in rows if "https://example.org/Q1-0.jpg" in row["urls"])
    assert set(canonical["urls"]) == {"https://example.org/Q1-0.jpg", "https://example.org/identical.jpg", "https://example.org/near.jpg"}
    assert {e["id"] for e in canonical["entities"]} == {"Q1", "Q4", "Q12"}
    assert {q["text"] for q in canonical["queries"]} == {"animal Q1", "animal Q4", "animal Q12"}
    assert len(canonical["alt_texts"]) == 3 and canonical["license"] == "CC BY 4.0"
    both = next(row for row in rows if "https://example.org/both.jpg" in row["urls"])
    assert both["domain"] == "living" and {e["id"] for e in both["entities"]} == {"Q1", "Q105"}
    assert not any("justice" in url for row in rows for url in row["urls"])
    assert not any("Q6-1" in url for row in rows for url in row["urls"])  # the decontaminated one
    for row in rows:
        row["image"].load()
        assert row["image"].mode == "RGB" and row["image"].size == (row["width"], row["height"])


def test_no_entity_has_rows_in_two_splits_and_an_image_whose_entities_straddle_them_is_left_out(made_run):
    """Every entity's rows lie in the split its hash drew (test_seen being train's): an image found
    for entities of different splits (straddling.jpg: Q1 in test, Q2 in train) is no row at all,
    counted by reason in the statistics and the card."""
    from entitynet.build.rows import entity_split

    run, _ = made_run
    data = load(run, "entitynet")
    assert set(data) - {"test_seen"} == {"train", "validation", "test"}  # test_seen: images of train entities
    splits_of: dict[str, set[str]] = {}
    for split in data:
        for row in data[split]:
            for entity in row["entities"]:
                splits_of.setdefault(entity["id"], set()).add("train" if split == "test_seen" else split)
    assert {entity: splits for entity, splits in splits_of.items() if len(splits) > 1} == {}
    assert all(splits == {entity_split(entity, 0.25, 0.25, 0)} for entity, splits in splits_of.items())
    assert {split for splits in splits_of.values() for split in splits} == {"train", "validation", "test"}
    assert not any("straddling" in url for split in data for row in data[split] for url in row["urls"])
    stats = json.loads(run.marker("build").read_text())["stats"]
    assert stats["straddles_splits"] == 1
    card = (run.path("dataset") / "README.md").read_text()
    assert "entities fall in different splits: 1" in card


def test_test_seen_holds_out_images_of_entities_that_stay_in_train(made_run, tmp_path):
    import shutil

    run, _ = made_run
    copy = RunDir(tmp_path / "run")
    shutil.copytree(run.root, copy.root)
    args = ["build", "--run", str(copy.root), "--config", "demo", "--force", "--set", "build.validation_fraction=0.25",
            "--set", "build.test_fraction=0.25", "--set", "build.seen_test_fraction=0.5",
            "--exclude-near", str(run.root.parent / "evaluation")]
    assert main(args) == 0
    before, after = load(run, "entitynet"), load(copy, "entitynet")
    assert set(after) == {"train", "validation", "test", "test_seen"} and len(after["test_seen"]) > 0
    assert list(after["test"]["image_id"]) == list(before["test"]["image_id"])  # unseen entities untouched
    assert sorted([*after["train"]["image_id"], *after["test_seen"]["image_id"]]) == sorted(before["train"]["image_id"])
    trained = {e["id"] for row in after["train"] for e in row["entities"]}
    assert all(e["id"] in trained for row in after["test_seen"] for e in row["entities"])  # every one seen in training
    card = (copy.path("dataset") / "README.md").read_text()
    assert "test_seen" in card and "never an entity's last one" in card
    assert "test_seen" not in (run.path("dataset") / "README.md").read_text()  # absent unless asked for


def test_streaming_gives_the_same_rows(made_run):
    run, _ = made_run
    stream = load(run, "livingthings", split="train", streaming=True)
    eager = load(run, "livingthings", split="train")
    assert [row["image_id"] for row in stream] == eager["image_id"]


def test_the_card_parses_lists_both_configs_and_its_pictures_exist(made_run):
    from huggingface_hub import DatasetCard

    run, _ = made_run
    folder = run.path("dataset")
    card = DatasetCard.load(folder / "README.md")
    names = [c["config_name"] for c in card.data.configs]
    assert names == ["entitynet", "livingthings"]
    assert card.data.pretty_name == "LivingThings" and card.data.license == "other"
    declared = {c["config_name"]: {s["name"]: s["num_examples"] for s in c["splits"]} for c in card.data.dataset_info}
    for name in names:
        assert declared[name] == {split: len(rows) for split, rows in load(run, name).items()}
    text = (folder / "README.md").read_text()
    assert "More Information Needed" not in text
    for link in ("images/sample_grid.png", "images/images_per_entity.png"):
        assert f"({link})" in text and (folder / link).is_file()
        with Image.open(folder / link) as png:
            assert png.format == "PNG" and png.size[0] > 100
    assert 'load_dataset("entitynet/demo-test", "livingthings"' in text
    assert "http_404 | 2" in text and "Decontamination: 1 images" in text
    assert "synthetic" not in text.lower()  # not a demo run


def test_webdataset_export_reads_back_with_the_same_rows(made_run, tmp_path, capsys):
    run, _ = made_run
    out = tmp_path / "wds"
    assert main(["export", "--run", str(run.root), "--out", str(out), "--samples-per-shard", "10"]) == 0
    exported = datasets.load_dataset("webdataset", data_files={"train": str(out / "*" / "*.tar")}, split="train")
    everything = load(run, "entitynet")
    assert len(exported) == sum(len(everything[s]) for s in everything)
    row = exported[0]
    assert row["jpg"].mode == "RGB" and row["txt"] and row["json"]["image_id"]
    assert len(list((out / "living").glob("train-*.tar"))) >= 2  # sharded


def _exported_samples(out) -> int:
    return sum(1 for tar in out.glob("*/*.tar") for name in tarfile.open(tar).getnames() if name.endswith(".jpg"))


def test_export_again_into_the_same_folder_replaces_the_old_shards(made_run, tmp_path, capsys):
    run, _ = made_run
    rows = sum(len(split) for split in load(run, "entitynet").values())
    out = tmp_path / "wds"
    assert main(["export", "--run", str(run.root), "--out", str(out), "--samples-per-shard", "3"]) == 0
    assert _exported_samples(out) == rows
    assert main(["export", "--run", str(run.root), "--out", str(out), "--samples-per-shard", "50"]) == 0
    assert _exported_samples(out) == rows  # before: the first export's train-00001.tar... stayed beside the new ones
    assert "replaced whole" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("living/train-*.tar")) == ["train-00000.tar"]
    assert json.loads((out / "export.json").read_text())["samples_per_shard"] == 50
    assert not [p for p in tmp_path.iterdir() if p.name != "wds"]  # no staging or old folder left


def test_export_refuses_a_folder_it_did_not_write(made_run, tmp_path, capsys):
    run, _ = made_run
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["export", "--run", str(run.root), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "not written by 'entitynet export'" in err and "choose another --out" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize("count", ["0", "-5"])
def test_export_refuses_a_shard_size_below_one(made_run, tmp_path, capsys, count):
    run, _ = made_run
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--run", str(run.root), "--out", str(tmp_path / "wds"), "--samples-per-shard", count])
    assert exit_.value.code == 2
    assert "--samples-per-shard: expected a whole number of at least 1" in capsys.readouterr().err
    assert not (tmp_path / "wds").exists()


def test_push_dry_run_lists_files_without_network(made_run, capsys, monkeypatch):
    run, _ = made_run
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    assert main(["push", "dataset", str(run.path("dataset")), "--repo", "entitynet/demo-test", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "README.md" in out and "data/living/train-00000-of-00001.parquet" in out
    assert "bytes in" in out and "hf_xxx" not in out


def test_push_without_network_fails_cleanly_and_never_shows_the_token(made_run, capsys, monkeypatch):
    run, _ = made_run
    token = "hf_" + "s" * 34
    monkeypatch.setenv("HF_TOKEN", token)
    assert main(["push", "dataset", str(run.path("dataset")), "--repo", "entitynet/demo-test"]) == 1
    captured = capsys.readouterr()
    assert "entitynet push: error" in captured.err and token not in captured.err + captured.out
    assert main(["push", "dataset", str(run.root), "--repo", "x/y", "--dry-run"]) == 1  # not a built dataset
    assert "run `entitynet build` first" in capsys.readouterr().err


def test_a_finished_build_rerun_with_more_processes_is_complete(made_run, capsys):
    run, _ = made_run
    made = (run.path("dataset") / "README.md").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["build", "--run", str(run.root), "--config", "demo", "--num-proc", "2", "--exclude-near",
                 str(run.root.parent / "evaluation"), "--set", "build.validation_fraction=0.25",
                 "--set", "build.test_fraction=0.25", "--set", "build.seen_test_fraction=0", "--repo", "entitynet/demo-test"]) == 0
    assert "build: already complete" in capsys.readouterr().out
    assert (run.path("dataset") / "README.md").stat().st_mtime_ns == made


def test_several_builder_processes_give_the_same_rows(made_run, tmp_path):
    import shutil

    run, _ = made_run
    copy = tmp_path / "run"
    shutil.copytree(run.root, copy, ignore=shutil.ignore_patterns("dataset", "cache"))
    assert main(["build", "--run", str(copy), "--config", "demo", "--num-proc", "2", "--exclude-near", str(run.root.parent / "evaluation"),
                 "--set", "build.validation_fraction=0.25", "--set", "build.test_fraction=0.25", "--set", "build.seen_test_fraction=0", "--repo", "entitynet/demo-test", "-q"]) == 0
    for config in ("entitynet", "livingthings"):
        one, two = load(run, config), datasets.load_dataset(str(copy / "dataset"), config)
        assert set(one) == set(two)
        for split in one:
            assert sorted(one[split]["image_id"]) == sorted(two[split]["image_id"])
    assert len(list((copy / "dataset" / "data" / "living").glob("train-*.parquet"))) >= 1


def test_every_declared_config_loads_when_a_held_out_split_is_empty(tmp_path):
    """An EntityNet-domain run where the few living entities all fall in train: livingthings has no
    validation or test rows, and must load all the same (it raised UnexpectedSplitsError)."""
    from huggingface_hub import DatasetCard

    from entitynet.build.rows import entity_split

    living, other = ["Q1", "Q2"], [f"Q{100 + i}" for i in range(8)]
    seed = next(s for s in range(10_000) if {entity_split(q, 0.3, 0.3, s) for q in living} == {"train"}
                and {entity_split(q, 0.3, 0.3, s) for q in other} == {"train", "validation", "test"})
    run = RunDir(tmp_path / "run")
    write_entities(run, living, other)
    rows = [stored(f"https://example.org/{q}.jpg", picture(200, 150, number), [f"q-{q}"]) for number, q in enumerate(living + other)]
    write_images(run, rows, {"stored": len(rows), "urls": len(rows), "reasons": {}})
    assert main(["build", "--run", str(run.root), "--config", "demo", "--set", f"build.seed={seed}", "-q",
                 "--set", "build.validation_fraction=0.3", "--set", "build.test_fraction=0.3"]) == 0

    card = DatasetCard.load(run.path("dataset") / "README.md")
    declared = {c["config_name"]: {s["name"]: s["num_examples"] for s in c["splits"]} for c in card.data.dataset_info}
    assert declared["livingthings"] == {"train": 2}
    for config in card.data.configs:
        name = config["config_name"]
        loaded = load(run, name)
        assert {split: len(rows) for split, rows in loaded.items()} == declared[name]
        assert {files["split"] for files in config["data_files"]} == set(declared[name])
    assert set(declared["entitynet"]) == {"train", "validation", "test"}


def test_decontamination_hashes_evaluation_images_as_downloads_and_counts_unreadable_ones(tmp_path):
    """An evaluation image that carries an EXIF rotation is the stored (upright) picture: it is
    found. Evaluation images that cannot be read are counted and shown, never skipped silently."""
    from huggingface_hub import DatasetCard

    upright = Image.open(io.BytesIO(picture(240, 160, 5)))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to show": the pixels are stored turned the other way
    rotated = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(rotated, "JPEG", quality=92, exif=exif.tobytes())
    run = RunDir(tmp_path / "run")
    write_entities(run, ["Q1", "Q2"], [])
    rows = [stored("https://example.org/Q1.jpg", picture(240, 160, 5), ["q-Q1"]),
            stored("https://example.org/Q2.jpg", picture(240, 160, 6), ["q-Q2"])]
    write_images(run, rows, {"stored": 2, "urls": 2, "reasons": {}})
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "rotated.jpg").write_bytes(rotated.getvalue())
    (evaluation / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    assert main(["build", "--run", str(run.root), "--config", "demo", "--exclude-near", str(evaluation), "-q",
                 "--set", "build.validation_fraction=0", "--set", "build.test_fraction=0"]) == 0

    stats = json.loads(run.marker("build").read_text())["stats"]
    assert stats["excluded_near_evaluation_images"] == 1
    assert {key: value for key, value in stats.items() if "unreadable" in key} == {"evaluation_images_unreadable": 1}
    assert load(run, "entitynet")["train"]["urls"] == [["https://example.org/Q2.jpg"]]
    # which evaluation image matched which stored one, published beside the dataset
    with (run.path("dataset") / "decontamination.csv").open() as handle:
        matches = list(csv.DictReader(handle))
    assert [(m["evaluation_image"], m["url"]) for m in matches] == [("rotated.jpg", "https://example.org/Q1.jpg")]
    assert int(matches[0]["distance"]) <= 4
    card = DatasetCard.load(run.path("dataset") / "README.md").text
    assert "1 evaluation image could not be read" in card


def test_the_card_links_only_to_what_exists_and_says_what_ran(made_run, tmp_path):
    import shutil

    run, _ = made_run
    text = (run.path("dataset") / "README.md").read_text()
    assert "github.com/entitynet" not in text  # no such repository
    assert "https://arxiv.org/abs/2505.02746" in text
    built = text[text.index("## How it was built"):text.index("## Statistics")]
    steps = [line for line in built.splitlines() if line.startswith("| ") and not line.startswith("| step")]
    assert len(steps) == 6 and not any("?" in line for line in steps), steps
    assert "| download | 69 stored of 72 URLs; settings not recorded" in built  # stats known, settings made by hand

    copy = tmp_path / "run"
    shutil.copytree(run.root, copy, ignore=shutil.ignore_patterns("dataset", "cache"))
    assert main(["build", "--run", str(copy), "--config", "demo", "--set", "build.homepage=https://example.org/tool", "-q",
                 "--set", "build.validation_fraction=0.25", "--set", "build.test_fraction=0.25", "--set", "build.seen_test_fraction=0"]) == 0
    assert "[EntityNet](https://example.org/tool)" in (copy / "dataset" / "README.md").read_text()
