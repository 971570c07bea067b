"""LoRA finetuning (``model.lora``, real PEFT on a real tiny CLIPModel): adapters train on both
towers and nothing else moves; OUTPUT/model is a plain, merged CLIPModel whose evaluation is the
run's final one; the adapter alone on its base gives the same outputs; a stopped run resumes
exactly; bad settings are refused with the configuration, in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402
from test_streaming import hub_layout  # noqa: E402,F401  (a module fixture: 120 rows in 3 parquet shards)

from entitynet.training import train as trainer  # noqa: E402
from entitynet.training.config import load_train_config  # noqa: E402
from entitynet.training.model import PRESETS, image_processor, save, scratch_model, train_tokenizer  # noqa: E402
from entitynet.typed_config import ConfigError  # noqa: E402

ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny CLIPModel saved as a finetune starts from: weights, tokenizer, image processor."""
    folder = tmp_path_factory.mktemp("base") / "model"
    tokenizer = train_tokenizer([f"a picture of thing {n}" for n in range(200)], 300, 32)
    torch.manual_seed(0)
    save(folder, scratch_model("tiny", tokenizer, 32), tokenizer, image_processor(PRESETS["tiny"].image_size))
    return folder


def lora_run(dataset: Path, out: Path, base: Path, *extra: str):
    return load_train_config("tiny", [f"dataset={dataset}", f"output_dir={out}", f"model.init_from={base}",
                                      "batch_size=4", "log_every=1", "num_workers=0", "streaming=false",
                                      "optimizer.warmup_steps=1", "optimizer.learning_rate=0.01",
                                      "eval.max_images=12", "model.lora.rank=4", *extra])


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def tuned(hub_layout, base, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("lora") / "out"
    result = trainer.train(lora_run(hub_layout, out, base, "max_steps=4", "checkpoint_every=2",
                                    "model.lora.save_adapter=true"))
    return out, result


def test_adapters_train_on_both_towers_and_nothing_else_moves(tuned, base):
    out, result = tuned
    assert result["step"] == 4
    start, merged = weights(base), weights(out / "model")
    assert start.keys() == merged.keys()  # a plain CLIPModel: no PEFT keys (lora_A, base_model.model...)
    adapted = [name for name in start if name.endswith(tuple(f"{kind}.weight" for kind in ATTENTION))]
    for tower in ("vision_model", "text_model"):
        for kind in ("q_proj", "v_proj"):
            name = f"{tower}.encoder.layers.0.self_attn.{kind}.weight"
            assert not torch.equal(start[name], merged[name]), f"{name} did not train"
    for name in set(start) - set(adapted):  # the adapted layers' biases too (bias="none"), and every norm
        assert torch.equal(start[name], merged[name]), f"{name} is not targeted but changed"
    assert "logit_scale" in start and torch.equal(start["logit_scale"], merged["logit_scale"])


def test_the_trainable_parameters_are_what_lora_predicts(tuned, base):
    out, _ = tuned
    card = (out / "model" / "README.md").read_text()
    tiny, rank = PRESETS["tiny"], 4
    # each adapted (d_in x d_out) layer adds rank x (d_in + d_out): 4 square projections per layer, both towers
    predicted = 4 * rank * 2 * (tiny.vision_width * tiny.vision_layers + tiny.text_width * tiny.text_layers)
    total = sum(tensor.numel() for tensor in weights(base).values()) + predicted
    assert f"{predicted:,} of {total:,} parameters trained" in card
    assert "LoRA" in card and "rank 4, alpha 32.0" in card and "q_proj, k_proj, v_proj, out_proj" in card
    assert f"{tiny.vision_layers * 4} vision and {tiny.text_layers * 4} text layers" in card


def test_the_merged_model_is_what_was_evaluated_and_loads_plainly(tuned, hub_layout):  # noqa: F811
    from entitynet.training.evaluation.api import evaluate_built_dataset
    from entitynet.training.splits import eval_rows

    out, result = tuned
    model = transformers.CLIPModel.from_pretrained(out / "model")
    assert type(model) is transformers.CLIPModel
    config = lora_run(hub_layout, out, out / "model", "max_steps=4")
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "model")
    processor = transformers.AutoImageProcessor.from_pretrained(out / "model")
    again = evaluate_built_dataset(model, tokenizer, processor, eval_rows(config, "test"), templates=("{c}",),
                                   name_format=config.eval.template)
    assert again == result["metrics"]
    assert json.loads((out / "model" / "eval_results.json").read_text()) == {"split": "test", **result["metrics"]}
    classify = transformers.pipeline("zero-shot-image-classification", model=str(out / "model"))
    from PIL import Image

    answer = classify(Image.new("RGB", (48, 40), (200, 30, 30)), candidate_labels=["thing 1", "thing 2"])
    assert abs(sum(a["score"] for a in answer) - 1) < 1e-4


def test_the_adapter_alone_on_its_base_gives_the_merged_models_outputs(tuned, base):
    out, _ = tuned
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (out / "adapter").iterdir()}
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 4
    # its card is ours, not PEFT's template of placeholders: the base it loads onto, how, what was trained
    card = (out / "adapter" / "README.md").read_text()
    assert "More Information Needed" not in card
    assert f"# LoRA adapter for `{base}`" in card and "PeftModel.from_pretrained" in card and "rank 4, alpha 32" in card
    assert "library_name: peft" in card and "base_model:" not in card  # a local base is no Hub id
    from entitynet.training.lora import adapter_card

    info = {"rank": 4, "alpha": 32.0, "targets": ["q_proj"], "layers": {"vision": 2, "text": 2},
            "trainable_parameters": 10, "parameters": 100, "logit_scale": 100.0}
    assert "base_model: openai/clip-vit-base-patch32\n" in adapter_card(info, "openai/clip-vit-base-patch32")
    adapted = peft.PeftModel.from_pretrained(transformers.CLIPModel.from_pretrained(base), out / "adapter").eval()
    merged = transformers.CLIPModel.from_pretrained(out / "model").eval()
    torch.manual_seed(1)
    inputs = {"pixel_values": torch.randn(3, 3, 64, 64), "input_ids": torch.randint(4, 300, (3, 8)),
              "attention_mask": torch.ones(3, 8, dtype=torch.long)}
    with torch.no_grad():
        a, b = adapted(**inputs), merged(**inputs)
    for name in ("image_embeds", "text_embeds", "logits_per_image"):
        assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-5), name


def test_a_stopped_lora_run_resumes_exactly(hub_layout, base, tmp_path, monkeypatch):  # noqa: F811
    trainer.train(lora_run(hub_layout, tmp_path / "straight", base, "max_steps=4", "checkpoint_every=2"))
    original = trainer.save_checkpoint

    def stop_after_step_two(accelerator, folder, state, keep):
        original(accelerator, folder, state, keep)
        if state["step"] == 2:
            raise KeyboardInterrupt("stopped after the step-2 checkpoint")

    monkeypatch.setattr(trainer, "save_checkpoint", stop_after_step_two)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(lora_run(hub_layout, tmp_path / "stopped", base, "max_steps=4", "checkpoint_every=2"))
    monkeypatch.setattr(trainer, "save_checkpoint", original)
    # save_adapter may change on resume: it only adds OUTPUT/adapter at the end
    result = trainer.train(lora_run(hub_layout, tmp_path / "stopped", base, "max_steps=4", "checkpoint_every=2",
                                    "model.lora.save_adapter=true"))
    assert [point["step"] for point in result["history"]] == [3, 4]
    a, b = weights(tmp_path / "straight" / "model"), weights(tmp_path / "stopped" / "model")
    assert all(torch.equal(a[name], b[name]) for name in a), "the resumed LoRA run differs from an uninterrupted one"
    assert (tmp_path / "stopped" / "adapter").is_dir() and not (tmp_path / "straight" / "adapter").exists()
    with pytest.raises(trainer.ResumeMismatch, match="model.lora.rank differ"):
        trainer.train(lora_run(hub_layout, tmp_path / "stopped", base, "max_steps=5", "model.lora.rank=8"))


def test_gradient_checkpointing_with_lora_changes_memory_not_results(hub_layout, base, tmp_path):  # noqa: F811
    def losses(out: Path) -> list[tuple[float, float]]:
        lines = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
        return [(line["loss"], line["grad_norm"]) for line in lines]

    trainer.train(lora_run(hub_layout, tmp_path / "plain", base, "max_steps=2", "checkpoint_every=2"))
    trainer.train(lora_run(hub_layout, tmp_path / "checkpointed", base, "max_steps=2", "checkpoint_every=2",
                           "model.gradient_checkpointing=true"))
    for (loss, norm), (loss2, norm2) in zip(losses(tmp_path / "plain"), losses(tmp_path / "checkpointed")):
        assert abs(loss - loss2) < 1e-5 and abs(norm - norm2) / norm < 1e-4 and norm > 0


def test_periodic_evaluation_runs_on_the_adapted_model(hub_layout, base, tmp_path):  # noqa: F811
    """eval.every evaluates the wrapped model during training; the last step's test split is the merged model's."""
    result = trainer.train(lora_run(hub_layout, tmp_path / "out", base, "max_steps=2", "checkpoint_every=2",
                                    "eval.every=1", "eval.periodic_split=test"))
    lines = [json.loads(line) for line in (tmp_path / "out" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert "test/acc1" in lines[0] and lines[1]["test/acc1"] == result["metrics"]["acc1"]


@pytest.mark.slow
def test_two_processes_train_the_adapters_of_one(hub_layout, base, tmp_path):  # noqa: F811
    """DDP over the PeftModel, 2 processes x 2 against 1 x 4: the same merged weights (the loss
    gathers the features with their gradients; the frozen weights are no part of the reducer)."""
    import subprocess

    common = [f"model.init_from={base}", "model.lora.rank=4", "max_steps=2", "checkpoint_every=2", "log_every=1",
              "num_workers=0", "streaming=false", "optimizer.warmup_steps=1", "optimizer.learning_rate=0.01",
              "eval.max_images=12"]
    cases = Path(__file__).with_name("distributed_cases.py")
    done = subprocess.run([sys.executable, str(cases), "train", str(hub_layout), str(tmp_path / "two"), "batch_size=2",
                           *common], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    trainer.train(load_train_config("tiny", [f"dataset={hub_layout}", f"output_dir={tmp_path / 'one'}", "batch_size=4",
                                             *common]))
    one, two = weights(tmp_path / "one" / "model"), weights(tmp_path / "two" / "model")
    assert one.keys() == two.keys() and not any("lora" in name for name in two)
    for name in one:
        assert (one[name] - two[name]).abs().max().item() < 1e-5, name


def refusal(tmp_path: Path, *pairs: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_train_config("tiny", ["dataset=x", f"output_dir={tmp_path}", *pairs])
    return str(caught.value)


def test_bad_lora_settings_are_refused_with_the_configuration(tmp_path, base, hub_layout, capsys):  # noqa: F811
    assert "model.lora: LoRA adapts a pretrained model: set model.init_from" in refusal(tmp_path, "model.lora.rank=8")
    assert "model.lora.rank: must be at least 1" in refusal(tmp_path, f"model.init_from={base}", "model.lora.rank=0")
    assert "model.lora.alpha: must be positive" in refusal(tmp_path, f"model.init_from={base}", "model.lora.alpha=0")
    assert "model.lora.targets: name at least one layer" in refusal(tmp_path, f"model.init_from={base}",
                                                                    "model.lora.targets=[]")
    message = refusal(tmp_path, f"model.init_from={base}", "model.lora.targets=[q_proj, query, self_attn]")
    assert "model.lora.targets: query, self_attn: not a layer of CLIPModel that LoRA adapts" in message
    assert "q_proj" not in message.partition("choose")[0]
    # a dotted path of a known layer name that the model lacks: named, once the model is loaded, before any step
    with pytest.raises(ConfigError, match=r"model.lora.targets: vision_model.encoder.layers.7.self_attn.q_proj match "
                       r"no layer of"):
        trainer.train(lora_run(hub_layout, tmp_path / "out", base, "max_steps=1",
                               "model.lora.targets=[q_proj, vision_model.encoder.layers.7.self_attn.q_proj]"))
    assert not (tmp_path / "out" / "checkpoints").exists()
    # the trainer's command: one line, exit 2
    capsys.readouterr()
    assert trainer.main(["--config", "tiny", "--dataset", str(hub_layout), "--output-dir", str(tmp_path / "cli"),
                         "--set", "model.lora.rank=8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "set model.init_from" in err
    # off again with null; a preset's section completed key by key
    config = load_train_config("tiny", ["dataset=x", f"output_dir={tmp_path}", f"model.init_from={base}",
                                        "model.lora.rank=8", "model.lora=null"])
    assert config.model.lora is None
    config = load_train_config("tiny", ["dataset=x", f"output_dir={tmp_path}", f"model.init_from={base}",
                                        "model.lora.alpha=8", "model.lora.targets=[q_proj, fc1]"])
    assert (config.model.lora.rank, config.model.lora.alpha, config.model.lora.targets) == (16, 8.0, ["q_proj", "fc1"])


def test_without_peft_the_configuration_says_which_extra(tmp_path, base, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # an import of peft now fails, as when it is not installed
    message = refusal(tmp_path, f"model.init_from={base}", "model.lora.rank=8")
    assert message.endswith("model.lora: needs the lora extra (peft is not installed): pip install 'entitynet[lora]'")
    load_train_config("tiny", ["dataset=x", f"output_dir={tmp_path}", f"model.init_from={base}"])  # no LoRA: fine


def test_embedding_targets_count_among_the_adapted_layers(base):
    """PEFT keeps an embedding's adapter in lora_embedding_A: the first count missed them (the log
    read "1 vision and 0 text layers" for three embeddings)."""
    import transformers

    from entitynet.training import lora
    from entitynet.training.config import LoraConfig

    config = LoraConfig(rank=2, targets=["token_embedding", "position_embedding", "q_proj"])
    wrapped = lora.wrap(transformers.CLIPModel.from_pretrained(base), config, str(base))
    layers = lora.summary(wrapped, config)["layers"]
    tiny = PRESETS["tiny"]
    # the text tower's token and position embeddings, the vision tower's position embedding, q_proj per layer
    assert layers == {"vision": tiny.vision_layers + 1, "text": tiny.text_layers + 2}
