"""Evaluation of our built datasets (the trainer's entry point, map-style and streamed rows, class
sets as a parameter) and of named suites on local stand-ins of their Hub datasets: features once
per image, the summary table with the best prompt set, --skip-existing and --update-card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import datasets  # noqa: E402
from eval_data import captions_of, hf_dataset, label_of, ordered, read_json, tiny_clip, webdataset  # noqa: E402

from entitynet.cli import main  # noqa: E402

# the camera-trap photos as ImageNet-1k labels (386 African bush elephant ... 979 valley)
IMAGENET = {"african elephants": 386, "american black bear": 295, "domestic cattle": 345, "domestic dog": 208,
            "ocelot": 288, "human": 983, "vehicle": 717, "blank": 979}
LIVING_PHOTOS = 9  # all but the vehicle and the three blanks


@pytest.fixture(scope="module")
def demo_model(demo_run, tmp_path_factory) -> Path:
    rows = datasets.load_dataset(str(demo_run / "dataset"), "entitynet", split="train")
    words = [t for row in rows for t in row["alt_texts"]] + [e["name"] for row in rows for e in row["entities"]]
    return tiny_clip(tmp_path_factory.mktemp("demo-clip"), words * 3)


def load_split(demo_run: Path, split: str, streaming: bool = False):
    return datasets.load_dataset(str(demo_run / "dataset"), "entitynet", split=split, streaming=streaming)


def test_built_rows_streamed_or_map_style_give_the_same_metrics(demo_run, demo_model):
    from entitynet.training.evaluation import evaluate_built_dataset, load_model

    clip = load_model(str(demo_model))
    mapped = evaluate_built_dataset(clip.model, clip.tokenizer, clip.processor, load_split(demo_run, "train"), batch_size=5)
    streamed = evaluate_built_dataset(clip.model, clip.tokenizer, clip.processor,
                                      load_split(demo_run, "train", streaming=True), batch_size=5)
    assert mapped == streamed
    rows = list(load_split(demo_run, "train"))
    assert mapped["num_images"] == len(rows) > 20
    assert mapped["num_classes"] == len({e["id"] for row in rows for e in row["entities"]}) > 10
    assert mapped["num_texts"] == sum(len(row["alt_texts"]) for row in rows)
    for direction in ("image", "text"):
        recalls = [mapped[f"{direction}_retrieval_recall@{k}"] for k in (1, 5, 10)]
        assert 0 <= recalls[0] <= recalls[1] <= recalls[2] <= 1
    assert clip.model.training is False  # from_pretrained gives eval mode; evaluation restores it


def test_the_class_set_is_a_parameter_scored_on_one_pass_of_images(demo_run, demo_model, monkeypatch):
    """Held-out images of seen entities vs unseen ones: named class sets share the embeddings."""
    from entitynet.training.evaluation import ClassSet, entity_classes, evaluate_built_dataset, load_model

    clip = load_model(str(demo_model))
    train = load_split(demo_run, "train")
    seen = entity_classes(train.select_columns(["entities"]))
    assert len(seen) == len({e["id"] for row in train for e in row["entities"]}) > 10
    assert "the lion" in seen.names[seen.ids.index(next(i for i, n in zip(seen.ids, seen.names) if n[0] == "lion"))]
    half = seen.subset(seen.ids[:len(seen) // 2])
    calls = []
    original = transformers.CLIPModel.get_image_features

    def counting(self, *args, **kwargs):
        calls.append(len(kwargs["pixel_values"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.CLIPModel, "get_image_features", counting)
    both = evaluate_built_dataset(clip.model, clip.tokenizer, clip.processor, load_split(demo_run, "train"),
                                  classes={"seen": seen, "half": half}, retrieval_over_alt_texts=False)
    assert sum(calls) == len(train)  # every image embedded once for both class sets
    alone = evaluate_built_dataset(clip.model, clip.tokenizer, clip.processor, load_split(demo_run, "train"),
                                   classes=half, retrieval_over_alt_texts=False)
    assert both["half/acc1"] == alone["acc1"] and both["half/num_classes"] == len(seen) // 2
    assert both["half/num_images"] == alone["num_images"] < len(train)  # images of the other half are left out
    assert both["seen/num_images"] == len(train)
    with pytest.raises(ValueError, match="no image has any of the 1 classes"):
        evaluate_built_dataset(clip.model, clip.tokenizer, clip.processor, load_split(demo_run, "train"),
                               classes=ClassSet(("Q0",), (("nothing",),)))


def test_the_cli_evaluates_a_built_dataset_like_the_api(demo_run, demo_model, tmp_path, capsys):
    from entitynet.training.evaluation import evaluate_built_dataset, load_model

    assert main(["eval", "--model", str(demo_model), "--dataset", str(demo_run / "dataset"), "--split", "validation",
                 "--output", str(tmp_path / "built.json"), "--no-progress", "-q"]) == 0
    record = read_json(tmp_path / "built.json")
    clip = load_model(str(demo_model))
    expected = evaluate_built_dataset(clip.model, clip.tokenizer, clip.processor, load_split(demo_run, "validation"))
    assert record["task"] == "zeroshot_classification+zeroshot_retrieval" and record["format"] == "entitynet"
    assert record["dataset"] == "run/dataset" and record["split"] == "validation"
    assert record["metrics"] == {k: v for k, v in expected.items() if not k.startswith("num_") and k != "chance"}
    assert record["chance"] == expected["chance"]  # beside the metrics: a level to read acc1 against, not a score
    rows = list(load_split(demo_run, "validation"))
    assert (record["num_images"], record["num_classes"], record["num_texts"]) == (
        len(rows), len({e["id"] for row in rows for e in row["entities"]}), sum(len(row["alt_texts"]) for row in rows))
    # entity fields name the classes; a field entities lack is named in the error
    assert main(["eval", "--model", str(demo_model), "--dataset", str(demo_run / "dataset"), "--split", "validation",
                 "--name-format", "{name}, a type of {natural_type}", "--output", str(tmp_path / "typed.json"),
                 "--no-progress", "-q"]) == 0
    from entitynet.training.evaluation import ClassSet

    typed = ClassSet.from_entities([{"id": "Q140", "name": "lion", "aliases": ["the lion"], "natural_type": "big cat"}],
                                   "{name}, a type of {natural_type}")
    assert typed.names == (("lion, a type of big cat", "the lion, a type of big cat"),)
    capsys.readouterr()
    assert main(["eval", "--model", str(demo_model), "--dataset", str(demo_run / "dataset"), "--split", "validation",
                 "--name-format", "{name} ({kind})", "--output", str(tmp_path / "bad.json"), "--no-progress", "-q"]) == 1
    assert "'kind' is not an entity field" in capsys.readouterr().err


@pytest.fixture(scope="module")
def stand_ins(realdata, tmp_path_factory) -> dict[str, Path]:
    """Local copies, in the same formats, of the suite's Hub datasets, made of the real photos."""
    photos = sorted(p for p in (realdata / "labelled_photos" / "cameratrapai").glob("*.jpg") if "truncated" not in p.name)
    root = tmp_path_factory.mktemp("stand-ins")
    imagenet = webdataset(photos, root / "wds_imagenet1k", shards=3)
    from entitynet.training.evaluation.classes import imagenet_classes

    # relabel with ImageNet's 1000 classes: classnames.txt in label order, .cls = ImageNet indices
    (imagenet / "classnames.txt").write_text("\n".join(c.name for c in imagenet_classes()) + "\n")
    names = sorted({label_of(p) for p in photos})
    _relabel(imagenet / "test", {names.index(label): IMAGENET[label] for label in names})
    rare = root / "rare-species"
    rows = [{"image": {"bytes": p.read_bytes(), "path": p.name}, "sciName": label_of(p).title(),
             "common": f"common {label_of(p)}", "kingdom": "Animalia", "phylum": "Chordata", "class": "Mammalia",
             "order": "Order", "family": "Family", "genus": label_of(p).split()[0].title(),
             "species": label_of(p).split()[-1]} for p in ordered(photos)]
    (rare / "data").mkdir(parents=True)
    features = datasets.Features({"image": datasets.Image(), **{k: datasets.Value("string") for k in rows[0] if k != "image"}})
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(rare / "data" / "train-00000-of-00001.parquet"))
    return {"imagenet1k": imagenet, "rare-species": rare, "coco": webdataset(photos, root / "coco", retrieval=True),
            "flickr30k": webdataset(photos, root / "flickr", retrieval=True), "hf": hf_dataset(photos, root / "hf")}


def _relabel(split: Path, mapping: dict[int, int]) -> None:
    import io
    import tarfile

    for shard in sorted(split.glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
        with tarfile.open(shard, "w") as tar:
            for member, data in members:
                if member.name.endswith(".cls"):
                    data = str(mapping[int(data)]).encode()
                    member.size = len(data)
                tar.addfile(member, io.BytesIO(data))


@pytest.fixture(scope="module")
def photo_model(realdata, tmp_path_factory) -> Path:
    from entitynet.training.evaluation.classes import imagenet_classes

    photos = list((realdata / "labelled_photos" / "cameratrapai").glob("*.jpg"))
    words = [c.name for c in imagenet_classes()] + [c for p in photos for c in captions_of(p)]
    return tiny_clip(tmp_path_factory.mktemp("photo-clip"), words)


SUITE_TASKS = ("imagenet1k-all-none,imagenet1k-living-none,imagenet1k-other-none,rare-species-sci-none,"
               "rare-species-com-none,rare-species-tax-none,coco-retrieval,flickr30k-retrieval,cub-none")


def run_paper(photo_model: Path, stand_ins: dict[str, Path], out: Path, *extra: str) -> int:
    data = [arg for key in ("imagenet1k", "rare-species", "coco", "flickr30k") for arg in ("--data", f"{key}={stand_ins[key]}")]
    return main(["eval", "--model", str(photo_model), "--suite", "paper", *data, "--tasks", SUITE_TASKS,
                 "--output", str(out), "--no-progress", "-q", *extra])


def test_the_paper_suite_on_stand_ins_embeds_each_image_once_and_writes_the_table(photo_model, stand_ins, tmp_path,
                                                                                  monkeypatch, capsys):
    calls, prompts = [], []
    images, texts = transformers.CLIPModel.get_image_features, transformers.CLIPModel.get_text_features

    def counting(self, *args, **kwargs):
        calls.append(len(kwargs["pixel_values"]))
        return images(self, *args, **kwargs)

    def counting_texts(self, *args, **kwargs):
        prompts.append(len(kwargs["input_ids"]))
        return texts(self, *args, **kwargs)

    monkeypatch.setattr(transformers.CLIPModel, "get_image_features", counting)
    monkeypatch.setattr(transformers.CLIPModel, "get_text_features", counting_texts)
    card = tmp_path / "card"
    card.mkdir()
    assert run_paper(photo_model, stand_ins, tmp_path / "paper", "--update-card", str(card)) == 0
    # four sources (ImageNet, Rare Species, COCO, Flickr) of 13 photos, each embedded once for 8 tasks
    assert sum(calls) == 4 * 13
    # prompts: ImageNet's 1000 names once (living and other reuse them), 3 x 8 Rare Species names, 2 x 26 captions
    assert sum(prompts) == 1000 + 3 * 8 + 2 * 26
    out = tmp_path / "paper"
    results = {p.stem: read_json(p) for p in out.glob("*.json")}
    assert set(results) == set(SUITE_TASKS.split(",")) - {"cub-none"}
    counts = {name: (r["num_images"], r["num_classes"]) for name, r in results.items() if name.startswith("imagenet")}
    assert counts == {"imagenet1k-all-none": (13, 1000), "imagenet1k-living-none": (LIVING_PHOTOS, 410),
                      "imagenet1k-other-none": (13 - LIVING_PHOTOS, 590)}
    assert results["rare-species-sci-none"]["num_classes"] == 8 and results["rare-species-sci-none"]["split"] == "train"
    assert results["coco-retrieval"]["task"] == "zeroshot_retrieval"
    assert results["coco-retrieval"]["metrics"] == results["flickr30k-retrieval"]["metrics"]  # the same stand-in
    table = (out / "summary.md").read_text()
    assert "Best prompt set" in table and "rare-species (best: rare-species-" in table
    assert "cub-none: skipped: no dataset for 'cub'" in table
    rows = (out / "summary.csv").read_text().splitlines()
    assert sum(row.startswith("task,") for row in rows) == 8 and sum(row.startswith("best,") for row in rows) == 4
    readme = (card / "README.md").read_text()
    # filed under the suite's Hub ids (the stand-ins are its local copies), each task by its metric config
    from huggingface_hub import ModelCard

    filed = {(r.dataset_type, r.metric_config) for r in ModelCard.load(card / "README.md").data.eval_results}
    assert {("clip-benchmark/wds_imagenet1k", "imagenet1k-living-none"), ("clip-benchmark/wds_imagenet1k",
            "imagenet1k-all-none")} <= filed and "image_retrieval_recall@5" in readme

    calls.clear()
    assert run_paper(photo_model, stand_ins, tmp_path / "paper", "--skip-existing", "--update-card", str(card)) == 0
    assert calls == []  # every result was there: no image embedded again
    assert (out / "summary.md").read_text() == table
    assert (card / "README.md").read_text() == readme  # the same results replace, not repeat, the card's


def test_rare_species_label_types_name_classes_from_row_fields(photo_model, stand_ins):
    from entitynet.training.evaluation import load_model
    from entitynet.training.evaluation.features import embed_images
    from entitynet.training.evaluation.inputs import DataSpec, open_input
    from entitynet.training.evaluation.tasks import TaskSpec, task_classes

    data = DataSpec(str(stand_ins["rare-species"]), "train", label_column="sciName")
    source = open_input(data)
    clip = load_model(str(photo_model))
    features = embed_images(clip.model, clip.processor, source.read(), progress=False)
    named = {fmt: task_classes(TaskSpec("t", data, name_format=fmt), source, features)
             for fmt in ("{sciName}", "{common}", "{kingdom} {genus} {species} with common name {common}")}
    assert named["{common}"].ids == named["{sciName}"].ids == tuple(sorted(label.title() for label in IMAGENET))
    assert named["{common}"].names[0] == ("common african elephants",)
    assert named["{kingdom} {genus} {species} with common name {common}"].names[0] == (
        "Animalia African elephants with common name common african elephants",)
    from entitynet.training.evaluation.tasks import TaskError

    with pytest.raises(TaskError, match="'subspecies' is not a field"):
        task_classes(TaskSpec("t", data, name_format="{subspecies}"), source, features)


def test_a_suite_file_with_unknown_keys_or_data_is_refused(tmp_path, photo_model, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  x: {dataset: a/b}\ntasks:\n  - {name: t, data: x, prompt: none}\n")
    assert main(["eval", "--model", str(photo_model), "--suite", str(bad), "-q"]) == 2
    assert "tasks[0]: unknown keys prompt" in capsys.readouterr().err
    assert main(["eval", "--model", str(photo_model), "--suite", "paper", "--data", "imagenet=x", "-q"]) == 2
    assert "the suite has no data 'imagenet'" in capsys.readouterr().err


def test_shipped_suites_load_and_name_only_known_subsets_and_templates():
    from entitynet.training.evaluation.classes import named_subset
    from entitynet.training.evaluation.suite import load_suite, shipped_suites
    from entitynet.training.evaluation.templates import resolve_templates

    assert "paper" in shipped_suites()
    for name in shipped_suites():
        suite = load_suite(name, [])
        for task in suite.tasks:
            resolve_templates(task.templates, ["{c}"])
            if task.classes:
                assert named_subset(task.classes)
    paper = load_suite("paper", [])
    assert len(paper.tasks) + len(paper.unavailable) == 24
    assert sorted(paper.unavailable) == ["cub-none", "cub-openai", "inat21-common-none", "inat21-common-openai",
                                         "inat21-latin-none", "inat21-latin-openai"]
    assert json.dumps([t.data.dataset for t in paper.tasks if t.data.dataset.startswith("clip-benchmark")]).count("wds_") == 8


@pytest.mark.slow
def test_two_processes_evaluate_like_one(demo_run, demo_model, tmp_path):
    """Under Accelerate each process embeds every other image; gathered back in input order, the
    metrics are those of one process, and every process has them."""
    import subprocess
    import sys

    from entitynet.training.evaluation import evaluate_built_dataset, load_model

    out = tmp_path / "metrics.json"
    command = [sys.executable, str(Path(__file__).with_name("evaluation_cases.py")), "built", str(demo_model),
               str(demo_run / "dataset"), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    ranks = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in (0, 1)]
    clip = load_model(str(demo_model))
    single = evaluate_built_dataset(clip.model, clip.tokenizer, clip.processor, load_split(demo_run, "train"), batch_size=5)
    assert ranks[0] == ranks[1]
    assert ranks[0] == pytest.approx(single, abs=1e-9)


def test_the_demos_trained_model_is_evaluated_and_its_card_keeps_the_trainers_results(demo_run, tmp_path):
    """Our trainer's OUTPUT/model as it is: evaluation loads it, and --update-card adds to the
    model-index the trainer wrote, keeping the card's text and the trainer's results."""
    import shutil

    from huggingface_hub import ModelCard

    model = tmp_path / "model"
    shutil.copytree(demo_run / "model", model)
    before = ModelCard.load(model / "README.md")
    trainer_results = len(before.data.eval_results or [])
    assert main(["eval", "--model", str(model), "--dataset", str(demo_run / "dataset"), "--split", "validation",
                 "--output", str(tmp_path / "eval" / "validation.json"), "--update-card", str(model),
                 "--no-progress", "-q"]) == 0
    after = ModelCard.load(model / "README.md")
    ours = [r for r in after.data.eval_results if r.dataset_split == "validation"]
    # the demo's sample graph gives its taxa ranks: acc1 at every rank its classes reach comes too
    from entitynet.builders.entitynet import RANK_METRICS

    names = {r.metric_name for r in ours}
    assert names - set(RANK_METRICS) == {"acc1", "acc5", "mean_per_class_recall", *(
        f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5, 10))}
    assert {"acc1_genus", "acc1_family"} <= names
    assert len(after.data.eval_results) == trainer_results + len(ours)
    # the text is kept, but for the results table, which gains the new row
    table = "<!-- end of entitynet results -->"
    assert after.text.split(table)[1] == before.text.split(table)[1]
    assert after.text.split("<!-- entitynet results")[0] == before.text.split("<!-- entitynet results")[0]
    assert "| validation |" in after.text and "| validation |" not in before.text
