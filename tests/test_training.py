"""The trainer: text sampling, the distributed loss, a tiny CLIP trained on the demo's dataset
and loaded back with the real CLIPModel.from_pretrained and pipeline, exact resume after a
crash, and two processes through accelerate's debug_launcher."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.torch import load_file  # noqa: E402

from entitynet.training import train as trainer  # noqa: E402
from entitynet.training.config import TextConfig, load_train_config  # noqa: E402
from entitynet.training.data import sample_text  # noqa: E402
from entitynet.training.loss import clip_loss  # noqa: E402
from entitynet.typed_config import ConfigError  # noqa: E402

ROW = {
    "image_id": "abc",
    "alt_texts": ["A lion resting in the grass"],
    "queries": [{"text": "lion", "kind": "noun", "entity_id": "Q140", "attribute": None},
                {"text": "maned lion", "kind": "attrnoun", "entity_id": "Q140", "attribute": "maned"}],
    "entities": [{"id": "Q140", "name": "lion", "aliases": [], "description": "big cat", "natural_type": "big cat", "domain": "living"}],
}


def test_text_sampling_follows_the_weights_and_is_a_function_of_seed_epoch_and_image():
    text = TextConfig(alt_text=0.5, query=0.25, entity=0.25)
    picks = Counter(sample_text({**ROW, "image_id": f"img{i}"}, text, seed=0, epoch=0) for i in range(4000))
    assert abs(picks["A lion resting in the grass"] / 4000 - 0.5) < 0.04
    assert abs((picks["lion"] + picks["maned lion"]) / 4000 - 0.25) < 0.04
    assert abs(picks["a photo of a lion, a type of big cat."] / 4000 - 0.25) < 0.04
    assert sample_text(ROW, text, 0, 3) == sample_text(ROW, text, 0, 3)
    assert len({sample_text(ROW, text, 0, epoch) for epoch in range(30)}) > 1  # epochs pair differently
    only_entities = TextConfig(alt_text=0, query=0, entity=1, entity_template="{name} ({natural_type})")
    assert sample_text(ROW, only_entities, 0, 0) == "lion (big cat)"
    # a kind the row lacks drops out: no alt text, so queries and entities share everything
    no_alt = {**ROW, "alt_texts": []}
    assert all(sample_text({**no_alt, "image_id": str(i)}, text, 0, 0) != "A lion resting in the grass" for i in range(200))


def test_the_loss_is_clips_own_on_one_process():
    class Single:
        num_processes, process_index = 1, 0

    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config={"vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "intermediate_size": 64, "max_position_embeddings": 8, "eos_token_id": 3},
        vision_config={"image_size": 32, "patch_size": 16, "hidden_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "intermediate_size": 64}, projection_dim=16)
    model = transformers.CLIPModel(config)
    ids = torch.randint(4, 50, (6, 8))
    ids[:, -1] = 3
    outputs = model(input_ids=ids, pixel_values=torch.randn(6, 3, 32, 32), return_loss=True)
    ours = clip_loss(outputs.image_embeds, outputs.text_embeds, model.logit_scale, Single())
    assert torch.allclose(ours, outputs.loss, atol=1e-5)


def test_kill_9_during_training_loses_nothing(demo_run, tmp_path):
    """A real training process killed with SIGKILL (possibly mid-checkpoint) and run again ends
    with the weights of an uninterrupted run."""
    import os
    import signal
    import time

    arguments = ["--config", "tiny", "--dataset", str(demo_run / "dataset"), "--max-steps", "30",
                 "--set", "checkpoint_every=3", "--set", "log_every=30"]
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "entitynet.training.train", *arguments, "--output-dir", str(killed)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoints" / "step-00000006").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert not (killed / "model").exists(), "the run finished before it could be killed"
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from" in rerun.stderr
    trainer.train(tiny(demo_run, tmp_path / "straight", "max_steps=30", "checkpoint_every=3"))
    a, b = weights(tmp_path / "straight" / "model"), weights(killed / "model")
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not list((killed / "checkpoints").glob(".partial-*"))


def in_two_processes(case: str, *args: str) -> None:
    """Run a case of distributed_cases.py under accelerate's debug_launcher (2 forked CPU
    processes) in a fresh interpreter: forking this pytest process after earlier tests used
    torch's OpenMP pool hangs the children in their first parallel op."""
    command = [sys.executable, str(Path(__file__).with_name("distributed_cases.py")), case, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def test_the_loss_over_two_processes_is_the_full_batch_loss():
    in_two_processes("loss")


def tiny(demo_run: Path, out: Path, *extra: str):
    return load_train_config("tiny", [f"dataset={demo_run / 'dataset'}", f"output_dir={out}", "log_every=1", *extra])


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def trained(demo_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("clip") / "out"
    result = trainer.train(tiny(demo_run, out, "max_steps=6", "checkpoint_every=3"))
    return out, result


def test_a_tiny_clip_trains_and_loads_with_transformers(trained, demo_run):
    out, result = trained
    assert result["step"] == 6
    losses = [point["loss"] for point in result["history"]]
    assert len(losses) == 6 and all(loss == loss and loss > 0 for loss in losses)  # finite, logged each step
    model = transformers.CLIPModel.from_pretrained(out / "model")
    assert model.config.vision_config.image_size == 64
    classify = transformers.pipeline("zero-shot-image-classification", model=str(out / "model"))
    import datasets

    row = datasets.load_dataset(str(demo_run / "dataset"), "livingthings", split="test")[0]
    answer = classify(row["image"], candidate_labels=["a photo of a lion.", "a photo of an oak.", "a photo of a fox."])
    assert sorted(a["label"] for a in answer) == ["a photo of a fox.", "a photo of a lion.", "a photo of an oak."]
    assert abs(sum(a["score"] for a in answer) - 1) < 1e-4
    # the checkpoints are complete and only the newest kept ones remain
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]


def test_the_model_card_has_a_model_index_and_the_eval_results(trained):
    from huggingface_hub import ModelCard

    out, result = trained
    card = ModelCard.load(out / "model" / "README.md")
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert card.data.library_name == "transformers"
    saved = json.loads((out / "model" / "eval_results.json").read_text())
    assert saved["split"] == "test" and set(result["metrics"]) <= set(saved)
    assert 0 <= saved["zero_shot_top1"] <= saved["zero_shot_top5"] <= 1
    index = card.data.eval_results
    assert {r.metric_name for r in index} == {"zero shot top1", "zero shot top5"}
    assert "synthetic" in card.text.lower()  # trained on the demo's drawings, and says so


def test_push_model_dry_run_lists_the_saved_model(trained, capsys, monkeypatch):
    from entitynet.cli import main

    out, _ = trained
    monkeypatch.setenv("HF_TOKEN", "hf_" + "m" * 34)
    assert main(["push", "model", str(out / "model"), "--repo", "entitynet/clip-demo", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    for name in ("model.safetensors", "config.json", "tokenizer.json", "preprocessor_config.json", "README.md"):
        assert name in printed
    assert "https://huggingface.co/entitynet/clip-demo" in printed and "hf_mmm" not in printed
    assert main(["push", "model", str(out / "checkpoints"), "--repo", "x/y", "--dry-run"]) == 1
    assert "is not a trained model" in capsys.readouterr().err


def test_checkpoints_of_another_configuration_are_not_resumed(trained, demo_run, capsys, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(trained[0], out)  # the fixture's run stays as it is for the other tests
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    with pytest.raises(trainer.ResumeMismatch, match="batch_size, learning_rate differ"):
        trainer.train(tiny(demo_run, out, "max_steps=6", "checkpoint_every=3", "batch_size=8", "learning_rate=0.01"))
    assert trainer.main(["--config", "tiny", "--dataset", str(demo_run / "dataset"), "--output-dir", str(out),
                         "--set", "text.alt_text=0.9"]) == 1
    assert "another configuration (text differ)" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before  # nothing touched
    # more steps, another eval or repo: the same experiment, continued
    result = trainer.train(tiny(demo_run, out, "max_steps=7", "checkpoint_every=3", "eval.max_images=5", "repo_id=a/b"))
    assert result["step"] == 7 and [p["step"] for p in result["history"]] == [7]


def test_finetuning_starts_from_a_saved_model(trained, demo_run, tmp_path):
    out, _ = trained
    result = trainer.train(tiny(demo_run, tmp_path / "ft", "max_steps=2", f"model.init_from={out / 'model'}",
                                "learning_rate=0.0001"))
    assert result["step"] == 2
    start, tuned = weights(out / "model"), weights(tmp_path / "ft" / "model")
    assert start.keys() == tuned.keys() and any(not torch.equal(start[k], tuned[k]) for k in start)
    assert not (tmp_path / "ft" / "tokenizer").exists()  # the model's own tokenizer, not a new one
    assert "finetuned from" in (tmp_path / "ft" / "model" / "README.md").read_text()
    transformers.pipeline("zero-shot-image-classification", model=str(tmp_path / "ft" / "model"))


def test_a_crashed_run_resumes_exactly(demo_run, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    trainer.train(tiny(demo_run, straight, "max_steps=6", "checkpoint_every=2"))

    crashed = tmp_path / "crashed"
    original = trainer.save_checkpoint

    def crash_after_step_four(accelerator, folder, state, keep):
        original(accelerator, folder, state, keep)
        if state["step"] == 4:
            raise KeyboardInterrupt("killed after the step-4 checkpoint")

    monkeypatch.setattr(trainer, "save_checkpoint", crash_after_step_four)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(tiny(demo_run, crashed, "max_steps=6", "checkpoint_every=2"))
    assert not (crashed / "model").exists()
    monkeypatch.setattr(trainer, "save_checkpoint", original)
    loads, real_load = [], torch.load

    def recording_load(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    result = trainer.train(tiny(demo_run, crashed, "max_steps=6", "checkpoint_every=2"))
    assert loads and all(flag is True for flag in loads), f"a checkpoint file was unpickled unsafely: {loads}"
    assert result["step"] == 6 and [p["step"] for p in result["history"]] == [5, 6]
    a, b = weights(straight / "model"), weights(crashed / "model")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[name], b[name]) for name in a), "resumed weights differ from an uninterrupted run"


def test_two_processes_train_like_one_with_the_global_batch(demo_run, tmp_path):
    """Same global batch (the seedable sampler shards it), same texts (keyed by image), the same
    loss: the updates match one process with twice the batch, up to float noise."""
    from accelerate.utils import set_seed
    from transformers import PreTrainedTokenizerFast

    from entitynet.training.model import scratch_model

    in_two_processes("train", str(demo_run / "dataset"), str(tmp_path / "two"))
    trainer.train(load_train_config("tiny", [f"dataset={demo_run / 'dataset'}", f"output_dir={tmp_path / 'one'}",
                                             "max_steps=3", "batch_size=8", "max_grad_norm=0", "checkpoint_every=3"]))
    two, one = weights(tmp_path / "two" / "model"), weights(tmp_path / "one" / "model")
    set_seed(0)  # as the trainer does before it makes the model: the starting weights
    start = scratch_model("tiny", PreTrainedTokenizerFast.from_pretrained(tmp_path / "one" / "tokenizer")).state_dict()
    for name in one:
        update_one, update_two = one[name] - start[name], two[name] - start[name]
        assert update_one.norm() > 0, f"{name} did not move"
        if name.endswith("k_proj.bias"):
            # a key bias shifts every logit of a query equally: softmax cancels it, its gradient is
            # float noise, and Adam scales noise up to full-size steps in either direction
            continue
        difference = (update_one - update_two).norm() / update_one.norm()
        assert difference < 1e-2, f"{name}: updates differ by {difference:.2%}"


def test_bad_configs_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match="batch_size"):
        load_train_config("tiny", ["dataset=x", f"output_dir={tmp_path}", "batch_size=1"])
    with pytest.raises(ConfigError, match="dataset"):
        load_train_config("tiny", [f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="no such file, nor a shipped training config"):
        load_train_config("nonexistent-preset", [])
    assert trainer.main(["--config", "tiny", "--output-dir", str(tmp_path), "--set", "model.preset=vit-x"]) == 2
