"""The paper's recipe as the authors ran it (issue 18): the activation, the optimizer's settings and
the provenance written beside every value of the shipped ViT-B/32 presets."""

from __future__ import annotations

import re
from importlib import resources

import pytest

pytest.importorskip("torch")

from entitynet.training.config import load_train_config
from entitynet.training.model import scratch_model, train_tokenizer

PAPER_PRESETS = ("livingthings-vit-b-32", "entitynet-vit-b-32")


def _config(preset: str):
    return load_train_config(preset, ["dataset=ORG/NAME", "output_dir=out"])


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["a spotted big cat", "a red fly agaric"] * 20, vocab_size=300, context_length=16)


def test_scratch_models_use_gelu_in_both_towers_unless_told_otherwise(tokenizer):
    # CLIPConfig's default is quick_gelu (OpenAI's checkpoints); open_clip's ViT-B-32, the paper's
    # model, uses gelu, and so do our presets unless model.activation says quick_gelu
    for activation in ("gelu", "quick_gelu"):
        model = scratch_model("tiny", tokenizer, 16, activation)
        assert (model.config.text_config.hidden_act, model.config.vision_config.hidden_act) == (activation, activation)
    default = scratch_model("tiny", tokenizer, 16)
    assert default.config.text_config.hidden_act == default.config.vision_config.hidden_act == "gelu"
    assert _config("tiny").model.activation == "gelu"


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_the_paper_presets_follow_the_authors_training_yaml(preset):
    # their train_clip_vitb32_entityneturl_webds.yaml: adamw lr 5e-4, betas [0.9, 0.98], eps 1e-8,
    # weight_decay 0.2, batch 1,024 on 8 GPUs, context 32, open_clip's ViT-B-32; no gradient clipping
    config = _config(preset)
    assert config.model.activation == "gelu"
    assert (config.optimizer.learning_rate, config.optimizer.betas, config.optimizer.eps,
            config.optimizer.weight_decay) == (5e-4, [0.9, 0.98], 1e-8, 0.2)
    assert config.optimizer.max_grad_norm == 0
    assert (config.batch_size, config.accumulation_steps, config.model.context_length) == (1024, 1, 32)


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_every_value_of_a_paper_preset_says_where_it_comes_from(preset):
    text = (resources.files("entitynet.configs") / "train" / f"{preset}.yaml").read_text()
    for line in text.splitlines():
        if re.match(r"\s*[a-z_]+:\s*\S", line):  # a key with a value (sections have none)
            assert re.search(r"#\s*\[(paper|authors|open_clip|ours)\]", line), f"no provenance: {line!r}"
