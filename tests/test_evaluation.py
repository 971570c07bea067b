"""``entitynet eval`` on the real camera-trap photos: the same images as an image folder, a
Hugging Face dataset and CLIP_benchmark webdataset shards give identical results, equal to a
direct computation with CLIPModel's own get_image_features / get_text_features; bad input
ends in one clear error; the trainer's entry point works on map-style and streamed rows."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from eval_data import (  # noqa: E402
    TEMPLATES,
    captions_of,
    class_names,
    hf_dataset,
    image_folder,
    label_of,
    ordered,
    read_json,
    tiny_clip,
    webdataset,
)
from PIL import Image, ImageOps  # noqa: E402

from entitynet.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def photos(realdata: Path) -> list[Path]:
    """The 13 readable photos (8 classes: elephants x4 variants, bear, blank x3, cattle, dog, human, ocelot, vehicle)."""
    folder = realdata / "labelled_photos" / "cameratrapai"
    return sorted(p for p in folder.glob("*.jpg") if "truncated" not in p.name)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, photos) -> Path:
    words = [f"a camera trap photo of a {label_of(p)} at night" for p in photos] + [c for p in photos for c in captions_of(p)]
    return tiny_clip(tmp_path_factory.mktemp("clip"), words * 5)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, photos) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    return {"imagefolder": image_folder(photos, root / "folder"), "hf": hf_dataset(photos, root / "hf"),
            "wds": webdataset(photos, root / "wds"), "wds-retrieval": webdataset(photos, root / "wds-ret", retrieval=True)}


def evaluate(model_dir: Path, dataset: Path, out: Path, *extra: str) -> dict:
    assert main(["eval", "--model", str(model_dir), "--dataset", str(dataset), "--output", str(out), "--no-progress",
                 "-q", *extra]) == 0
    return read_json(out)


@torch.no_grad()
def direct(model_dir: Path, photos: list[Path], templates: tuple[str, ...]) -> dict:
    """Zero-shot metrics written out by hand with CLIPModel's own feature methods."""
    model = transformers.CLIPModel.from_pretrained(model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    processor = transformers.AutoImageProcessor.from_pretrained(model_dir)
    photos = ordered(photos)
    images = [ImageOps.exif_transpose(Image.open(p)).convert("RGB") for p in photos]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    image = model.get_image_features(pixel_values=pixels).pooler_output
    image = image / image.norm(dim=-1, keepdim=True)
    names = class_names(photos)
    weights = []
    for name in names:
        tokens = tokenizer([t.replace("{c}", name) for t in templates], padding=True, return_tensors="pt")
        text = model.get_text_features(**tokens).pooler_output
        mean = (text / text.norm(dim=-1, keepdim=True)).mean(dim=0)
        weights.append(mean / mean.norm())
    top = (image @ torch.stack(weights).T).topk(5, dim=1).indices.tolist()
    truth = [names.index(label_of(p)) for p in photos]
    per_class = [[t[0] == c for t, c in zip(top, truth) if c == k] for k in range(len(names))]
    classification = {"acc1": sum(t[0] == c for t, c in zip(top, truth)) / len(truth),
                      "acc5": sum(c in t for t, c in zip(top, truth)) / len(truth),
                      "mean_per_class_recall": sum(sum(r) / len(r) for r in per_class) / len(per_class)}
    captions = [c for p in photos for c in captions_of(p)]
    owner = [n for n, p in enumerate(photos) for _ in captions_of(p)]
    tokens = tokenizer(captions, padding=True, return_tensors="pt")
    text = model.get_text_features(**tokens).pooler_output
    scores = (text / text.norm(dim=-1, keepdim=True)) @ image.T  # captions x images
    retrieval = {}
    for k in (1, 5, 10):
        images_found = scores.topk(k, dim=1).indices.tolist()
        texts_found = scores.T.topk(k, dim=1).indices.tolist()
        retrieval[f"image_retrieval_recall@{k}"] = sum(owner[t] in found for t, found in enumerate(images_found)) / len(captions)
        retrieval[f"text_retrieval_recall@{k}"] = sum(
            any(owner[t] == i for t in found) for i, found in enumerate(texts_found)) / len(photos)
    return {"classification": classification, "retrieval": retrieval, "image": image}


def test_three_layouts_of_the_real_photos_give_identical_results_equal_to_a_direct_computation(
        model_dir, layouts, photos, tmp_path):
    templates = tmp_path / "templates.txt"
    templates.write_text("\n".join(TEMPLATES) + "\n")
    results = {kind: evaluate(model_dir, layouts[kind], tmp_path / f"{kind}.json", "--templates", str(templates))
               for kind in ("imagefolder", "hf", "wds")}
    expected = direct(model_dir, photos, TEMPLATES)["classification"]
    for kind, record in results.items():
        assert record["metrics"] == pytest.approx(expected, abs=1e-12), kind
        assert (record["num_images"], record["num_classes"], record["format"]) == (13, 8, kind)
    assert results["imagefolder"]["metrics"] == results["hf"]["metrics"] == results["wds"]["metrics"]
    # a random model: far from perfect, and not trivially zero everywhere (the check can fail)
    assert 0 < expected["acc5"] < 1
    # the webdataset's own templates are its default; the others default to "a photo of a {c}."
    default_wds = evaluate(model_dir, layouts["wds"], tmp_path / "wds-default.json")
    assert default_wds["templates"] == "dataset" and default_wds["metrics"] == results["wds"]["metrics"]
    assert evaluate(model_dir, layouts["hf"], tmp_path / "hf-default.json")["templates"] == "simple"


def test_retrieval_from_webdataset_and_hf_captions_equals_the_direct_computation(model_dir, layouts, photos, tmp_path):
    wds = evaluate(model_dir, layouts["wds-retrieval"], tmp_path / "r-wds.json")
    hf = evaluate(model_dir, layouts["hf"], tmp_path / "r-hf.json", "--caption-column", "captions",
                  "--task", "zeroshot_retrieval")
    expected = direct(model_dir, photos, TEMPLATES)["retrieval"]
    assert wds["metrics"] == pytest.approx(expected, abs=1e-12)
    assert hf["metrics"] == wds["metrics"]
    assert (wds["num_images"], wds["num_texts"], wds["task"]) == (13, 26, "zeroshot_retrieval")
    assert set(wds["metrics"]) == {f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5, 10)}


def test_streamed_features_equal_the_models_own_and_do_not_depend_on_batch_size(model_dir, layouts, photos):
    from entitynet.training.evaluation import load_model
    from entitynet.training.evaluation.features import embed_images
    from entitynet.training.evaluation.inputs import DataSpec, open_input

    clip = load_model(str(model_dir))
    source = open_input(DataSpec(str(layouts["wds"])))
    one = embed_images(clip.model, clip.processor, source.read(), batch_size=64, progress=False)
    small = embed_images(clip.model, clip.processor, source.read(), batch_size=3, workers=2, progress=False)
    assert torch.allclose(one.embeddings, direct(model_dir, photos, TEMPLATES)["image"], atol=1e-6)
    assert torch.allclose(one.embeddings, small.embeddings, atol=1e-5)
    assert one.labels == small.labels and len(one) == 13


def test_the_json_has_clip_benchmarks_fields_and_the_table_our_columns(model_dir, layouts, tmp_path):
    record = evaluate(model_dir, layouts["imagefolder"], tmp_path / "cam.json")
    assert {"dataset", "model", "task", "metrics", "language"} <= set(record)
    assert set(record["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert record["task"] == "zeroshot_classification" and record["dataset"] == "folder"
    assert record["chance"] == pytest.approx(1 / 8)  # one class per photo, 8 classes
    table = (tmp_path / "cam.md").read_text()
    assert "| model | task | dataset | split | templates | classes | images | num_classes | acc1 | chance |" in table
    csv = (tmp_path / "cam.csv").read_text().splitlines()
    assert csv[0].startswith("kind,model,task,dataset,split,templates,classes,images,num_classes")
    assert len(csv) == 2 and csv[1].startswith("task,")


def test_two_evaluations_into_one_folder_leave_a_table_of_both(model_dir, layouts, tmp_path, capsys):
    """The table of a results folder is made from every result JSON in it, not from the last command."""
    out = tmp_path / "results"
    for name, layout in (("cams-folder", "imagefolder"), ("cams-hf", "hf")):
        capsys.readouterr()
        assert main(["eval", "--model", str(model_dir), "--dataset", str(layouts[layout]), "--name", name,
                     "--output", str(out), "--no-progress", "-q"]) == 0
    assert sorted(p.name for p in out.glob("*.json")) == ["cams-folder.json", "cams-hf.json"]
    for table in ((out / "summary.md").read_text(), capsys.readouterr().out):  # the file, and what the second printed
        assert "| cams-folder |" in table and "| cams-hf |" in table
    rows = (out / "summary.csv").read_text().splitlines()
    assert sorted(row.split(",")[2] for row in rows[1:]) == ["cams-folder", "cams-hf"]


def test_class_name_synonyms_are_averaged_with_the_templates(model_dir, layouts, photos, tmp_path):
    """A class-names file can give several names per class: each (name, template) prompt counts once."""
    import json

    names = class_names(photos)
    synonyms = tmp_path / "names.json"
    synonyms.write_text(json.dumps([[name, name.upper()] for name in names]))
    record = evaluate(model_dir, layouts["wds"], tmp_path / "syn.json", "--class-names", str(synonyms),
                      "--templates", "none")
    from entitynet.training.evaluation import ClassSet, load_model
    from entitynet.training.evaluation.scoring import zero_shot_classifier
    from entitynet.training.evaluation.templates import resolve_templates

    clip = load_model(str(model_dir))
    weights = zero_shot_classifier(clip.model, clip.tokenizer, ClassSet.from_names([[n, n.upper()] for n in names]),
                                   resolve_templates("none"))
    plain = zero_shot_classifier(clip.model, clip.tokenizer, ClassSet.from_names(names), resolve_templates("none"))
    upper = zero_shot_classifier(clip.model, clip.tokenizer, ClassSet.from_names([n.upper() for n in names]), resolve_templates("none"))
    both = torch.nn.functional.normalize(plain + upper, dim=-1)
    assert torch.allclose(weights, both, atol=1e-6)
    assert record["num_classes"] == 8


@pytest.mark.parametrize("case, expected", [
    (["--dataset", "{tmp}/missing"], "no such folder"),
    (["--dataset", "{hf}", "--split", "validation"], "no split 'validation'; splits: test"),
    (["--dataset", "{wds}", "--split", "train"], "no split 'train'"),
    (["--dataset", "{empty}"], "no images found"),
    (["--dataset", "{hf}", "--label-column", "species"], "no column 'species'"),
    (["--dataset", "{folder}", "--templates", "{tmp}/bad.txt"], "every template needs {c}"),
    (["--dataset", "{broken}"], "african_elephants_truncated_file.jpg: cannot read the image"),
    (["--dataset", "{folder}", "--classes", "imagenet1k-animals"], "unknown class subset"),
    (["--suite", "nope"], "neither a file nor a shipped suite"),
    # offline (tests set HF_HUB_OFFLINE=1): a Hub id fails with its name before any request, detected or not
    (["--dataset", "clip-benchmark/wds_imagenet1k"], "clip-benchmark/wds_imagenet1k: HF_HUB_OFFLINE is set"),
    (["--dataset", "clip-benchmark/wds_imagenet1k", "--format", "wds"], "wds_imagenet1k: HF_HUB_OFFLINE is set"),
    (["--dataset", "imageomics/rare-species", "--format", "hf"], "imageomics/rare-species: HF_HUB_OFFLINE is set"),
])
def test_bad_input_is_one_clear_error_without_a_traceback(case, expected, model_dir, layouts, realdata, tmp_path, capsys):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    (tmp_path / "bad.txt").write_text("a photo of a thing\n")
    broken = tmp_path / "broken" / "elephants"
    broken.mkdir(parents=True)
    shutil.copyfile(realdata / "labelled_photos/cameratrapai/african_elephants_truncated_file.jpg",
                    broken / "african_elephants_truncated_file.jpg")
    places = {"tmp": tmp_path, "hf": layouts["hf"], "wds": layouts["wds"], "empty": tmp_path / "empty",
              "folder": layouts["imagefolder"], "broken": tmp_path / "broken"}
    argv = ["eval", "--model", str(model_dir), "--output", str(tmp_path / "out"), "--no-progress", "-q",
            *(arg.format(**places) for arg in case)]
    status = main(argv)
    err = capsys.readouterr().err
    assert status in (1, 2)
    assert expected in err, err
    assert "Traceback" not in err


def test_integer_labels_take_their_names_from_a_class_names_file(model_dir, layouts, photos, tmp_path, capsys):
    import datasets

    plain = tmp_path / "plain"
    rows = datasets.load_dataset(str(layouts["hf"]), split="test").cast_column("label", datasets.Value("int64"))
    (plain / "data").mkdir(parents=True)
    rows.to_parquet(str(plain / "data" / "test-00000-of-00001.parquet"))
    assert main(["eval", "--model", str(model_dir), "--dataset", str(plain), "-q", "--output", str(tmp_path / "o")]) == 1
    assert "are numbers without names; pass --class-names" in capsys.readouterr().err
    names = tmp_path / "classnames.txt"
    names.write_text("\n".join(class_names(photos)) + "\n")
    named = evaluate(model_dir, plain, tmp_path / "named.json", "--class-names", str(names))
    assert named["metrics"] == evaluate(model_dir, layouts["hf"], tmp_path / "classlabel.json")["metrics"]


def test_a_model_that_is_not_there_is_named(layouts, tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "nomodel"), "--dataset", str(layouts["wds"]), "-q",
                 "--output", str(tmp_path / "o")]) == 1
    assert "nomodel: cannot load a CLIPModel" in capsys.readouterr().err


def test_without_the_train_extra_eval_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    for name in [name for name in sys.modules if name.startswith("entitynet.training")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails, as without the extra
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--model", "m", "--dataset", "d"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'entitynet[train]'" in err and "Traceback" not in err


def test_the_metric_modules_follow_clip_benchmarks_definitions():
    from entitynet.training.evaluation.scoring import metric

    classification = metric("zeroshot_classification")
    # 3 images: right at 1, right at 2, wrong; class 0 has two images (1 of 2 right), class 2 one (right)
    scores = classification.compute(predictions=[[0, 1, 2, 3, 4], [1, 0, 2, 3, 4], [2, 1, 0, 3, 4]],
                                     references=[[0], [0], [2]], num_classes=6)
    assert scores == {"acc1": pytest.approx(2 / 3), "acc5": 1.0, "mean_per_class_recall": pytest.approx(0.75)}
    assert classification.compute(predictions=[[1, 0]], references=[[0]], num_classes=2)["acc5"] is None
    # an image of two entities is right when the top class is either
    assert classification.compute(predictions=[[1, 0, 2]], references=[[0, 1]], num_classes=3)["acc1"] == 1.0
    retrieval = metric("zeroshot_retrieval")
    found = retrieval.compute(predictions=[[2, 0, 1], [1, 2, 0]], references=[[0], [0, 1]], ks=[1, 2])
    assert found == {"recall@1": 0.5, "recall@2": 1.0}


def test_chance_is_that_of_the_rule_scored_an_image_is_right_when_the_top_class_is_any_of_its_own():
    """Chance is the mean top-1 of guessing one class for every image, over the classes: with
    images of several classes that is the mean over images of (its classes in the set) / (the
    set's size), not 1 / classes. Checked against the real metric on the |C| constant guessers."""
    import torch.nn.functional as F

    from entitynet.training.evaluation import ClassSet
    from entitynet.training.evaluation.features import ImageFeatures
    from entitynet.training.evaluation.scoring import classification

    classes = ClassSet.from_mapping({"a": ["a"], "b": ["b"], "c": ["c"], "d": ["d"]})
    labels = [("a",), ("a", "b"), ("b", "c", "x"), ("x",)]  # the last has no class of the set: not scored
    image = F.normalize(torch.ones(1, 8), dim=-1)
    features = ImageFeatures(image.repeat(len(labels), 1), labels, [()] * len(labels))
    scored = classification(features, classes, F.normalize(torch.randn(4, 8), dim=-1))
    assert scored["num_images"] == 3 and scored["chance"] == pytest.approx((1 + 2 + 2) / (3 * 4))
    guessers = []
    for guess in range(len(classes)):  # class `guess` on top for every image, the others below
        weights = -image.repeat(len(classes), 1)
        weights[guess] = image[0]
        guessers.append(classification(features, classes, weights)["metrics"]["acc1"])
    assert scored["chance"] == pytest.approx(sum(guessers) / len(guessers)) != pytest.approx(1 / len(classes))


def test_the_shipped_imagenet_split_is_what_wordnet_says(wordnet_reader):
    from entitynet.training.evaluation.classes import imagenet_classes, named_subset
    from entitynet.training.evaluation.imagenet import domains

    classes = imagenet_classes()
    assert [c.index for c in classes] == list(range(1000))
    assert [c.wnid for c in classes] == sorted(c.wnid for c in classes)
    assert [c.domain for c in classes] == domains(wordnet_reader, [c.wnid for c in classes])
    assert (len(named_subset("imagenet1k-living")), len(named_subset("imagenet1k-other"))) == (410, 590)
    by_name = {c.name: c.domain for c in classes}
    assert by_name["tench"] == by_name["scuba diver"] == by_name["bolete"] == "living"  # fish, person, fungus
    assert by_name["pickup truck"] == by_name["acorn"] == "other"  # a vehicle, a fruit (a plant part, not an organism)


def test_templates_resolve_by_name_or_file(tmp_path):
    from entitynet.training.evaluation.templates import TemplateError, resolve_templates

    assert len(resolve_templates("openai").texts) == 80 and resolve_templates("openai").texts[0] == "a bad photo of a {c}."
    assert resolve_templates("none").fill("lion") == ["lion"]
    assert resolve_templates(None, ["itap of a {c}."]).name == "dataset"
    assert resolve_templates(None).texts == ("a photo of a {c}.",)
    mine = tmp_path / "mine.txt"
    mine.write_text("a {c} in the wild\n\na photo of {c} {with braces}\n")
    assert resolve_templates(str(mine)).fill("fox") == ["a fox in the wild", "a photo of fox {with braces}"]
    with pytest.raises(TemplateError, match="neither one of"):
        resolve_templates("fancy")


def test_a_class_with_several_names_averages_each_names_normalised_template_mean(model_dir, photos):
    """The authors' rule (issue 18, item 4): per name, its prompts normalised, averaged, normalised;
    per class, the normalised mean of its names. One name stays CLIP_benchmark's embedding."""
    from entitynet.training.evaluation import ClassSet, load_model
    from entitynet.training.evaluation.features import embed_texts
    from entitynet.training.evaluation.scoring import zero_shot_classifier
    from entitynet.training.evaluation.templates import Templates

    clip = load_model(str(model_dir))
    templates = Templates("two", TEMPLATES)
    names = class_names(photos)
    classes = ClassSet.from_names([[names[0], f"{names[0]} {names[1]} {names[2]} in a long name"], [names[3]]])
    weights = zero_shot_classifier(clip.model, clip.tokenizer, classes, templates)

    def name_embedding(name: str) -> torch.Tensor:
        mean = embed_texts(clip.model, clip.tokenizer, templates.fill(name)).mean(dim=0)
        return mean / mean.norm()

    first, second = (name_embedding(name) for name in classes.names[0])
    expected = (first + second) / 2
    assert torch.allclose(weights[0], expected / expected.norm(), atol=1e-6)
    assert torch.allclose(weights[1], name_embedding(names[3]), atol=1e-6)  # one name: CLIP_benchmark's rule
    # the flat mean over names x templates is another vector: the test tells the two rules apart
    prompts = templates.fill(classes.names[0][0]) + templates.fill(classes.names[0][1])
    flat = embed_texts(clip.model, clip.tokenizer, prompts).mean(dim=0)
    assert not torch.allclose(weights[0], flat / flat.norm(), atol=1e-6)


def test_an_image_without_captions_is_a_text_retrieval_query_that_scores_zero():
    """As in CLIP_benchmark: recall@K over every image; one with no caption can find none."""
    from entitynet.training.evaluation.features import ImageFeatures
    from entitynet.training.evaluation.scoring import retrieval

    images = torch.eye(3)  # image 2 has no caption
    captions = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.9, 0.1]])
    features = ImageFeatures(images, [()] * 3, [("a",), ("b", "c"), ()])
    scores = retrieval(features, captions, [0, 1, 1], ks=(1,))
    assert scores["metrics"]["text_retrieval_recall@1"] == pytest.approx(2 / 3)
    assert scores["metrics"]["image_retrieval_recall@1"] == 1.0


def test_max_captions_keeps_the_first_captions_of_each_image(layouts):
    from entitynet.training.evaluation.inputs import DataSpec, InputError, open_input
    from entitynet.training.evaluation.suite import load_suite

    every = open_input(DataSpec(str(layouts["wds-retrieval"])))
    first = open_input(DataSpec(str(layouts["wds-retrieval"]), max_captions=1))
    assert [e.captions[:1] for e in every.read()] == [e.captions for e in first.read()]
    assert {len(e.captions) for e in every.read()} == {2} and first.key != every.key
    with pytest.raises(InputError, match="max_captions must be at least 1"):
        DataSpec("x", max_captions=0)
    paper = {task.name: task for task in load_suite("paper", []).tasks}
    assert paper["coco-retrieval"].data.max_captions == 5  # the authors' 5 captions per image
    overridden = {task.name: task for task in load_suite("paper", ["coco.max_captions=3"]).tasks}
    assert overridden["coco-retrieval"].data.max_captions == 3
