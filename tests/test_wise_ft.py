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
