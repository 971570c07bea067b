"""`entitynet convert`: CLIP's BPE with open_clip's ids, the key map, refusals, the CLI and load_clip.

No open_clip here: tiny models are written in open_clip's Hub layout from its definition (the key
names and shapes of ``open_clip.CLIP``), and the ids expected of the tokenizer were recorded from
open_clip 3.3.0's ``get_tokenizer('ViT-B-32', context_length=32)``. The comparison with the real
open_clip is ``tests/test_open_clip_parity.py`` and ``benchmarks/open_clip_parity.py``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from entitynet.cli import main  # noqa: E402
from entitynet.training.convert import (  # noqa: E402
    ConversionError,
    clip_tokenizer,
    convert_open_clip,
    convert_to_open_clip,
    load_clip,
)
from entitynet.training.convert.keymap import key_table, to_open_clip, to_transformers  # noqa: E402

TINY = {"embed_dim": 24, "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2}}
PREPROCESS = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bilinear", "resize_mode": "shortest"}

# open_clip 3.3.0, get_tokenizer('ViT-B-32', context_length=32): ids up to the end token
OPEN_CLIP_IDS = {
    "a photo of a cat.": [49406, 320, 1125, 539, 320, 2368, 269, 49407],
    "It&#39;s Tom &amp; Jerry": [49406, 585, 568, 2435, 261, 9164, 49407],
    "don\u2019t \u201ccurly\u201d \u2018single\u2019": [49406, 847, 713, 257, 20795, 257, 568, 17005, 262, 49407],
    "\ufb01ne \ufb02ower": [49406, 3797, 4055, 49407],
    "  Tabs\tand\nNEW  lines ": [49406, 29163, 537, 686, 3418, 49407],
    "\u039f\u0394\u039f\u03a3": [49406, 138, 123, 138, 112, 138, 123, 139, 480, 49407],
    "\x00ctrl\x07chars\x1b[31mred\x1b[0m": [49406, 35602, 75, 1054, 82, 736, 49407],
    "hello!! what??": [49406, 3306, 748, 768, 2197, 49407],
    "&amp;quot;double&amp;quot;": [49406, 257, 3200, 257, 49407],
    "caf&eacute; &#8217;s &#x2019;": [49406, 15304, 568, 262, 49407],
}


def open_clip_state(cfg: dict, seed: int = 0, text_prefix: str = "") -> dict[str, torch.Tensor]:
    """Random weights with open_clip.CLIP's key names and shapes (every weight non-trivial)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, around: float = 0.0) -> torch.Tensor:
        return around + 0.05 * torch.randn(*shape, generator=g)

    v, t, d = cfg["vision_cfg"], cfg["text_cfg"], cfg["embed_dim"]
    vw, tw, grid = v["width"], t["width"], v["image_size"] // v["patch_size"]
    s = {"logit_scale": torch.tensor(4.6052), "visual.class_embedding": r(vw), "visual.positional_embedding": r(grid * grid + 1, vw),
         "visual.conv1.weight": r(vw, 3, v["patch_size"], v["patch_size"]), "visual.proj": r(vw, d),
         f"{text_prefix}token_embedding.weight": r(49408, tw), f"{text_prefix}positional_embedding": r(t["context_length"], tw),
         f"{text_prefix}text_projection": r(tw, d)}
    for name, width in (("visual.ln_pre", vw), ("visual.ln_post", vw), (f"{text_prefix}ln_final", tw)):
        s[f"{name}.weight"], s[f"{name}.bias"] = r(width, around=1.0), r(width)
    for prefix, width, layers in (("visual.transformer", vw, v["layers"]), (f"{text_prefix}transformer", tw, t["layers"])):
        for i in range(layers):
            b = f"{prefix}.resblocks.{i}."
            for ln in ("ln_1", "ln_2"):
                s[f"{b}{ln}.weight"], s[f"{b}{ln}.bias"] = r(width, around=1.0), r(width)
            s[f"{b}attn.in_proj_weight"], s[f"{b}attn.in_proj_bias"] = r(3 * width, width), r(3 * width)
            s[f"{b}attn.out_proj.weight"], s[f"{b}attn.out_proj.bias"] = r(width, width), r(width)
            s[f"{b}mlp.c_fc.weight"], s[f"{b}mlp.c_fc.bias"] = r(4 * width, width), r(4 * width)
            s[f"{b}mlp.c_proj.weight"], s[f"{b}mlp.c_proj.bias"] = r(width, 4 * width), r(width)
    return s


def write_open_clip(folder: Path, cfg: dict = TINY, preprocess: dict | None = None, state: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess or PREPROCESS}))
    save_file(state if state is not None else open_clip_state(cfg), str(folder / "open_clip_model.safetensors"))
    return folder


def picture(width: int = 50, height: int = 40) -> Image.Image:
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return Image.fromarray(torch.stack([x * 5, y * 6, (x + y) % 256], -1).to(torch.uint8).numpy(), "RGB")


# --- the tokenizer ---------------------------------------------------------------------------

def test_the_tokenizer_gives_open_clips_ids_including_its_text_cleaning():
    tokenizer = clip_tokenizer(32)
    assert len(tokenizer) == 49408
    for text, ids in OPEN_CLIP_IDS.items():
        assert tokenizer(text).input_ids == ids, text


def test_the_tokenizer_truncates_and_pads_at_the_context_length_keeping_the_end_token_last():
    tokenizer = clip_tokenizer(32)
    batch = tokenizer([" ".join(["lion"] * 40), "a photo of a cat."], padding="max_length", truncation=True)
    long, short = batch.input_ids
    assert len(long) == 32 and long[:3] == [49406, 5567, 5567] and long[-2:] == [5567, 49407]  # as open_clip
    assert short == OPEN_CLIP_IDS["a photo of a cat."] + [49407] * 24  # padded with the end token
    assert batch.attention_mask[1] == [1] * 8 + [0] * 24


def test_the_saved_tokenizer_loads_back_with_autotokenizer_and_keeps_ids(tmp_path):
    clip_tokenizer(32).save_pretrained(tmp_path)
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.model_max_length == 32 and (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (49406, 49407, 49407)
    for text, ids in OPEN_CLIP_IDS.items():
        assert loaded(text).input_ids == ids, text
    assert loaded.decode(loaded("A Photo of a CAT.").input_ids, skip_special_tokens=True) == "a photo of a cat ."


# --- the key map ------------------------------------------------------------------------------

def test_the_key_map_splits_in_proj_transposes_projections_and_round_trips_exactly():
    state = open_clip_state(TINY)
    rows = key_table(2, 2)
    hf = to_transformers(state, rows)
    width = TINY["vision_cfg"]["width"]
    in_proj = state["visual.transformer.resblocks.1.attn.in_proj_weight"]
    layer = "vision_model.encoder.layers.1.self_attn"
    assert torch.equal(hf[f"{layer}.q_proj.weight"], in_proj[:width])
    assert torch.equal(hf[f"{layer}.k_proj.weight"], in_proj[width:2 * width])
    assert torch.equal(hf[f"{layer}.v_proj.weight"], in_proj[2 * width:])
    assert torch.equal(hf["visual_projection.weight"], state["visual.proj"].t())
    assert torch.equal(hf["text_projection.weight"], state["text_projection"].t())
    assert hf["logit_scale"].shape == ()
    back = to_open_clip(hf, rows)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


def test_the_key_map_names_weights_it_cannot_place_and_weights_that_are_missing():
    state = open_clip_state(TINY)
    with pytest.raises(ConversionError, match=r"not placed by the key map visual\.attnpool\.q_proj"):
        to_transformers({**state, "visual.attnpool.q_proj": torch.zeros(1)}, key_table(2, 2))
    with pytest.raises(ConversionError, match=r"missing transformer\.resblocks\.2\."):
        to_transformers(state, key_table(2, 3))


# --- open_clip -> CLIPModel -------------------------------------------------------------------

def test_an_open_clip_folder_converts_into_a_folder_transformers_loads_offline(tmp_path):
    source = write_open_clip(tmp_path / "tiny-open-clip")
    out = tmp_path / "converted"
    assert main(["convert", "open-clip", str(source), str(out), "-q"]) == 0
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    model = transformers.CLIPModel.from_pretrained(out)
    text, vision = model.config.text_config, model.config.vision_config
    assert (text.hidden_act, vision.hidden_act) == ("quick_gelu", "quick_gelu")
    assert (text.max_position_embeddings, text.eos_token_id, vision.num_attention_heads, vision.image_size) == (12, 49407, 2, 32)
    processor = transformers.CLIPProcessor.from_pretrained(out)
    image_processor = processor.image_processor
    assert (list(image_processor.image_mean), list(image_processor.image_std)) == (PREPROCESS["mean"], PREPROCESS["std"])
    assert image_processor.resample == 2 and image_processor.crop_size == {"height": 32, "width": 32}
    assert processor.tokenizer("a photo of a cat.").input_ids == OPEN_CLIP_IDS["a photo of a cat."]
    classify = transformers.pipeline("zero-shot-image-classification", model=str(out))
    scores = classify(picture(), candidate_labels=["lion", "tiger"])
    assert {score["label"] for score in scores} == {"lion", "tiger"} and abs(sum(s["score"] for s in scores) - 1) < 1e-5
    card = (out / "README.md").read_text()
    assert "tiny-open-clip" in card and "pipeline_tag: zero-shot-image-classification" in card


def test_converted_embeddings_equal_open_clips_arithmetic_on_the_source_weights(tmp_path):
    from entitynet.training.convert.reference import OpenClipReference

    state = open_clip_state(TINY, seed=3)
    result = convert_open_clip(str(write_open_clip(tmp_path / "oc", state=state)), tmp_path / "hf")
    assert result.max_abs_diff <= 1e-5
    model = transformers.CLIPModel.from_pretrained(tmp_path / "hf")
    ids = torch.tensor([OPEN_CLIP_IDS["a photo of a cat."] + [0] * 4])  # open_clip pads with 0
    reference = OpenClipReference(state, TINY, "")
    with torch.no_grad():
        ours = model.get_text_features(input_ids=torch.where(ids == 0, 49407, ids)).pooler_output
    assert (torch.nn.functional.normalize(ours, dim=-1) - reference.text_embeddings(ids)).abs().max() < 1e-5
    # pooling follows the end token, not the last position: a different text gives a different embedding
    other = reference.text_embeddings(torch.tensor([OPEN_CLIP_IDS["hello!! what??"] + [0] * 6]))
    assert (other - reference.text_embeddings(ids)).abs().max() > 1e-3


def test_a_custom_text_model_gelu_and_squash_preprocessing_convert_too(tmp_path):
    cfg = {**TINY, "quick_gelu": False, "custom_text": True,
           "vision_cfg": {**TINY["vision_cfg"], "norm_kwargs": {"eps": 1e-6}}}
    source = write_open_clip(tmp_path / "oc", cfg, {"resize_mode": "squash"}, open_clip_state(cfg, text_prefix="text."))
    result = convert_open_clip(str(source), tmp_path / "hf")
    assert result.activation == "gelu" and result.max_abs_diff <= 1e-5
    model = transformers.CLIPModel.from_pretrained(tmp_path / "hf")
    assert model.config.vision_config.layer_norm_eps == 1e-6
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path / "hf")
    assert processor.do_center_crop is False and processor.size == {"height": 32, "width": 32}
    assert list(processor.image_mean) == [0.48145466, 0.4578275, 0.40821073]  # open_clip's default


def test_the_context_length_comes_from_the_weights_when_the_config_disagrees(tmp_path, caplog):
    cfg = {**TINY, "text_cfg": {**TINY["text_cfg"], "context_length": 77}}
    source = write_open_clip(tmp_path / "oc", cfg, state=open_clip_state(TINY))  # 12 position embeddings
    with caplog.at_level("WARNING"):
        assert convert_open_clip(str(source), tmp_path / "hf").context_length == 12
    assert "context_length 77" in caplog.text
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "hf").model_max_length == 12


def test_a_training_checkpoint_converts_with_its_model_name(tmp_path):
    state = open_clip_state(TINY, seed=5)
    checkpoint = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.001}]}}, checkpoint)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    assert main(["convert", "open-clip", str(checkpoint), str(tmp_path / "hf"), "--model-name", str(config), "-q"]) == 0
    model = transformers.CLIPModel.from_pretrained(tmp_path / "hf")
    assert torch.equal(model.visual_projection.weight, state["visual.proj"].t())
    assert "epoch_3.pt" in (tmp_path / "hf" / "README.md").read_text()


def test_builtin_model_names_give_the_architecture_of_a_checkpoint():
    from entitynet.training.convert.open_clip_files import model_config

    cfg, _ = model_config("ViT-B-32-quickgelu")
    assert cfg["quick_gelu"] is True and cfg["vision_cfg"] == {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32}
    with pytest.raises(ConversionError, match="unknown open_clip model name 'ViT-Q-99'.*ViT-B-32"):
        model_config("ViT-Q-99")


@pytest.mark.parametrize(("change", "named"), [
    ({"vision_cfg": {"layers": [3, 4, 6, 3], "width": 64}}, r"vision_cfg\.layers=\[3, 4, 6, 3\].*ModifiedResNet"),
    ({"vision_cfg": {**TINY["vision_cfg"], "timm_model_name": "convnext_base"}}, r"vision_cfg\.timm_model_name='convnext_base'"),
    ({"text_cfg": {**TINY["text_cfg"], "hf_model_name": "xlm-roberta-base"}}, r"text_cfg\.hf_model_name='xlm-roberta-base'"),
    ({"vision_cfg": {**TINY["vision_cfg"], "ls_init_value": 1e-5}}, r"vision_cfg\.ls_init_value=1e-05 \(layer scale\)"),
    ({"init_logit_bias": -10}, r"init_logit_bias=-10 \(a logit bias"),
    ({"multimodal_cfg": {"width": 32}}, r"multimodal_cfg=.*CoCa"),
    ({"text_cfg": {**TINY["text_cfg"], "pool_type": "last"}}, r"text_cfg\.pool_type='last'"),
    ({"vision_cfg": {**TINY["vision_cfg"], "qk_norm": True}}, r"vision_cfg\.qk_norm=True \(a custom attention block\)"),
    ({"vision_cfg": {**TINY["vision_cfg"], "image_size": [32, 48]}}, r"image_size=\[32, 48\].*square"),
])
def test_architectures_the_key_map_cannot_express_are_refused_by_name(tmp_path, capsys, change, named):
    source = write_open_clip(tmp_path / "oc", {**TINY, **change}, state=open_clip_state(TINY))
    out = tmp_path / "hf"
    assert main(["convert", "open-clip", str(source), str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("entitynet convert: error: unsupported open_clip") and "Traceback" not in err
    import re
    assert re.search(named, err), err
    assert not out.exists() and not list(tmp_path.glob(".hf.partial-*"))


def test_bad_sources_fail_with_one_clear_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    corrupt = write_open_clip(tmp_path / "corrupt")
    (corrupt / "open_clip_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    pickled = tmp_path / "epoch_1.pt"
    torch.save({"state_dict": open_clip_state(TINY), "args": argparse_namespace()}, pickled)
    cases = [
        ([str(tmp_path / "empty")], "empty is not an open_clip model folder: it needs open_clip_config.json"),
        ([str(corrupt)], "open_clip_model.safetensors is not a readable safetensors file"),
        ([str(pickled)], "epoch_1.pt is a checkpoint file: name its architecture with --model-name"),
        ([str(pickled), "--model-name", "ViT-B-32"], "torch.load(weights_only=True) refused it"),
        ([str(tmp_path / "nowhere" / "x")], "no such folder or file, and not a Hub repo id"),
    ]
    for arguments, message in cases:
        assert main(["convert", "open-clip", *arguments[:1], str(out), *arguments[1:], "-q"]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert not out.exists()


def argparse_namespace():
    import argparse

    return argparse.Namespace(lr=0.1)  # what open_clip's trainer may pickle beside the weights


def test_an_existing_out_is_kept_unless_force(tmp_path, capsys):
    source = write_open_clip(tmp_path / "oc")
    out = tmp_path / "hf"
    assert main(["convert", "open-clip", str(source), str(out), "-q"]) == 0
    written = sorted(path.name for path in out.iterdir())
    assert main(["convert", "open-clip", str(source), str(out), "-q"]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["convert", "open-clip", str(source), str(out), "--force", "-q"]) == 0  # the converter's own files
    assert sorted(path.name for path in out.iterdir()) == written


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_force_never_removes_files_the_converter_did_not_write(tmp_path, capsys):
    """issue 17, item 11: --force replaces a folder of converter output, nothing else."""
    source = write_open_clip(tmp_path / "oc")
    out = tmp_path / "hf"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    (out / "notes").mkdir()
    before = snapshot(out)
    assert main(["convert", "open-clip", str(source), str(out), "--force", "-q"]) == 1
    err = capsys.readouterr().err
    assert "mine.txt" in err and "notes" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert snapshot(out) == before and (out / "notes").is_dir()
    hf, oc = tmp_path / "hf2", tmp_path / "oc-out"
    convert_open_clip(str(source), hf)
    convert_to_open_clip(hf, oc)
    convert_to_open_clip(hf, oc, force=True)  # its own output is replaced
    (oc / "eval_results.json").write_text("{}")
    with pytest.raises(ConversionError, match="eval_results.json"):
        convert_to_open_clip(hf, oc, force=True)
    assert (oc / "eval_results.json").exists() and (oc / "open_clip_model.safetensors").exists()
    # the other direction's output is not what to-open-clip writes: a transformers model is never replaced by it
    convert_open_clip(str(source), tmp_path / "hf3")
    with pytest.raises(ConversionError, match="config.json"):
        convert_to_open_clip(hf, tmp_path / "hf3", force=True)
    assert (tmp_path / "hf3" / "model.safetensors").exists()


def test_an_out_that_is_holds_or_lies_inside_the_input_is_refused_in_both_directions(tmp_path, capsys):
    """issue 17, item 11: `to-open-clip RUN/model RUN --force` replaced the whole run directory."""
    run = tmp_path / "run"
    model = run / "model"
    convert_open_clip(str(write_open_clip(tmp_path / "oc")), model)
    (run / "dataset").mkdir()
    (run / "dataset" / "rows.parquet").write_text("the dataset")
    (tmp_path / "link").symlink_to(run, target_is_directory=True)
    before = snapshot(run)
    capsys.readouterr()  # the conversion's progress bars
    cases = [(model, "is the input"), (run, "holds the input"), (model / "oc", "lies inside the input"),
             (tmp_path / "link", "holds the input"), (tmp_path / "link" / "model", "is the input")]
    for out, message in cases:
        assert main(["convert", "to-open-clip", str(model), str(out), "--force", "-q"]) == 1, out
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (out, err)
        assert snapshot(run) == before, out
    source = write_open_clip(tmp_path / "oc2")
    before = snapshot(tmp_path / "oc2")
    for out, message in [(source, "is the input"), (tmp_path, "holds the input"), (source / "hf", "lies inside the input")]:
        assert main(["convert", "open-clip", str(source), str(out), "--force", "-q"]) == 1, out
        assert message in capsys.readouterr().err
        assert snapshot(tmp_path / "oc2") == before


def test_a_hub_source_offline_and_not_cached_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["convert", "open-clip", "hf-hub:lmb-freiburg/CLIP-ViT-B-32-EntityNet-33M", str(tmp_path / "out"), "-q"]) == 1
    assert "not in the local Hub cache and the Hub cannot be reached" in capsys.readouterr().err


# --- CLIPModel -> open_clip -------------------------------------------------------------------

def test_open_clip_to_clipmodel_and_back_is_exact(tmp_path):
    state = open_clip_state(TINY, seed=7)
    source = write_open_clip(tmp_path / "oc", state=state)
    convert_open_clip(str(source), tmp_path / "hf")
    assert main(["convert", "to-open-clip", str(tmp_path / "hf"), str(tmp_path / "oc2"), "-q"]) == 0
    back = load_file(str(tmp_path / "oc2" / "open_clip_model.safetensors"))
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    assert json.loads((tmp_path / "oc2" / "open_clip_config.json").read_text()) == {"model_cfg": TINY, "preprocess_cfg": PREPROCESS}
    assert not (tmp_path / "oc2" / "tokenizer.json").exists()  # CLIP's BPE: open_clip uses its own tokenizer


def test_a_model_with_its_own_tokenizer_goes_to_open_clip_with_the_tokenizer(tmp_path, caplog):
    from entitynet.training import model as scratch

    tokenizer = scratch.train_tokenizer(["a lion in the grass", "a tiger at night"] * 20, vocab_size=300, context_length=16)
    clip = scratch.scratch_model("tiny", tokenizer)
    scratch.save(tmp_path / "hf", clip, tokenizer, scratch.image_processor(64))
    with caplog.at_level("WARNING"):
        convert_to_open_clip(tmp_path / "hf", tmp_path / "oc", repo="me/tiny")
    assert "does not clean texts" not in caplog.text
    text_cfg = json.loads((tmp_path / "oc" / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
    assert text_cfg["hf_tokenizer_name"] == "me/tiny" and text_cfg["pool_type"] == "eos"
    assert text_cfg["eos_id"] == tokenizer.eos_token_id and (tmp_path / "oc" / "tokenizer.json").exists()


def test_a_model_trained_here_goes_to_open_clip_and_back_with_its_tokenizer_and_embeddings(tmp_path, caplog):
    """issue 18, item 5: to-open-clip then open-clip gives back a CLIPModel folder with the same
    tokenizer (taken from the open_clip folder, never the Hub), the same pooling and the same embeddings."""
    from transformers import AutoTokenizer, CLIPModel

    from entitynet.training import model as scratch

    texts = ["a lion in the grass", "a tiger at night", "Spotted  leopard &amp; cub!!"]
    torch.manual_seed(0)
    tokenizer = scratch.train_tokenizer(texts * 20, vocab_size=300, context_length=16)
    scratch.save(tmp_path / "hf", scratch.scratch_model("tiny", tokenizer, 16), tokenizer, scratch.image_processor(64))
    assert main(["convert", "to-open-clip", str(tmp_path / "hf"), str(tmp_path / "oc"), "-q"]) == 0
    with caplog.at_level("INFO"):
        assert main(["convert", "open-clip", str(tmp_path / "oc"), str(tmp_path / "back")]) == 0
    assert "taking the tokenizer from oc's own files (never from the Hub)" in caplog.text
    original, back = (CLIPModel.from_pretrained(tmp_path / name).eval() for name in ("hf", "back"))
    ours, theirs = (AutoTokenizer.from_pretrained(tmp_path / name) for name in ("hf", "back"))
    assert len(theirs) == len(ours) == back.config.text_config.vocab_size
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(back.config.text_config, key) == getattr(original.config.text_config, key), key
    batches = [t(texts, padding="max_length", truncation=True, max_length=16, return_tensors="pt") for t in (ours, theirs)]
    assert batches[0]["input_ids"].tolist() == batches[1]["input_ids"].tolist()
    pixels = scratch.image_processor(64)(images=picture(), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        text = [m.get_text_features(**batches[0]).pooler_output for m in (original, back)]
        image = [m.get_image_features(pixel_values=pixels).pooler_output for m in (original, back)]
    assert (text[0] - text[1]).abs().max().item() <= 1e-5 and (image[0] - image[1]).abs().max().item() <= 1e-5
    state, again = original.state_dict(), back.state_dict()
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
    card = (tmp_path / "back" / "README.md").read_text()
    assert f"the model's own ({len(ours)} tokens)" in card and "CLIP's BPE (49,408" not in card


def test_an_open_clip_folder_naming_a_tokenizer_it_does_not_hold_is_refused(tmp_path, capsys):
    from entitynet.training import model as scratch

    tokenizer = scratch.train_tokenizer(["a lion in the grass"] * 20, vocab_size=280, context_length=16)
    scratch.save(tmp_path / "hf", scratch.scratch_model("tiny", tokenizer, 16), tokenizer, scratch.image_processor(64))
    convert_to_open_clip(tmp_path / "hf", tmp_path / "oc", repo="me/tiny")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / "oc" / name).unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["convert", "open-clip", str(tmp_path / "oc"), str(tmp_path / "back"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "hf_tokenizer_name='me/tiny'" in err and "tokenizer.json" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "back").exists()


def test_a_scratch_tokenizer_cleans_texts_as_open_clips_hf_tokenizer_does():
    """issue 17, item 9: open_clip's HFTokenizer (clean='whitespace') collapses whitespace, unescapes
    HTML and fixes quotes before our tokenizer sees a text; ours does the same itself, so a model
    after to-open-clip gets the same ids for the same text on both sides."""
    from entitynet.training import model as scratch

    tokenizer = scratch.train_tokenizer(["a spotted leopard in the grass!!", "it's tom & jerry", "a fine flower"] * 20,
                                        vocab_size=300, context_length=32)

    def ids(text: str) -> list[int]:
        return tokenizer(text).input_ids

    same = [("Spotted  leopard!!", "Spotted leopard!!"), ("  Spotted leopard!!  ", "Spotted leopard!!"),
            ("Spotted\tleopard!!\n", "Spotted leopard!!"), ("Spotted\r\n\u00a0\u2003leopard!!", "Spotted leopard!!"),
            ("It&#39;s Tom &amp; Jerry", "It's Tom & Jerry"), ("it\u2019s \ufb01ne", "it's fine")]
    for messy, clean in same:
        assert ids(messy) == ids(clean), messy
    # what open_clip hands over after its whitespace cleaning (Python's str.split) tokenizes as the raw text
    for text in ["x\u2028y", "  Tabs\tand\nNEW  lines ", "\u3000wide\u2029break"]:
        assert ids(" ".join(text.split())) == ids(text), repr(text)


def test_a_tokenizer_saved_by_an_older_version_keeps_its_ids_and_to_open_clip_warns(tmp_path, caplog):
    from tokenizers import normalizers

    from entitynet.training import model as scratch

    tokenizer = scratch.train_tokenizer(["a spotted leopard"] * 20, vocab_size=280, context_length=16)
    tokenizer.backend_tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.save_pretrained(tmp_path / "tok")  # as the trainer saved it before the cleaning
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
    for text in ["Spotted  leopard", " a spotted leopard", "a&amp;b"]:
        assert loaded(text).input_ids == tokenizer(text).input_ids
    assert loaded("Spotted  leopard").input_ids != loaded("Spotted leopard").input_ids  # its own rule, unchanged
    scratch.save(tmp_path / "hf", scratch.scratch_model("tiny", loaded), loaded, scratch.image_processor(64))
    with caplog.at_level("WARNING"):
        convert_to_open_clip(tmp_path / "hf", tmp_path / "oc", repo="me/old")
    assert "does not clean texts as open_clip's HFTokenizer does" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # and back: the converted model keeps the old rule, open_clip cleans
        convert_open_clip(str(tmp_path / "oc"), tmp_path / "back")
    assert "will give other ids than open_clip for texts such as 'Spotted  leopard!! '" in caplog.text


# --- load_clip and the CLI without the train extra ---------------------------------------------

def test_load_clip_takes_transformers_folders_as_they_are_and_converts_open_clip_once(tmp_path, monkeypatch):
    from entitynet.training.convert import load

    source = write_open_clip(tmp_path / "oc")
    model, tokenizer, processor = load_clip(str(source))
    assert isinstance(model, transformers.CLIPModel) and tokenizer.model_max_length == 12
    # the PIL implementation, whatever is installed (transformers 4 had only that one)
    assert type(processor).__name__ == "CLIPImageProcessorPil" or transformers.__version__.startswith("4.")
    cached = load.resolve_transformers_model(str(source))
    assert Path(cached).parent == load.converted_cache()

    def fail(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(load, "convert_open_clip", fail)
    assert load.resolve_transformers_model(str(source)) == cached  # the cache is reused
    assert load.resolve_transformers_model(cached) == cached  # a transformers folder is taken as it is
    save_file(open_clip_state(TINY, seed=9), str(source / "open_clip_model.safetensors"))
    with pytest.raises(AssertionError, match="converted again"):
        load.resolve_transformers_model(str(source))  # changed weights: a new conversion


def test_without_the_train_extra_convert_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    for name in [name for name in sys.modules if name.startswith("entitynet.training")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails, as without the extra
    assert main(["convert", "open-clip", "x", str(tmp_path / "out")]) == 2
    assert "pip install 'entitynet[train]'" in capsys.readouterr().err


def hub_cache_with(tmp_path: Path, repo: str, monkeypatch) -> str:
    """``repo`` as huggingface_hub's cache holds a downloaded snapshot (refs/main -> commit ->
    files), read by the real snapshot_download in offline mode."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = tmp_path / "hub"
    entry = cache / f"models--{repo.replace('/', '--')}"
    write_open_clip(entry / "snapshots" / commit)
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return commit


def test_a_hub_source_is_read_through_the_hub_cache_and_named_in_the_card(tmp_path, monkeypatch):
    commit = hub_cache_with(tmp_path, "lmb-freiburg/tiny-open-clip", monkeypatch)
    out = tmp_path / "hf"
    assert main(["convert", "open-clip", "hf-hub:lmb-freiburg/tiny-open-clip", str(out), "-q"]) == 0
    card = (out / "README.md").read_text()
    assert "base_model: lmb-freiburg/tiny-open-clip" in card and commit[:12] in card
    assert str(tmp_path) not in card  # no local path in a card meant for the Hub
    # without the prefix, a repo with no transformers config.json is an open_clip source
    model, tokenizer, _ = load_clip("lmb-freiburg/tiny-open-clip")
    assert isinstance(model, transformers.CLIPModel) and tokenizer.model_max_length == 12


def test_half_precision_weights_are_checked_in_fp32_and_saved_in_half(tmp_path):
    state = {key: value.half() for key, value in open_clip_state(TINY, seed=11).items()}
    result = convert_open_clip(str(write_open_clip(tmp_path / "oc", state=state)), tmp_path / "hf")
    assert result.max_abs_diff <= 1e-5
    saved = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert {value.dtype for value in saved.values()} == {torch.float16}
    assert torch.equal(saved["visual_projection.weight"], state["visual.proj"].t())


def test_converted_folders_follow_the_umask_both_ways(tmp_path):
    """mkdtemp made the folder 0700 and safetensors the weights 0600: nobody else could read them."""
    from test_permissions import wrong_modes

    source = write_open_clip(tmp_path / "oc")
    before = os.umask(0o022)
    try:
        assert main(["convert", "open-clip", str(source), str(tmp_path / "hf"), "-q"]) == 0
        assert main(["convert", "to-open-clip", str(tmp_path / "hf"), str(tmp_path / "oc2"), "-q"]) == 0
    finally:
        os.umask(before)
    assert wrong_modes(tmp_path / "hf", 0o022) == [] and wrong_modes(tmp_path / "oc2", 0o022) == []
