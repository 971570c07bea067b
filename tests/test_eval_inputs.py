"""What ``entitynet eval`` reads, and refuses to read (issue 17, items 2, 3 and 10), on the real
camera-trap photos (../shared/realdata) and a tiny CLIPModel saved with its tokenizer:

- a folder is read by explicit rules: stray files (notes, a plain README, .DS_Store) never change
  the reading, a folder two readings fit is refused until ``--format`` says which, and the format
  and the class names used are printed and recorded in the result JSON;
- a model folder without its tokenizer is an error naming the missing files, wherever a model loads
  (eval, convert to-open-clip, load_clip, the trainer's init_from);
- nonsense numbers are usage errors naming the flag; an unreadable image names its file and the
  option that skips and counts such images.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from eval_data import class_names, hf_dataset, image_folder, label_of, read_json, tiny_clip, webdataset  # noqa: E402

from entitynet.cli import main  # noqa: E402

TRUNCATED = "african_elephants_truncated_file.jpg"


@pytest.fixture(scope="module")
def photos(realdata: Path) -> list[Path]:
    """The 13 readable photos of 8 classes."""
    return sorted(p for p in (realdata / "labelled_photos" / "cameratrapai").glob("*.jpg") if "truncated" not in p.name)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, photos) -> Path:
    words = [f"a photo of a {label_of(p)}, a camera trap photo at night" for p in photos] * 5
    return tiny_clip(tmp_path_factory.mktemp("clip"), words)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, photos) -> Path:
    return image_folder(photos, tmp_path_factory.mktemp("layouts") / "folder")


@pytest.fixture(scope="module")
def clean(model_dir, folder, tmp_path_factory) -> dict:
    """The clean image folder's result, the reference every other reading is compared with."""
    return evaluate(model_dir, folder, tmp_path_factory.mktemp("clean") / "clean.json")


def evaluate(model_dir: Path, dataset: Path, out: Path, *extra: str) -> dict:
    assert main(["eval", "--model", str(model_dir), "--dataset", str(dataset), "--output", str(out), "--no-progress",
                 "-q", *extra]) == 0
    return read_json(out)


def copy_of(folder: Path, where: Path) -> Path:
    return Path(shutil.copytree(folder, where))


# --- item 2: a folder is read by rules, not by guessing -----------------------------------------

@pytest.mark.parametrize("stray", ["notes.txt", "README.md", ".DS_Store", "labels.csv"])
def test_a_stray_file_beside_the_class_folders_does_not_change_the_reading(stray, model_dir, folder, clean, photos,
                                                                            tmp_path, capsys):
    messy = copy_of(folder, tmp_path / "photos")
    (messy / stray).write_text("# my camera trap photos\nbear,1\n")
    capsys.readouterr()
    record = evaluate(model_dir, messy, tmp_path / "messy.json")
    assert record["format"] == "imagefolder"
    assert record["metrics"] == clean["metrics"]
    # the rule: folder names, "_" as a space; recorded and printed
    assert record["class_names"] == clean["class_names"] == class_names(photos)
    out = capsys.readouterr().out
    assert "read as an image folder" in out and "african elephants" in out


def test_a_folder_two_readings_fit_is_refused_until_format_chooses(model_dir, folder, clean, photos, tmp_path, capsys):
    both = copy_of(folder, tmp_path / "both")
    hf_dataset(photos, both)  # data/test-*.parquet beside the class folders
    status = main(["eval", "--model", str(model_dir), "--dataset", str(both), "--output", str(tmp_path / "o.json"), "-q"])
    err = capsys.readouterr().err
    assert status == 1 and "--format" in err and "imagefolder" in err and "hf" in err, err
    assert not (tmp_path / "o.json").exists()
    as_folder = evaluate(model_dir, both, tmp_path / "folder.json", "--format", "imagefolder")
    assert (as_folder["format"], as_folder["metrics"]) == ("imagefolder", clean["metrics"])
    assert "subfolders without images left out: data" in capsys.readouterr().out  # data/ holds the parquet
    as_hf = evaluate(model_dir, both, tmp_path / "hf.json", "--format", "hf")
    assert as_hf["format"] == "hf" and as_hf["class_names"] == class_names(photos)  # the parquet's ClassLabel names


def test_format_hf_on_an_image_folder_records_the_names_it_used(model_dir, folder, tmp_path, capsys):
    """Hugging Face's imagefolder loader keeps folder names as they are; whichever reading, the JSON
    and the output say which names were prompted."""
    record = evaluate(model_dir, folder, tmp_path / "hf.json", "--format", "hf")
    assert record["format"] == "hf"
    assert "african_elephants" in record["class_names"] and "african elephants" not in record["class_names"]
    assert "african_elephants" in capsys.readouterr().out


def test_a_dataset_card_with_configs_is_a_hugging_face_dataset(model_dir, photos, tmp_path):
    """A README whose YAML declares configs is the dataset's own statement of its layout."""
    hub = hf_dataset(photos, tmp_path / "hub")
    (hub / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n"
                                   "  - split: test\n    path: data/test-*\n---\n# photos\n")
    record = evaluate(model_dir, hub, tmp_path / "hub.json")
    assert record["format"] == "hf" and record["num_images"] == 13


def test_a_folder_neither_reading_fits_is_refused_naming_format(model_dir, tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("nothing here\n")
    status = main(["eval", "--model", str(model_dir), "--dataset", str(tmp_path / "notes"), "-q",
                   "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 1 and "--format" in err and "Traceback" not in err, err


# --- item 3: no model without its tokenizer ------------------------------------------------------

def without(model_dir: Path, where: Path, *names: str) -> Path:
    copy = copy_of(model_dir, where)
    for name in names:
        (copy / name).unlink()
    return copy


@pytest.mark.parametrize("removed, named", [
    (("tokenizer.json", "tokenizer_config.json"), "tokenizer.json"),
    (("tokenizer_config.json",), "tokenizer_config.json"),
])
def test_a_model_without_its_tokenizer_is_refused_wherever_it_loads(removed, named, model_dir, folder, tmp_path,
                                                                     capsys):
    from entitynet.training.convert import ConversionError, load_clip
    from entitynet.training.evaluation import load_model
    from entitynet.training.evaluation.models import ModelError

    broken = without(model_dir, tmp_path / "model", *removed)
    assert main(["eval", "--model", str(broken), "--dataset", str(folder), "-q", "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert f"{broken}: no tokenizer" in err and named in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ModelError, match=named):
        load_model(str(broken))
    with pytest.raises(ConversionError, match=named):
        load_clip(str(broken))
    assert main(["convert", "to-open-clip", str(broken), str(tmp_path / "oc"), "-q"]) == 1
    assert named in capsys.readouterr().err and not (tmp_path / "oc").exists()


def test_the_trainer_refuses_to_finetune_a_model_without_its_tokenizer(model_dir, tmp_path):
    from entitynet.training.config import load_train_config
    from entitynet.typed_config import ConfigError

    broken = without(model_dir, tmp_path / "model", "tokenizer.json")
    with pytest.raises(ConfigError, match=r"model.init_from.*tokenizer.json"):
        load_train_config("tiny", [f"model.init_from={broken}", "dataset=ORG/NAME", "output_dir=out"])
    assert load_train_config("tiny", [f"model.init_from={model_dir}", "dataset=ORG/NAME", "output_dir=out"]).model.init_from == str(model_dir)


# --- item 10: options and unreadable images ------------------------------------------------------

@pytest.mark.parametrize("flag, value", [("--max-images", "0"), ("--max-images", "-3"), ("--batch-size", "0"),
                                         ("--batch-size", "-4"), ("--workers", "-1"), ("--max-images", "ten")])
def test_nonsense_numbers_are_usage_errors_naming_the_flag(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["eval", "--model", "m", "--dataset", str(tmp_path), flag, value])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and f"argument {flag}" in err and "islice" not in err, err


def test_a_suites_max_images_must_be_positive_too(tmp_path, capsys):
    status = main(["eval", "--model", "m", "--suite", "paper", "--data", "cub.max_images=0", "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and "max_images" in err and "at least 1" in err, err


def test_max_images_takes_the_first_images(model_dir, folder, tmp_path):
    assert evaluate(model_dir, folder, tmp_path / "five.json", "--max-images", "5")["num_images"] == 5


LAYOUTS = {"imagefolder": image_folder, "hf": hf_dataset, "wds": webdataset}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_an_unreadable_image_names_its_file_and_the_option_that_skips_it(layout, model_dir, photos, realdata, tmp_path,
                                                                          capsys):
    broken = realdata / "labelled_photos" / "cameratrapai" / TRUNCATED
    make = LAYOUTS[layout]
    with_bad, good = make([*photos, broken], tmp_path / "bad"), make(photos, tmp_path / "good")
    capsys.readouterr()
    status = main(["eval", "--model", str(model_dir), "--dataset", str(with_bad), "--output", str(tmp_path / "o.json"),
                   "--no-progress", "-q"])
    err = capsys.readouterr().err
    assert status == 1 and "cannot read the image" in err and "--skip-unreadable" in err, err
    assert (".tar:s0000003" if layout == "wds" else TRUNCATED) in err, err  # the shard and key, or the file
    assert not (tmp_path / "o.json").exists()
    skipped = evaluate(model_dir, with_bad, tmp_path / "skipped.json", "--skip-unreadable")
    reference = evaluate(model_dir, good, tmp_path / "good.json")
    assert skipped["skipped_images"] == 1 and reference["skipped_images"] == 0
    assert skipped["num_images"] == reference["num_images"] == 13
    assert skipped["metrics"] == reference["metrics"]
    assert "skipped 1 unreadable image" in capsys.readouterr().out


@pytest.mark.slow
def test_two_processes_skip_the_same_images_as_one(model_dir, photos, realdata, tmp_path):
    """Each process skips the unreadable images it meets; gathered, every process has the one-process
    embeddings, labels and skipped images."""
    import subprocess
    import sys

    from entitynet.training.evaluation import load_model
    from entitynet.training.evaluation.features import embed_images
    from entitynet.training.evaluation.inputs import DataSpec, open_input

    bad = realdata / "labelled_photos" / "cameratrapai" / TRUNCATED
    folder = image_folder([*photos, bad, realdata / "image_edge_cases" / "broken.png"], tmp_path / "bad")
    out = tmp_path / "features.json"
    command = [sys.executable, str(Path(__file__).with_name("evaluation_cases.py")), "skipping", str(model_dir),
               str(folder), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    ranks = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in (0, 1)]
    clip = load_model(str(model_dir))
    single = embed_images(clip.model, clip.processor, open_input(DataSpec(str(folder))).read(), batch_size=3,
                          progress=False, skip_unreadable=True)
    assert ranks[0] == ranks[1]
    assert len(single.skipped) == 2 and ranks[0]["skipped"] == single.skipped
    assert [tuple(labels) for labels in ranks[0]["labels"]] == single.labels and len(single) == 13
    assert torch.allclose(torch.tensor(ranks[0]["embeddings"]), single.embeddings, atol=1e-5)


def test_the_result_json_records_format_and_class_names(model_dir, folder, clean, tmp_path):
    names = tmp_path / "names.json"
    names.write_text(json.dumps([[n, n.upper()] for n in clean["class_names"]]))
    record = evaluate(model_dir, folder, tmp_path / "renamed.json", "--class-names", str(names))
    assert record["class_names"] == [[n, n.upper()] for n in clean["class_names"]]
    assert (record["format"], record["skipped_images"]) == ("imagefolder", 0)
