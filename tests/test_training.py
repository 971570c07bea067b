"""The trainer: the distributed loss, a tiny CLIP trained on the demo's dataset and loaded back
with the real CLIPModel.from_pretrained and pipeline, exact resume after a crash, the same step on
one process, two processes and with accumulation, the schedule on resume, the logs, and a real
``accelerate launch``. (Text mix and images: test_text_mix.py, test_train_images.py.)"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.torch import load_file  # noqa: E402

from entitynet.training import train as trainer  # noqa: E402
from entitynet.training.config import load_train_config  # noqa: E402
from entitynet.training.loss import ClipLoss  # noqa: E402
from entitynet.typed_config import ConfigError  # noqa: E402


def test_the_loss_is_clips_own_on_one_process():
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
    ours = ClipLoss()(outputs.image_embeds, outputs.text_embeds, model.logit_scale)
    assert torch.allclose(ours, outputs.loss, atol=1e-5)


def tiny_clip(projection_dim: int = 16):
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config={"vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "intermediate_size": 64, "max_position_embeddings": 8, "eos_token_id": 3},
        vision_config={"image_size": 32, "patch_size": 16, "hidden_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "intermediate_size": 64}, projection_dim=projection_dim)
    return transformers.CLIPModel(config)


def micro_batches(count: int, size: int) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(count):
        ids = torch.randint(4, 50, (size, 8), generator=generator)
        ids[:, -1] = 3
        batches.append({"pixel_values": torch.randint(0, 256, (size, 32, 32, 3), dtype=torch.uint8, generator=generator),
                        "input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return batches


def test_the_accumulation_cache_holds_only_the_embeddings():
    """The first pass of an accumulated step keeps, per micro-batch, the two (batch, projection)
    embeddings and nothing else: no hidden states, no logits, no autograd graph."""
    from entitynet.training.step import cached_embeddings, clip_embeddings

    model = tiny_clip(projection_dim=16)
    group = micro_batches(3, 4)
    cache = cached_embeddings(lambda batch: clip_embeddings(model, batch, (0.5,) * 3, (0.25,) * 3), group)
    assert len(cache) == 3
    for entry in cache:
        assert isinstance(entry, tuple) and len(entry) == 2
        assert all(isinstance(t, torch.Tensor) and t.shape == (4, 16) and t.grad_fn is None for t in entry)
    assert sum(t.numel() * t.element_size() for entry in cache for t in entry) == 3 * 2 * 4 * 16 * 4


def test_an_accumulated_step_has_the_gradient_of_the_whole_batch():
    """3 micro-batches of 4 with the embedding cache, against 12 at once (one process, both ways of
    summing the gathered gradients): the same loss and the same gradient for every parameter."""
    from entitynet.training.step import clip_embeddings, contrastive_backward

    group = micro_batches(3, 4)
    whole = [{key: torch.cat([batch[key] for batch in group]) for key in group[0]}]
    gradients = []
    for batches, reduce_scatter in ((whole, True), (group, True), (group, False)):
        model = tiny_clip()
        loss = contrastive_backward(lambda batch, model=model: clip_embeddings(model, batch, (0.5,) * 3, (0.25,) * 3), batches,
                                    ClipLoss(reduce_scatter=reduce_scatter), model.logit_scale,
                                    lambda value: value.backward(), contextlib.nullcontext)
        gradients.append((loss, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}))
    (loss, reference), *others = gradients
    for other_loss, other in others:
        assert abs(other_loss.item() - loss.item()) < 1e-5
        assert reference.keys() == other.keys() and "logit_scale" in other
        for name in reference:
            assert torch.allclose(reference[name], other[name], atol=1e-5, rtol=1e-4), name


@pytest.mark.slow
def test_kill_9_during_training_loses_nothing(demo_run, tmp_path, caplog):
    """A real training process killed with SIGKILL (possibly mid-checkpoint) and run again ends
    with the weights of an uninterrupted run."""
    from helpers import kill_when

    arguments = ["--config", "tiny", "--dataset", str(demo_run / "dataset"), "--max-steps", "30",
                 "--set", "checkpoint_every=3", "--set", "log_every=30"]
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "entitynet.training.train", *arguments, "--output-dir", str(killed)]
    kill_when(command, killed / "checkpoints" / "step-00000006", seconds=120)
    assert not (killed / "model").exists(), "the run finished before it could be killed"
    with caplog.at_level("INFO", logger="entitynet.training.train"):  # the same command, rerun in this process
        assert trainer.main([*arguments, "--output-dir", str(killed)]) == 0
    assert "resuming from" in caplog.text
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


@pytest.mark.slow
def test_the_loss_over_two_processes_gives_the_full_batch_gradient():
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
    assert 0 <= saved["acc1"] <= 1 and saved["num_classes"] >= 1 and saved["num_images"] >= 1
    assert 0 <= saved["image_retrieval_recall@1"] <= saved["image_retrieval_recall@5"] <= 1
    index = {r.metric_name: r for r in card.data.eval_results}
    assert {"acc1", "mean_per_class_recall", "image_retrieval_recall@1", "text_retrieval_recall@1"} <= set(index)
    assert index["acc1"].task_type == "zero-shot-image-classification" and index["acc1"].metric_value == round(saved["acc1"], 4)
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
    with pytest.raises(trainer.ResumeMismatch, match="batch_size, optimizer.learning_rate differ"):
        trainer.train(tiny(demo_run, out, "max_steps=6", "checkpoint_every=3", "batch_size=8",
                           "optimizer.learning_rate=0.01"))
    assert trainer.main(["--config", "tiny", "--dataset", str(demo_run / "dataset"), "--output-dir", str(out),
                         "--set", "text.alt_text=0.9"]) == 1
    assert "another configuration (text.alt_text differ)" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before  # nothing touched
    # more steps, another eval or repo: the same experiment, continued
    result = trainer.train(tiny(demo_run, out, "max_steps=7", "checkpoint_every=3", "eval.max_images=5", "repo_id=a/b"))
    assert result["step"] == 7 and [p["step"] for p in result["history"]] == [7]


def test_finetuning_starts_from_a_saved_model(trained, demo_run, tmp_path):
    out, _ = trained
    result = trainer.train(tiny(demo_run, tmp_path / "ft", "max_steps=2", f"model.init_from={out / 'model'}",
                                "optimizer.learning_rate=0.0001"))
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


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(a: dict, b: dict, tolerance: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        difference = (a[name] - b[name]).abs().max().item()
        assert difference < tolerance, f"{name}: weights differ by {difference:.2e}"


@pytest.mark.slow
def test_two_processes_take_the_step_of_one_with_the_global_batch(demo_run, tmp_path):
    """2 processes x batch 4 and 1 process x batch 8, clipping active: the same gradient norm at
    every step and the same weights after a few steps (the loss gathers features with their
    gradients, so each process has exactly the global batch's gradient)."""
    steps = ["max_steps=3", "log_every=1", "checkpoint_every=3", "optimizer.max_grad_norm=1.0"]
    in_two_processes("train", str(demo_run / "dataset"), str(tmp_path / "two"), "batch_size=4", *steps)
    trainer.train(tiny(demo_run, tmp_path / "one", "batch_size=8", *steps))
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert all(point["grad_norm"] > 1.0 for point in one)  # clipping was active
    for a, b in zip(one, two):
        assert abs(a["grad_norm"] - b["grad_norm"]) / a["grad_norm"] < 1e-4, (a, b)
        assert abs(a["loss"] - b["loss"]) < 1e-5
    assert_same_weights(weights(tmp_path / "one" / "model"), weights(tmp_path / "two" / "model"), 1e-5)


def test_accumulation_keeps_the_contrastive_batch_whole(demo_run, tmp_path):
    """2 forward passes of 4 per step give the step of 8 at once: the same loss, gradient norm
    and weights (a plain sum of two losses of 4 would see 3 negatives per image, not 7)."""
    steps = ["max_steps=3", "log_every=1", "checkpoint_every=3"]
    trainer.train(tiny(demo_run, tmp_path / "once", "batch_size=8", *steps))
    trainer.train(tiny(demo_run, tmp_path / "accumulated", "batch_size=4", "accumulation_steps=2", *steps))
    once, accumulated = metrics(tmp_path / "once"), metrics(tmp_path / "accumulated")
    for a, b in zip(once, accumulated):
        assert abs(a["grad_norm"] - b["grad_norm"]) / a["grad_norm"] < 1e-4 and abs(a["loss"] - b["loss"]) < 1e-5
    assert_same_weights(weights(tmp_path / "once" / "model"), weights(tmp_path / "accumulated" / "model"), 1e-5)


@pytest.mark.slow
def test_a_real_accelerate_launch_logs_the_grad_norm_of_one_process(demo_run, tmp_path):
    """`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2`, batch 4, against one
    process with batch 8: step 1's gradient norm (before clipping, clipping active) agrees."""
    from helpers import accelerate_launch

    common = ["-m", "entitynet.training.train", "--config", "tiny", "--dataset", str(demo_run / "dataset"),
              "--max-steps", "1", "--set", "log_every=1"]
    done = accelerate_launch([*common, "--output-dir", str(tmp_path / "two"), "--set", "batch_size=4"], seconds=300)
    assert done.returncode == 0, done.stderr[-4000:]
    trainer.train(tiny(demo_run, tmp_path / "one", "max_steps=1", "batch_size=8"))
    (two,), (one,) = metrics(tmp_path / "two"), metrics(tmp_path / "one")
    assert one["grad_norm"] > 1.0 and abs(one["grad_norm"] - two["grad_norm"]) / one["grad_norm"] < 1e-4, (one, two)


def test_metrics_jsonl_has_a_line_per_logged_step_and_each_evaluation_once(demo_run, tmp_path):
    out = tmp_path / "out"
    trainer.train(tiny(demo_run, out, "max_steps=4", "log_every=2", "checkpoint_every=2", "eval.every=2"))
    lines = metrics(out)
    assert [line["step"] for line in lines] == [2, 4]
    for line in lines:
        assert {"step", "loss", "lr", "grad_norm", "images_per_s", "data_wait_share"} <= set(line)
    # periodic evaluation on the validation split, the final one on test, each once
    assert any(key.startswith("validation/") for key in lines[0]) and not any(k.startswith("test/") for k in lines[0])
    assert any(key.startswith("test/") for key in lines[1]) and any(k.startswith("validation/") for k in lines[1])


def test_the_same_split_at_the_last_step_is_evaluated_once(demo_run, tmp_path, monkeypatch):
    calls = []
    original = trainer.run_eval

    def counting(*args):
        calls.append((args[-2], args[-1]))  # (step, split)
        return original(*args)

    monkeypatch.setattr(trainer, "run_eval", counting)
    trainer.train(tiny(demo_run, tmp_path / "out", "max_steps=4", "eval.every=2", "eval.periodic_split=test"))
    assert calls == [(2, "test"), (4, "test")]


def test_evaluation_samples_across_entities(demo_run, tmp_path):
    config = tiny(demo_run, tmp_path / "out", "eval.max_images=6")
    rows = trainer.eval_rows(config, "validation")
    first = trainer.load_split(config, "validation").select(range(6))
    assert len(rows) == 6 and [r["image_id"] for r in rows] == [r["image_id"] for r in trainer.eval_rows(config, "validation")]
    entities = lambda items: {e["id"] for row in items for e in row["entities"]}  # noqa: E731
    assert len(entities(rows)) > len(entities(first))  # the files group rows by entity; the sample does not


def test_extending_a_run_never_raises_the_learning_rate(demo_run, tmp_path, caplog):
    out = tmp_path / "out"
    trainer.train(tiny(demo_run, out, "max_steps=6", "log_every=1", "checkpoint_every=3", "optimizer.warmup_steps=2"))
    shutil_copy = tmp_path / "mid"
    import shutil

    shutil.copytree(out, shutil_copy)
    shutil.rmtree(shutil_copy / "checkpoints" / "step-00000006")  # as if stopped at step 3 of 6
    trainer.train(tiny(demo_run, shutil_copy, "max_steps=12", "log_every=1", "checkpoint_every=3",
                       "optimizer.warmup_steps=2"))
    original = [line["lr"] for line in metrics(out)]
    rates = [line["lr"] for line in metrics(shutil_copy) if "lr" in line]
    assert len(rates) == 12 and rates[:3] == original[:3]
    after = rates[3:]  # steps 4..12: from the rate the old schedule had reached, down a longer cosine
    assert after[0] == pytest.approx(original[3]) and all(b <= a for a, b in zip(rates[2:], after))
    assert after[3] > original[5] and after[-1] > 0  # longer: decays more slowly
    # a finished run cannot be extended (every further step would train at rate 0): refused with the
    # way on, before anything is loaded or written
    before = sorted(p.name for p in (out / "checkpoints").iterdir()), (out / "logs" / "metrics.jsonl").read_bytes()
    with pytest.raises(trainer.ResumeMismatch, match=r"finished its learning-rate schedule at step 6.*--init-from"):
        trainer.train(tiny(demo_run, out, "max_steps=8", "log_every=1", "checkpoint_every=3", "optimizer.warmup_steps=2"))
    assert (sorted(p.name for p in (out / "checkpoints").iterdir()), (out / "logs" / "metrics.jsonl").read_bytes()) == before


def test_a_run_that_ends_inside_its_warm_up_says_so_at_start(demo_run, tmp_path, caplog):
    with caplog.at_level("WARNING"):
        trainer.train(tiny(demo_run, tmp_path / "out", "max_steps=2", "checkpoint_every=2", "optimizer.warmup_steps=4",
                           "eval.max_images=8"))
    assert "max_steps (2) ends inside the warm-up (optimizer.warmup_steps 4)" in caplog.text
    assert "ends at 50% of the peak rate" in caplog.text


def test_the_tokenizer_is_trained_on_a_bounded_sample_or_taken_pretrained(demo_run, tmp_path, caplog):
    from transformers import AutoTokenizer

    with caplog.at_level("INFO", logger="entitynet"):  # the demo fixture's -q leaves "entitynet" at WARNING
        trainer.train(tiny(demo_run, tmp_path / "bpe", "max_steps=1", "model.tokenizer_rows=5"))
    assert "trained on 5 of" in caplog.text
    # a pretrained tokenizer by folder: used as it is (no BPE trained), its ids in the saved model
    pretrained = tmp_path / "pretrained-tokenizer"
    AutoTokenizer.from_pretrained(tmp_path / "bpe" / "tokenizer").save_pretrained(pretrained)
    trainer.train(tiny(demo_run, tmp_path / "pre", "max_steps=1", f"model.tokenizer={pretrained}",
                       "model.context_length=16"))
    assert not (tmp_path / "pre" / "tokenizer").exists()
    saved = transformers.CLIPModel.from_pretrained(tmp_path / "pre" / "model")
    assert saved.config.text_config.max_position_embeddings == 16
    assert AutoTokenizer.from_pretrained(tmp_path / "pre" / "model").model_max_length == 16


def test_a_tokenizer_left_in_output_by_another_run_is_never_reused(demo_run, tmp_path, caplog):
    """issue 17, item 4: a run on another dataset failed after making OUTPUT/tokenizer (270 tokens);
    the next run in the same folder trained with it instead of its own."""
    import shutil

    from transformers import AutoTokenizer

    other = tmp_path / "other-dataset"
    shutil.copytree(demo_run / "dataset", other)
    out = tmp_path / "out"
    with pytest.raises(trainer.DataError):  # fails after its tokenizer was made: no checkpoint
        trainer.train(load_train_config("tiny", [f"dataset={other}", f"output_dir={out}", "model.vocab_size=270",
                                                 "batch_size=100000"]))
    assert (out / "tokenizer" / "tokenizer.json").exists() and not (out / "checkpoints").exists()
    with caplog.at_level("WARNING"):
        trainer.train(tiny(demo_run, out, "max_steps=1", "checkpoint_every=1"))
    assert "dataset, model.vocab_size differ" in caplog.text and "training a new one" in caplog.text
    trainer.train(tiny(demo_run, tmp_path / "fresh", "max_steps=1"))
    made = AutoTokenizer.from_pretrained(out / "model")
    assert len(made) == len(AutoTokenizer.from_pretrained(tmp_path / "fresh" / "model")) > 270
    assert made.get_vocab() == AutoTokenizer.from_pretrained(tmp_path / "fresh" / "model").get_vocab()
    # once checkpoints were trained with it, another sample is refused and nothing is touched
    before = {path.name: path.read_bytes() for path in (out / "tokenizer").iterdir()}
    # (the checkpoint's experiment is checked first: it names every key that differs, not only the tokenizer's)
    with pytest.raises(trainer.ResumeMismatch, match=r"another configuration \(model.tokenizer_rows differ\)"):
        trainer.train(tiny(demo_run, out, "max_steps=2", "model.tokenizer_rows=5"))
    assert {path.name: path.read_bytes() for path in (out / "tokenizer").iterdir()} == before
    trainer.train(tiny(demo_run, out, "max_steps=2", "checkpoint_every=1"))  # the same sample: reused, resumed
    assert {path.name: path.read_bytes() for path in (out / "tokenizer").iterdir()} == before
    # a tokenizer folder without its record (an older version's, or one put there by hand) is not taken either
    (out / "tokenizer" / "entitynet_tokenizer.json").unlink()
    with pytest.raises(trainer.ResumeMismatch, match="no entitynet_tokenizer.json"):
        trainer.train(tiny(demo_run, out, "max_steps=3"))
    assert trainer.main(["--config", "tiny", "--dataset", str(demo_run / "dataset"), "--output-dir", str(out),
                         "--max-steps", "3"]) == 1


def test_the_tokenizer_record_names_a_dataset_in_the_output_relative_to_it(tmp_path):
    from entitynet.training.tokenizer_record import dataset_identity, differences, made_from

    run = tmp_path / "run"
    (run / "dataset").mkdir(parents=True)
    assert dataset_identity(str(run / "dataset"), str(run)) == "dataset"  # a moved run directory: the same
    assert dataset_identity(str(run / "dataset"), str(tmp_path / "elsewhere")) == str((run / "dataset").resolve())
    assert dataset_identity("org/name", str(run)) == "org/name"  # a Hub id
    config = load_train_config("tiny", [f"dataset={run / 'dataset'}", f"output_dir={run}"])
    streamed, mapped = made_from(config, 100, True), made_from(config, 100, False)
    assert differences(streamed, mapped) == ["sample", "shuffle_buffer"]
    changed = load_train_config("tiny", [f"dataset={run / 'dataset'}", f"output_dir={run}", "text.alt_text=0.9", "seed=3"])
    assert differences(mapped, made_from(changed, 100, False)) == ["seed", "text.alt_text"]
    assert differences(mapped, made_from(config, 101, False)) == ["train_rows"]
    # a folder put there by hand, even without tokenizer.json, is refused rather than replaced
    by_hand = run / "tokenizer"
    by_hand.mkdir()
    (by_hand / "vocab.json").write_text("{}")
    with pytest.raises(trainer.TokenizerMismatch, match="no entitynet_tokenizer.json"):
        trainer.tokenizer_to_make(by_hand, mapped, None)
    assert trainer.tokenizer_to_make(run / "absent", mapped, None)


def test_gradient_checkpointing_changes_memory_not_results(demo_run, tmp_path):
    steps = ["max_steps=2", "log_every=1", "checkpoint_every=2"]
    trainer.train(tiny(demo_run, tmp_path / "plain", *steps))
    trainer.train(tiny(demo_run, tmp_path / "checkpointed", "model.gradient_checkpointing=true", *steps))
    for a, b in zip(metrics(tmp_path / "plain"), metrics(tmp_path / "checkpointed")):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["grad_norm"] - b["grad_norm"]) / a["grad_norm"] < 1e-4


def test_process_group_timeout_and_trackers(demo_run, tmp_path, monkeypatch):
    import accelerate.utils

    seen = {}
    original = trainer.Accelerator

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "Accelerator", recording)
    trainer.train(tiny(demo_run, tmp_path / "out", "max_steps=1", "process_group_timeout=90"))
    (handler,) = seen["kwargs_handlers"]
    assert handler.timeout.total_seconds() == 90 * 60
    assert seen["dynamo_plugin"] is None  # torch.compile is off unless asked for
    config = tiny(demo_run, tmp_path / "compiled", "model.compile=true")
    trainer.make_accelerator(config)
    assert seen["dynamo_plugin"].backend.value.lower() == "inductor"
    monkeypatch.setattr(accelerate.utils, "is_tensorboard_available", lambda: False)
    with pytest.raises(ConfigError, match="report_to: tensorboard requested but not installed"):
        trainer.train(tiny(demo_run, tmp_path / "tb", "max_steps=1", "report_to=[tensorboard]"))


def test_the_trainers_flags_are_declared_on_the_options_they_set():
    """The trainer's command is made as entitynet's stage commands are: each flag declared once, on
    its TrainConfig option (``option(..., flag=...)``), with the spelling and values it always had."""
    from entitynet.train_config import TrainConfig
    from entitynet.typed_config import flag_values, flags

    assert {flag.name: flag.key for flag in flags(TrainConfig)} == {
        "--dataset": "dataset", "--output-dir": "output_dir", "--init-from": "model.init_from",
        "--max-steps": "max_steps", "--report-to": "report_to", "--repo": "repo_id", "--dataset-id": "dataset_id"}
    parser = trainer.build_parser()
    given = flag_values(parser.parse_args(["--dataset", "D", "--output-dir", "O", "--max-steps", "3", "--init-from", "M",
                                           "--repo", "me/clip", "--dataset-id", "me/data", "--report-to", "tensorboard,"]))
    config = load_train_config("tiny", ["max_steps=7", "report_to=[wandb]"], given)  # flags come last
    assert (config.dataset, config.output_dir, config.max_steps, config.model.init_from, config.repo_id, config.dataset_id,
            config.report_to) == ("D", "O", 3, "M", "me/clip", "me/data", ["tensorboard"])
    none = flag_values(parser.parse_args(["--report-to", ""]))  # "" turns the trackers off, as it always did
    assert none["--report-to"] == ("report_to", []) and none["--dataset"] == ("dataset", None)
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-steps", "many"])
    with pytest.raises(ConfigError, match="--max-steps: max_steps"):
        load_train_config("tiny", [], flag_values(parser.parse_args(["--dataset", "D", "--output-dir", "O",
                                                                     "--max-steps", "0"])))


def test_bad_configs_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match="batch_size"):
        load_train_config("tiny", ["dataset=x", f"output_dir={tmp_path}", "batch_size=1"])
    with pytest.raises(ConfigError, match="dataset"):
        load_train_config("tiny", [f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="no such file, nor a shipped training config"):
        load_train_config("nonexistent-preset", [])
    assert trainer.main(["--config", "tiny", "--output-dir", str(tmp_path), "--set", "model.preset=vit-x"]) == 2
