"""WiSE-FT (``entitynet wise-ft``): exact interpolation at alpha 0, 0.5 and 1, folders that
CLIPModel and the zero-shot pipeline load, the refusals, and the suite's table across alphas."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from eval_data import tiny_clip  # noqa: E402

from entitynet.cli import main  # noqa: E402
from entitynet.training.wise_ft import WiseFTError, interpolate, parse_alphas  # noqa: E402

WORDS = ["lion", "leopard", "osprey", "a photo of a", "red", "blue"] * 3


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny CLIPs with one tokenizer and different weights (seeds): a 'zero-shot' and a 'finetuned'."""
    root = tmp_path_factory.mktemp("wise")
    return tiny_clip(root / "a", WORDS, seed=0), tiny_clip(root / "b", WORDS, seed=1)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return transformers.CLIPModel.from_pretrained(folder).state_dict()


def test_interpolation_is_exact_at_the_ends_and_the_mean_halfway(pair, tmp_path, capsys):
    a, b = pair
    out = tmp_path / "wise"
    assert main(["wise-ft", "--zero-shot", str(a), "--finetuned", str(b), "--alphas", "0,0.5,1", "--out", str(out)]) == 0
    wa, wb = weights(a), weights(b)
    w0, w_half, w1 = (weights(out / name) for name in ("alpha-0", "alpha-0.5", "alpha-1"))
    floats = [name for name, tensor in wb.items() if tensor.is_floating_point()]
    assert "logit_scale" in floats and "text_model.embeddings.token_embedding.weight" in floats
    assert any(not torch.equal(wa[name], wb[name]) for name in floats)  # the two models differ
    for name in wb:
        assert torch.equal(w0[name], wa[name]), name
        assert torch.equal(w1[name], wb[name]), name
        if wb[name].is_floating_point():
            assert torch.allclose(w_half[name], (wa[name] + wb[name]) / 2, atol=1e-7, rtol=0), name
        else:
            assert torch.equal(w_half[name], wb[name]), name
    manifest = json.loads((out / "wise_ft.json").read_text())
    assert manifest["models"] == {"alpha-0": 0.0, "alpha-0.5": 0.5, "alpha-1": 1.0}
    assert "alpha 0.5: " in capsys.readouterr().out


def test_each_folder_loads_in_clipmodel_and_the_zero_shot_pipeline(pair, tmp_path):
    from PIL import Image

    a, b = pair
    out = tmp_path / "wise"
    assert main(["wise-ft", "--zero-shot", str(a), "--finetuned", str(b), "--alphas", "0.25", "--out", str(out)]) == 0
    folder = out / "alpha-0.25"
    transformers.CLIPModel.from_pretrained(folder)
    classify = transformers.pipeline("zero-shot-image-classification", model=str(folder))
    scores = classify(Image.new("RGB", (80, 60), (200, 30, 30)), candidate_labels=["lion", "osprey"])
    assert sorted(s["label"] for s in scores) == ["lion", "osprey"]
    assert sum(s["score"] for s in scores) == pytest.approx(1.0, abs=1e-4)


def test_the_function_interpolates_half_precision_in_float32():
    a = {"w": torch.tensor([1.0, 2.0], dtype=torch.float16), "ids": torch.arange(2)}
    b = {"w": torch.tensor([3.0, 6.0], dtype=torch.float16), "ids": torch.arange(2)}
    mixed = interpolate(a, b, 0.25)
    assert mixed["w"].dtype == torch.float16 and mixed["w"].tolist() == [1.5, 3.0]
    assert torch.equal(mixed["ids"], b["ids"])


@pytest.mark.parametrize("alphas, message", [("0,1.5", "1.5 is outside [0, 1]"), ("-0.1", "-0.1 is outside"),
                                             ("0,x", "'x' is not a number"), ("0.5,0.5", "0.5 is given twice"),
                                             ("nan", "outside")])
def test_alphas_outside_zero_one_are_refused(alphas, message, pair, tmp_path, capsys):
    with pytest.raises(WiseFTError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_alphas(alphas)
    a, b = pair
    assert main(["wise-ft", "--zero-shot", str(a), "--finetuned", str(b), "--alphas", alphas,
                 "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_models_whose_shapes_or_tokenizers_differ_are_refused(pair, tmp_path, capsys):
    a, b = pair
    other_tokens = tiny_clip(tmp_path / "tok", ["zebra", "giraffe", "a drawing of"] * 3, seed=1)
    assert main(["wise-ft", "--zero-shot", str(a), "--finetuned", str(other_tokens), "--out", str(tmp_path / "o1")]) == 1
    err = capsys.readouterr().err
    assert "cannot be interpolated" in err and "tokenizers: vocabularies differ" in err
    assert not (tmp_path / "o1").exists()

    wider = tmp_path / "wider"  # the same tokenizer, a projection of 16 instead of 32
    shutil.copytree(b, wider)
    config = transformers.CLIPConfig.from_pretrained(b)
    config.projection_dim = 16
    transformers.CLIPModel(config).save_pretrained(wider)
    assert main(["wise-ft", "--zero-shot", str(a), "--finetuned", str(wider), "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert "text_projection.weight: shape (32, 64) vs (16, 64)" in err
    assert not (tmp_path / "o2").exists()


def test_an_out_it_did_not_write_is_refused_and_its_own_needs_force(pair, tmp_path, capsys):
    a, b = pair
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    args = ["wise-ft", "--zero-shot", str(a), "--finetuned", str(b), "--alphas", "0.5"]
    assert main([*args, "--out", str(foreign), "--force"]) == 2
    assert "not empty and not written by entitynet wise-ft (notes.txt)" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"

    inside = b / "wise"
    assert main([*args, "--out", str(inside)]) == 2
    assert "lies inside the input" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*args, "--out", str(empty)]) == 0
    assert main([*args, "--out", str(empty)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main([*args[:-1], "1", "--out", str(empty), "--force"]) == 0
    assert sorted(p.name for p in empty.iterdir()) == ["alpha-1", "wise_ft.json"]
    assert not list(tmp_path.glob(".*partial*"))


def test_a_suite_gives_a_table_of_scores_across_alphas(pair, tmp_path, capsys):
    from PIL import Image

    a, b = pair
    images = tmp_path / "images"
    for label, colour in (("lion", (200, 160, 40)), ("osprey", (40, 60, 200))):
        (images / label).mkdir(parents=True)
        for n in range(2):
            Image.new("RGB", (64, 64), colour).save(images / label / f"{n}.png")
    suite = tmp_path / "toy.yaml"
    suite.write_text("data:\n  toy: {dataset: null, format: imagefolder}\n"
                     "tasks:\n  - {name: toy-simple, data: toy, templates: simple}\n")
    out = tmp_path / "wise"
    assert main(["wise-ft", "--zero-shot", str(a), "--finetuned", str(b), "--alphas", "0,0.5,1", "--out", str(out),
                 "--suite", str(suite), "--data", f"toy={images}", "--cpu", "--batch-size", "4"]) == 0
    table = json.loads((out / "scores.json").read_text())
    assert table["alphas"] == [0.0, 0.5, 1.0]
    acc1 = table["tasks"]["toy-simple"]["acc1"]
    assert len(acc1) == 3 and all(0.0 <= value <= 1.0 for value in acc1)
    for alpha, name in zip(table["alphas"], ("alpha-0", "alpha-0.5", "alpha-1")):
        record = json.loads((out / "eval" / name / "toy-simple.json").read_text())
        assert record["metrics"]["acc1"] == table["tasks"]["toy-simple"]["acc1"][table["alphas"].index(alpha)]
    lines = (out / "scores.csv").read_text().splitlines()
    assert lines[0].startswith("alpha,toy-simple:acc1") and [line.split(",")[0] for line in lines[1:]] == ["0", "0.5", "1"]
    printed = capsys.readouterr().out
    assert "scores: " in printed
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no figure: matplotlib is not installed" in printed and not (out / "scores.png").exists()
    else:
        assert (out / "scores.png").stat().st_size > 0


# ---- the trainer's wise_ft.alphas: WiSE-FT at the end of a finetune ----

from test_streaming import CARD  # noqa: E402  (our layout with a train and a test split)


def flat_dataset(folder: Path) -> Path:
    """A dataset in our Hub layout: 3 entities, a flat colour each; 8 train and 2 test pictures per entity."""
    import io

    import datasets
    from PIL import Image

    from entitynet.builders.entitynet import FEATURES

    def row(number: int, name: str, colour: tuple[int, int, int], n: int) -> dict:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), tuple((c + 7 * n) % 256 for c in colour)).save(buffer, "JPEG")
        entity = {"id": f"Q{number + 1}", "name": name, "aliases": [], "description": None,
                  "natural_type": "animal", "domain": "living", "common_names": [], "taxon_name": None,
                  "natural_type_aliases": [], "natural_type_description": None, "lineage": []}
        return {"image": {"bytes": buffer.getvalue(), "path": None}, "image_id": f"{name}-{n}", "width": 64,
                "height": 64, "alt_texts": [f"a photo of a {name}"],
                "queries": [{"text": name, "kind": "noun", "entity_id": entity["id"], "attribute": None}],
                "entities": [entity], "urls": [], "page_urls": [], "engines": [], "license": None,
                "attribution": None, "domain": "living"}

    entities = (("lion", (200, 160, 40)), ("leopard", (120, 90, 20)), ("osprey", (40, 60, 200)))
    (folder / "data" / "living").mkdir(parents=True)
    (folder / "README.md").write_text(CARD)
    for split, numbers in (("train", range(8)), ("test", range(8, 10))):
        rows = [row(number, name, colour, n) for number, (name, colour) in enumerate(entities) for n in numbers]
        datasets.Dataset.from_list(rows, features=FEATURES).to_parquet(
            folder / "data" / "living" / f"{split}-00000-of-00001.parquet")
    return folder


def finetune_config(dataset: Path, init_from: Path, out: Path, *extra: str):
    from entitynet.training.config import load_train_config

    return load_train_config("tiny", [f"dataset={dataset}", f"output_dir={out}", f"model.init_from={init_from}",
                                      "max_steps=3", "batch_size=4", "log_every=1", "checkpoint_every=3",
                                      "streaming=true", "eval.split=test", *extra])


def test_a_finetune_with_wise_ft_alphas_writes_and_evaluates_each_interpolation(pair, tmp_path):
    """alpha 0 is the model finetuned from, 1 the finetune, 0.5 loads in the pipeline; each is scored
    on eval.split as the final evaluation is. The finetune's context length (16) is not the
    model's (32): its own choice, not a reason to refuse."""
    from PIL import Image

    from entitynet.training import train as trainer

    a, _ = pair
    dataset = flat_dataset(tmp_path / "dataset")
    out = tmp_path / "out"
    result = trainer.train(finetune_config(dataset, a, out, "model.context_length=16", "wise_ft.alphas=[0, 0.5, 1]"))
    wise = out / "wise-ft"
    assert sorted(p.name for p in wise.glob("alpha-*")) == ["alpha-0", "alpha-0.5", "alpha-1"]
    finetuned = weights(out / "model")
    assert any(not torch.equal(finetuned[name], weights(a)[name]) for name in finetuned)  # it trained
    for name, tensor in weights(wise / "alpha-0").items():
        assert torch.equal(tensor, weights(a)[name]), name
    for name, tensor in weights(wise / "alpha-1").items():
        assert torch.equal(tensor, finetuned[name]), name
    classify = transformers.pipeline("zero-shot-image-classification", model=str(wise / "alpha-0.5"))
    assert len(classify(Image.new("RGB", (64, 64), (200, 160, 40)), candidate_labels=["lion", "osprey"])) == 2

    assert set(result["wise_ft"]) == {0.0, 0.5, 1.0}
    assert result["wise_ft"][1.0]["acc1"] == result["metrics"]["acc1"]  # alpha 1 is the finetune, scored alike
    assert all(metrics["num_classes"] == 3 and metrics["num_images"] == 6 for metrics in result["wise_ft"].values())
    table = json.loads((wise / "scores.json").read_text())
    assert table["alphas"] == [0.0, 0.5, 1.0]
    assert table["tasks"]["test"]["acc1"] == [result["wise_ft"][alpha]["acc1"] for alpha in (0.0, 0.5, 1.0)]
    assert "test:acc1" in (wise / "scores.csv").read_text().splitlines()[0]
    assert json.loads((wise / "wise_ft.json").read_text())["zero_shot"] == str(a)

    # the same run again without alphas: the interpolations of the model it replaced go
    shutil.rmtree(out / "checkpoints")
    trainer.train(finetune_config(dataset, a, out))
    assert not wise.exists()


def test_wise_ft_alphas_are_refused_without_a_model_to_finetune_and_outside_zero_one(pair, tmp_path):
    from entitynet.config import load_config
    from entitynet.training.config import load_train_config
    from entitynet.typed_config import ConfigError

    with pytest.raises(ConfigError, match=r"wise_ft.alphas: WiSE-FT interpolates .* set model.init_from"):
        load_train_config("tiny", ["dataset=d", "output_dir=o", "wise_ft.alphas=[0.5]"])
    with pytest.raises(ConfigError, match=r"wise_ft.alphas: 1.5 is outside \[0, 1\]"):
        load_train_config("tiny", ["dataset=d", "output_dir=o", f"model.init_from={pair[0]}", "wise_ft.alphas=[1.5]"])
    with pytest.raises(ConfigError, match="train.wise_ft.alphas: WiSE-FT interpolates"):
        load_config("demo", assignments=["train.wise_ft.alphas=[0.5]"])
    # entitynet run's spelling: --set train.wise_ft.alphas=[0.25,0.5]
    config = load_config("demo", assignments=[f"train.model.init_from={pair[0]}", "train.wise_ft.alphas=[0.25,0.5]"])
    assert config.train.wise_ft.alphas == [0.25, 0.5]


def test_a_wise_ft_folder_the_trainer_did_not_write_stops_it_before_training(pair, tmp_path):
    from entitynet.training import train as trainer
    from entitynet.typed_config import ConfigError

    out = tmp_path / "out"
    (out / "wise-ft").mkdir(parents=True)
    (out / "wise-ft" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"wise_ft.alphas: OUT .*wise-ft is not empty and not written by"):
        trainer.train(finetune_config(tmp_path / "no-dataset-needed", pair[0], out, "wise_ft.alphas=[0.5]"))
    assert (out / "wise-ft" / "notes.txt").read_text() == "mine" and not (out / "checkpoints").exists()

    # finetuning an earlier run's ensemble into that run's folder would replace the model it starts from
    earlier = tmp_path / "earlier"
    (earlier / "wise-ft").mkdir(parents=True)
    (earlier / "wise-ft" / "wise_ft.json").write_text("{}")
    shutil.copytree(pair[0], earlier / "wise-ft" / "alpha-0.5")
    with pytest.raises(ConfigError, match=r"wise_ft.alphas: OUT .*wise-ft holds the input"):
        trainer.train(finetune_config(tmp_path / "no-dataset-needed", earlier / "wise-ft" / "alpha-0.5", earlier,
                                      "wise_ft.alphas=[0.5]"))
    assert (earlier / "wise-ft" / "alpha-0.5" / "config.json").is_file()
