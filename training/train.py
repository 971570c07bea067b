"""Train CLIP on an EntityNet dataset with Accelerate.

    accelerate launch -m entitynet.training.train --config livingthings-vit-b-32 \\
        --dataset runs/living/dataset --output-dir runs/living/clip
    python -m entitynet.training.train --config tiny --dataset entitynet-demo/dataset --output-dir clip-demo

Device, processes and precision come from Accelerate (``accelerate launch --mixed_precision bf16
--num_processes 8 ...``); nothing here names a device. A rerun of the same command resumes from
the last checkpoint in OUTPUT/checkpoints exactly: model, optimizer, scheduler, RNG states and
the position in the data. The end result, OUTPUT/model, loads with ``CLIPModel.from_pretrained``
and ``pipeline("zero-shot-image-classification", model=...)``, with its card and eval results.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerFast

from entitynet.training.config import TrainConfig, load_train_config
from entitynet.training.data import Collator, training_texts
from entitynet.training.loss import clip_loss
from entitynet.training.model import PRESETS, image_processor, load_pretrained, save, scratch_model, train_tokenizer
from entitynet.training.zero_shot import evaluate
from entitynet.typed_config import ConfigError, describe_text, to_dict

logger = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"
MAX_LOGIT_SCALE = math.log(100)
# keys a resumed run may change: how long, how often, where results go; anything else would
# continue a different experiment from these weights
RESUMABLE_CHANGES = ("max_steps", "log_every", "checkpoint_every", "keep_checkpoints", "num_workers", "eval",
                     "repo_id", "output_dir")


class ResumeMismatch(ValueError):
    """OUTPUT holds checkpoints of another configuration."""


def experiment(config: TrainConfig) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed."""
    return {key: value for key, value in to_dict(config).items() if key not in RESUMABLE_CHANGES}


def check_resumable(saved: dict[str, Any], config: TrainConfig, checkpoint: Path) -> None:
    current = experiment(config)
    changed = sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
    if changed:
        raise ResumeMismatch(
            f"{checkpoint} was made with another configuration ({', '.join(changed)} differ); "
            f"use another --output-dir, or delete {checkpoint.parent} to start over")


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (its state file is written last)."""
    done = sorted(p for p in folder.glob("step-*") if (p / STATE_FILE).exists())
    return done[-1] if done else None


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        exempt = parameter.ndim < 2 or "embedding" in name or "logit_scale" in name
        (no_decay if exempt else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(warmup: int, total: int):  # noqa: ANN201 - a LambdaLR factor
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def load_split(config: TrainConfig, split: str) -> datasets.Dataset:
    return datasets.load_dataset(config.dataset, config.dataset_config, split=split)


def prepare_tokenizer(config: TrainConfig, accelerator: Accelerator, rows: datasets.Dataset, context_length: int) -> PreTrainedTokenizerFast:
    """Trained once, by the main process, on the training texts; saved so resumes and ranks agree."""
    folder = Path(config.output_dir) / "tokenizer"
    if accelerator.is_main_process and not (folder / "tokenizer.json").exists():
        texts = rows.select_columns(["alt_texts", "queries", "entities"])
        tokenizer = train_tokenizer(training_texts(texts, config.text), config.model.vocab_size, context_length)
        partial = folder.with_name("tokenizer.partial")
        shutil.rmtree(partial, ignore_errors=True)
        tokenizer.save_pretrained(partial)
        partial.rename(folder)
        logger.info("tokenizer: byte-level BPE of %d tokens trained on %d rows' texts", len(tokenizer), len(rows))
    accelerator.wait_for_everyone()
    return PreTrainedTokenizerFast.from_pretrained(folder)


def train(config: TrainConfig) -> dict[str, Any]:
    output = Path(config.output_dir)
    checkpoints = output / "checkpoints"
    accelerator = Accelerator(dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    set_seed(config.seed)
    rows = load_split(config, "train")

    if config.model.init_from:
        model, tokenizer, processor = load_pretrained(config.model.init_from)
    else:
        preset = PRESETS[config.model.preset]
        tokenizer = prepare_tokenizer(config, accelerator, rows, preset.context_length)
        set_seed(config.seed)  # the same initial weights on every process and every resume
        model = scratch_model(config.model.preset, tokenizer)
        processor = image_processor(preset.image_size)
    max_length = model.config.text_config.max_position_embeddings

    collator = Collator(tokenizer, processor, config.text, config.seed, max_length)
    loader = DataLoader(rows, batch_size=config.batch_size, shuffle=True, drop_last=True, collate_fn=collator,
                        num_workers=config.num_workers, generator=torch.Generator().manual_seed(config.seed))
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.learning_rate)
    # not prepared (a prepared scheduler steps once per process per step) and not registered with
    # accelerate (registered objects are unpickled with weights_only=False): its few numbers travel
    # in our JSON state file instead
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.warmup_steps, config.max_steps))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if len(loader) == 0:
        raise ValueError(f"{config.dataset}: the train split has {len(rows)} rows, fewer than one batch of "
                         f"{config.batch_size} x {accelerator.num_processes} processes; lower batch_size")

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0}
    resume_from = latest_checkpoint(checkpoints)
    if resume_from:
        state = json.loads((resume_from / STATE_FILE).read_text())
        check_resumable(state.pop("experiment"), config, resume_from)
        accelerator.load_state(str(resume_from))
        scheduler.load_state_dict(state.pop("scheduler"))
        logger.info("resuming from %s (step %d)", resume_from, state["step"])
    unwrapped = accelerator.unwrap_model(model)
    history: list[dict[str, float]] = []
    started, seen = time.perf_counter(), 0
    model.train()
    while state["step"] < config.max_steps:
        collator.epoch = state["epoch"]
        loader.set_epoch(state["epoch"])
        batches = accelerator.skip_first_batches(loader, state["batch_in_epoch"]) if state["batch_in_epoch"] else loader
        for batch in batches:
            outputs = model(**batch)
            loss = clip_loss(outputs.image_embeds, outputs.text_embeds, unwrapped.logit_scale, accelerator)
            accelerator.backward(loss)
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                unwrapped.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            state["step"] += 1
            state["batch_in_epoch"] += 1
            seen += len(batch["input_ids"]) * accelerator.num_processes
            if state["step"] % config.log_every == 0 or state["step"] == config.max_steps:
                mean_loss = accelerator.reduce(loss.detach(), reduction="mean").item()
                history.append({"step": state["step"], "loss": mean_loss, "lr": scheduler.get_last_lr()[0]})
                if accelerator.is_main_process:
                        logger.info("step %d/%d  loss %.4f  lr %.2e  %.1f images/s", state["step"], config.max_steps,
                                mean_loss, scheduler.get_last_lr()[0], seen / (time.perf_counter() - started))
            if state["step"] % config.checkpoint_every == 0 or state["step"] == config.max_steps:
                save_checkpoint(accelerator, checkpoints, {**state, "scheduler": scheduler.state_dict(),
                                                           "experiment": experiment(config)}, config.keep_checkpoints)
            if config.eval.every and state["step"] % config.eval.every == 0:
                log_eval(accelerator, unwrapped, tokenizer, processor, config, max_length, state["step"])
            if state["step"] >= config.max_steps:
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0

    metrics = log_eval(accelerator, unwrapped, tokenizer, processor, config, max_length, state["step"])
    if accelerator.is_main_process:
        finish(output / "model", unwrapped, tokenizer, processor, config, metrics, history)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"step": state["step"], "metrics": metrics, "history": history, "main": accelerator.is_main_process}


def save_checkpoint(accelerator: Accelerator, folder: Path, state: dict[str, int], keep: int) -> None:
    """save_state into a temporary folder, the state file last, then rename: a kill -9 at any
    moment leaves the previous checkpoint as the newest complete one."""
    final = folder / f"step-{state['step']:08d}"
    partial = folder / f".partial-step-{state['step']:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / STATE_FILE).write_text(json.dumps(state) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for old in sorted(p for p in folder.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def log_eval(accelerator: Accelerator, model: Any, tokenizer: Any, processor: Any, config: TrainConfig,
             max_length: int, step: int) -> dict[str, float]:
    """Zero-shot metrics on the eval split, computed by the main process (the split is small)."""
    metrics: dict[str, float] = {}
    if accelerator.is_main_process:
        try:
            rows = load_split(config, config.eval.split)
        except ValueError as error:  # the dataset has no such split
            logger.warning("no evaluation: %s", error)
        else:
            rows = rows.select(range(min(len(rows), config.eval.max_images)))
            metrics = evaluate(model, tokenizer, processor, list(rows), config.eval.template, max_length, accelerator.device)
            logger.info("step %d  %s: %s", step, config.eval.split, "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    accelerator.wait_for_everyone()
    return metrics


def finish(folder: Path, model: Any, tokenizer: Any, processor: Any, config: TrainConfig,
           metrics: dict[str, float], history: list[dict[str, float]]) -> None:
    from entitynet.hub_cards.model_card import write_model_card

    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    save(partial, model, tokenizer, processor)
    (partial / "eval_results.json").write_text(json.dumps({"split": config.eval.split, **metrics}, indent=2) + "\n")
    (partial / "training_config.json").write_text(json.dumps(to_dict(config), indent=2) + "\n")
    write_model_card(partial, config, metrics, history)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    logger.info("model saved to %s", folder)


def build_parser() -> argparse.ArgumentParser:
    keys = describe_text(TrainConfig)
    parser = argparse.ArgumentParser(prog="python -m entitynet.training.train", description=__doc__,
                                     epilog=f"configuration keys (YAML, or --set KEY=VALUE):\n{keys}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file, or a shipped one: tiny, livingthings-vit-b-32, entitynet-vit-b-32")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one key (repeatable)")
    parser.add_argument("--dataset", help="dataset folder or Hub id (dataset)")
    parser.add_argument("--output-dir", help="checkpoints and the final model (output_dir)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (max_steps)")
    parser.add_argument("--init-from", help="finetune this CLIPModel id or folder (model.init_from)")
    parser.add_argument("--repo", help="the Hub repository the model card names (repo_id)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # accelerate logs every file of every checkpoint at INFO
        logging.getLogger("accelerate").setLevel(logging.WARNING)
    flags = {"--dataset": ("dataset", args.dataset), "--output-dir": ("output_dir", args.output_dir),
             "--max-steps": ("max_steps", args.max_steps), "--init-from": ("model.init_from", args.init_from),
             "--repo": ("repo_id", args.repo)}
    try:
        config = load_train_config(args.config, args.set, flags)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        result = train(config)
    except ResumeMismatch as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if result["main"]:
        print(json.dumps({"step": result["step"], **result["metrics"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
