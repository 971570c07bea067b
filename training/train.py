"""Train CLIP on an EntityNet dataset with Accelerate, the paper's way.

    accelerate launch -m entitynet.training.train --config livingthings-vit-b-32 \\
        --dataset runs/living/dataset --output-dir runs/living/clip
    python -m entitynet.training.train --config tiny --dataset entitynet-demo/dataset --output-dir clip-demo

Device, processes and precision come from Accelerate (``accelerate launch --mixed_precision bf16
--num_processes 8 ...``); nothing here names a device. The step is exact on any number of
processes: the loss of each process's rows against every process's features (gathered with
their gradients), so 8 GPUs x 1,024 and 1 GPU x 8 x 1,024 (``accumulation_steps=8``) take the same
step. A rerun of the same command resumes from the last checkpoint in OUTPUT/checkpoints:
model, optimizer, schedule, RNG states and the position in the data. OUTPUT/logs/metrics.jsonl
has one line per logged step; OUTPUT/model loads with ``CLIPModel.from_pretrained`` and
``pipeline("zero-shot-image-classification", model=...)``, with its card and eval results.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DataLoaderConfiguration, InitProcessGroupKwargs, TorchDynamoPlugin, set_seed
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from entitynet import layout
from entitynet.rundir import apply_umask, write_text_atomic
from entitynet.training import tokenizer_record
from entitynet.training.config import TrainConfig, load_train_config, mix_rows
from entitynet.training.data import TEXT_ONLY, TRAIN_COLUMNS, Collator, MapStyleData, StreamedData
from entitynet.training.evaluation.api import evaluate_built_dataset
from entitynet.training.loss import ClipLoss
from entitynet.training.mix import MixedRows
from entitynet.training.model import (
    PRESETS,
    enable_checkpointing,
    image_processor,
    input_geometry,
    load_pretrained,
    load_tokenizer,
    save,
    scratch_model,
    train_tokenizer,
)
from entitynet.training.model_files import MissingTokenizer, require_vocabulary
from entitynet.training.outputs import remove_own_adapter, remove_own_wise_ft
from entitynet.training.schedule import Schedule
from entitynet.training.sources import DatasetProblem, Source, resolve

# re-exported: the splits' rows and the step's clamp were the trainer's names before they moved
from entitynet.training.splits import STREAMING_ABOVE_BYTES, eval_rows, load_split, map_style_rows, wants_streaming  # noqa: F401
from entitynet.training.step import MAX_LOGIT_SCALE, contrastive_step  # noqa: F401
from entitynet.training.stream import StreamedRows
from entitynet.training.text_mix import training_texts
from entitynet.typed_config import ConfigError, add_flags, describe_text, flag_values, runtime_keys, to_dict

logger = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"
METRICS_FILE = "metrics.jsonl"
# keys a resumed run may change: how it runs (the schema's runtime keys), how long, what is
# evaluated and where results go; anything else would continue a different experiment from these weights
# (model.lora.save_adapter only adds OUTPUT/adapter at the end)
RESUMABLE_CHANGES = (*sorted(runtime_keys(TrainConfig)), "max_steps", "eval", "wise_ft", "repo_id", "output_dir",
                     "model.lora.save_adapter")
# the keys of the experiment that may name a local folder: recorded ``located``, not as spelled
LOCATED = ("dataset", "model.init_from", "model.tokenizer")


class ResumeMismatch(ValueError):
    """OUTPUT holds checkpoints of another configuration."""


class DataError(ValueError):
    """The dataset cannot feed training (too few rows, an unreadable image)."""


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def located(value: Any, output: Path) -> Any:
    """A local path as a checkpoint records it: inside OUTPUT relative to it (a moved or copied
    output folder is the same run), elsewhere absolute, so neither its spelling nor the working
    directory matters; anything else (a Hub id) as it is."""
    if not isinstance(value, str) or not value or not Path(value).exists():
        return value
    path, root = os.path.realpath(value), os.path.realpath(output)
    return os.path.relpath(path, root) if path == root or path.startswith(root + os.sep) else path


def experiment(config: TrainConfig) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed (dotted keys), its paths ``located``."""
    values = {key: value for key, value in _flatten(to_dict(config)).items()
              if not any(key == name or key.startswith(name + ".") for name in RESUMABLE_CHANGES)}
    if not values.get("mix"):  # no replay: absent, as in checkpoints made before mixes existed
        values.pop("mix", None)
    output = Path(config.output_dir)
    values.update({key: located(values[key], output) for key in LOCATED if key in values})
    if "mix" in values:
        values["mix"] = [{**entry, "dataset": located(entry["dataset"], output)} for entry in values["mix"]]
    return values


def check_resumable(saved: dict[str, Any], config: TrainConfig, checkpoint: Path) -> None:
    current = experiment(config)
    changed = sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
    if changed:
        raise ResumeMismatch(
            f"{checkpoint} was made with another configuration ({', '.join(changed)} differ); "
            f"use another --output-dir, or delete {checkpoint.parent} to start over")


def data_plan(config: TrainConfig, processes: int, streaming: bool, rows: Sequence[int] = ()) -> dict[str, Any]:
    """What a checkpoint's position in the data means: the global batch (the rows of one step) and
    how it is cut; streamed, the workers each process's rows are cut for too (their order depends
    on it). Map-style, the order is drawn in the main process, whatever the workers. ``rows``: the
    train split's rows of the dataset and of each replay source (positions are counted in them)."""
    plan: dict[str, Any] = {"global_batch": config.batch_size * processes * config.accumulation_steps,
                            "batch_size": config.batch_size, "processes": processes,
                            "accumulation_steps": config.accumulation_steps, "streaming": streaming}
    if rows:
        plan["rows"] = list(rows)
    if streaming:
        plan["num_workers"] = config.num_workers
    if config.mix:  # a replay's place in its epochs is counted in the batches of these shares
        plan["mix"] = [{"dataset": entry.dataset, "config": entry.config, "weight": entry.weight}
                       for entry in config.mix]
        plan["mix_rows"] = mix_rows(config.batch_size, config.mix)
    return plan


def _batch_text(plan: dict[str, Any]) -> str:
    processes, steps = plan["processes"], plan["accumulation_steps"]
    return (f"{plan['global_batch']} ({plan['batch_size']} per process x {processes} process"
            f"{'es' if processes != 1 else ''} x {steps} accumulation step{'s' if steps != 1 else ''})")


def check_data_plan(saved: dict[str, Any], current: dict[str, Any], checkpoint: Path) -> None:
    """Refuse a resume whose position in the data would not be the checkpoint's: another global
    batch (another number of processes), streamed or not, or another number of streaming workers."""
    again = "or start a new run with another --output-dir"
    if saved["global_batch"] != current["global_batch"] or saved["processes"] != current["processes"]:
        raise ResumeMismatch(
            f"{checkpoint} was made with a global batch of {_batch_text(saved)}, and its place in the data is "
            f"counted in such steps; this launch makes {_batch_text(current)}: resume it on {saved['processes']} "
            f"process{'es' if saved['processes'] != 1 else ''}, {again}")
    if saved["streaming"] != current["streaming"]:
        was, now = ("streamed", "map-style") if saved["streaming"] else ("map-style", "streamed")
        raise ResumeMismatch(f"{checkpoint} read its data {was}, this run would read it {now} (another order): "
                             f"resume with streaming={str(saved['streaming']).lower()}, {again}")
    if saved.get("mix_rows") != current.get("mix_rows"):
        raise ResumeMismatch(
            f"{checkpoint} drew {_mix_text(saved)} rows per process per batch, this run would draw "
            f"{_mix_text(current)} (another place in the replay sources): resume with the checkpoint's mix, {again}")
    if "rows" in saved and "rows" in current and saved["rows"] != current["rows"]:
        names = ["the dataset", *(f"mix[{n}]" for n in range(len(current["rows"]) - 1))]
        changed = ", ".join(f"{name}: {was} then, {now} now" for name, was, now in
                            zip(names, saved["rows"], current["rows"]) if was != now) or \
            f"{len(saved['rows'])} sources then, {len(current['rows'])} now"
        raise ResumeMismatch(
            f"{checkpoint} was trained on train splits of other sizes ({changed}); its place in them would be other "
            f"rows: restore the data it was trained on, {again}")
    if saved["streaming"] and max(1, saved["num_workers"]) != max(1, current["num_workers"]):
        raise ResumeMismatch(
            f"{checkpoint} streamed its data in an order cut for num_workers={saved['num_workers']} per process; with "
            f"num_workers={current['num_workers']} some rows would be read twice and others never: resume with "
            f"num_workers={saved['num_workers']}, {again}")


def _mix_text(plan: dict[str, Any]) -> str:
    rows = plan.get("mix_rows")
    return " + ".join(map(str, rows)) + " (main + replay)" if rows else "only main-dataset"


def resumed_position(saved: dict[str, Any], plan: dict[str, Any], checkpoint: Path) -> dict[str, int]:
    """(step, epoch, batches this process consumed in the epoch) from a checkpoint's state, whose
    position is in global rows; one made before checkpoints recorded their data plan is refused."""
    if "data" not in saved:
        raise ResumeMismatch(f"{checkpoint} was made by an earlier version (no data plan recorded), which this one "
                             "does not resume: train into another output folder, or remove its checkpoints/")
    check_data_plan(saved["data"], plan, checkpoint)
    rows_per_batch = plan["batch_size"] * plan["processes"]
    return {"step": saved["step"], "epoch": saved["epoch"], "batch_in_epoch": saved["rows_in_epoch"] // rows_per_batch}


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (its state file is written last)."""
    done = sorted(p for p in folder.glob("step-*") if (p / STATE_FILE).exists())
    return done[-1] if done else None


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's rule: decay every weight matrix and embedding; never biases, norms (1-d) or the
    temperature."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        exempt = parameter.ndim < 2 or "logit_scale" in name or name.endswith(".bias")
        (no_decay if exempt else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_accelerator(config: TrainConfig) -> Accelerator:
    trackers = list(config.report_to)
    missing = [name for name in trackers if not _tracker_available(name)]
    if missing:
        raise ConfigError(f"report_to: {', '.join(missing)} requested but not installed (pip install {' '.join(missing)})")
    return Accelerator(
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(minutes=config.process_group_timeout))],
        log_with=trackers or None, project_dir=str(Path(config.output_dir) / layout.TRAIN_LOGS),
        dynamo_plugin=TorchDynamoPlugin(backend="inductor") if config.model.compile else None,
    )


def _tracker_available(name: str) -> bool:
    import accelerate.utils

    check = getattr(accelerate.utils, f"is_{name}_available", None)
    return bool(check and check())


def text_sample(config: TrainConfig, source: Source, rows: datasets.Dataset | None) -> list[dict[str, Any]]:
    """A seeded sample of at most ``model.tokenizer_rows`` rows' texts (no images read from parquet)."""
    count = min(source.rows, config.model.tokenizer_rows)
    if rows is not None:
        chosen = sorted(random.Random(config.seed).sample(range(len(rows)), min(count, len(rows))))
        return list(rows.select_columns(list(TEXT_ONLY)).select(chosen))
    stream = StreamedRows(source, TEXT_ONLY, 1, config.seed, 0, 1, 1, config.shuffle_buffer)
    return [row for row, _ in zip(stream, range(count))]


class TokenizerMismatch(ResumeMismatch):
    """OUTPUT/tokenizer was made from another sample than this run's, or its origin is unknown."""


def prepare_tokenizer(config: TrainConfig, accelerator: Accelerator, source: Source,
                      rows: datasets.Dataset | None) -> PreTrainedTokenizerBase:
    """A pretrained tokenizer, or a BPE trained once by the main process on a seeded sample of the
    training texts and saved with a record of what it was made from, so resumes and every process
    agree and no other experiment takes it."""
    if config.model.tokenizer:
        return load_tokenizer(config.model.tokenizer, config.model.context_length)
    output = Path(config.output_dir)
    folder = output / layout.TOKENIZER
    wanted = tokenizer_record.made_from(config, source.rows, rows is None)
    # every process decides on the same files; only a refusal or "make" differs from reuse, and the
    # main process changes nothing before the others have read them in a refusing case
    make = tokenizer_to_make(folder, wanted, latest_checkpoint(output / layout.CHECKPOINTS))
    if accelerator.is_main_process and make:
        sample = text_sample(config, source, rows)
        tokenizer = train_tokenizer(training_texts(sample, config.text), config.model.vocab_size,
                                    config.model.context_length)
        partial = folder.with_name("tokenizer.partial")
        shutil.rmtree(partial, ignore_errors=True)
        tokenizer.save_pretrained(partial)
        tokenizer_record.write(partial, wanted, len(tokenizer), len(sample))
        # a folder there is ours (it has a record) from a run that saved no checkpoint; renamed aside first,
        # so a process still deciding sees the old folder, none, or the new one, never a half-deleted one
        replaced = folder.with_name("tokenizer.replaced")
        shutil.rmtree(replaced, ignore_errors=True)
        if folder.exists():
            folder.rename(replaced)
        partial.rename(folder)
        shutil.rmtree(replaced, ignore_errors=True)
        logger.info("tokenizer: byte-level BPE of %d tokens trained on %d of %d rows' texts", len(tokenizer),
                    len(sample), source.rows)
    accelerator.wait_for_everyone()
    return PreTrainedTokenizerFast.from_pretrained(folder)


def tokenizer_to_make(folder: Path, wanted: dict[str, Any], checkpoint: Path | None) -> bool:
    """Whether OUTPUT/tokenizer must be trained (absent, or ours from a run that saved no checkpoint
    and was made from another sample); False: reuse it. Refuses a tokenizer without a record, and
    one of another sample that checkpoints were trained with."""
    if not folder.exists():
        return True
    start_over = f"delete {folder}" + (f" and {checkpoint.parent}" if checkpoint else "") + " to start over"
    saved = tokenizer_record.read(folder)
    if saved is None:
        raise TokenizerMismatch(
            f"{folder} has no {layout.TOKENIZER_RECORD} saying what it was made from (made by an older version or "
            f"by hand), so it cannot be checked against this run; {start_over}, or use another --output-dir "
            "(a tokenizer of your own: set model.tokenizer to its folder)")
    changed = tokenizer_record.differences(saved, wanted)
    if not changed:
        return False
    if checkpoint is not None:
        raise TokenizerMismatch(
            f"{folder} was made from another sample ({', '.join(changed)} differ) and {checkpoint} was trained with "
            f"it; use another --output-dir, or {start_over} (entitynet run: --from train --force)")
    logger.warning("%s was made from another sample (%s differ) by a run that saved no checkpoint; training a new one",
                   folder, ", ".join(changed))
    return True


def build_model(config: TrainConfig, accelerator: Accelerator, source: Source,
                rows: datasets.Dataset | None) -> tuple[Any, Any, Any, int]:
    """(model, tokenizer, image processor, context length); with ``model.lora``, the pretrained
    model wrapped with its adapters (a PeftModel: only they train)."""
    if config.model.init_from:
        model, tokenizer, processor = load_pretrained(config.model.init_from)
        try:  # a local folder's files were checked with the configuration; a Hub repo's only now
            require_vocabulary(tokenizer, config.model.init_from)
        except MissingTokenizer as error:
            raise ConfigError(f"model.init_from: {error}") from None
        context_length = min(config.model.context_length, model.config.text_config.max_position_embeddings)
    else:
        tokenizer = prepare_tokenizer(config, accelerator, source, rows)
        context_length = config.model.context_length
        set_seed(config.seed)  # the same initial weights on every process and every resume
        model = scratch_model(config.model.preset, tokenizer, context_length, config.model.activation)
        processor = image_processor(PRESETS[config.model.preset].image_size)
    tokenizer.model_max_length = context_length
    if config.model.gradient_checkpointing:
        enable_checkpointing(model)
    if config.model.lora is not None:  # before the optimizer, which takes the trainable parameters only
        from entitynet.training import lora

        set_seed(config.seed)  # the same initial adapters on every process and every resume
        model = lora.wrap(model, config.model.lora, str(config.model.init_from))
    return model, tokenizer, processor, context_length


class MetricsLog:
    """OUTPUT/logs/metrics.jsonl, one JSON object per logged step, written by the main process.
    A resumed run first drops the lines of steps after its checkpoint, which it will redo."""

    def __init__(self, path: Path, active: bool, resumed_at: int) -> None:
        self.path, self.active = path, active
        if not active:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= resumed_at]
            write_text_atomic(path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any], replace_step: bool = False) -> None:
        """Append ``record``; with ``replace_step``, instead of any line already there for its step."""
        if not self.active:
            return
        if replace_step and self.path.exists():
            lines = [line for line in self.path.read_text().splitlines()
                     if line and json.loads(line)["step"] != record["step"]]
            write_text_atomic(self.path, "".join(line + "\n" for line in [*lines, json.dumps(record)]))
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


class Throughput:
    """Images per second and the share of time spent waiting for data, between two logs."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started, self.waiting, self.images = time.perf_counter(), 0.0, 0

    def read(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        numbers = {"images_per_s": self.images / elapsed, "data_wait_share": self.waiting / elapsed}
        self.reset()
        return numbers


def _take(iterator: Iterator[Any], count: int, clock: Throughput) -> list[Any]:
    started = time.perf_counter()
    group = []
    for batch in iterator:
        group.append(batch)
        if len(group) == count:
            break
    clock.waiting += time.perf_counter() - started
    return group


def check_not_extending_a_finished_schedule(saved: Schedule, step: int, max_steps: int, checkpoint: Path,
                                            output: Path) -> None:
    """A run whose schedule reached its end (rate 0) cannot be extended: every further step would train
    at rate 0. Refused before anything is loaded, with the way on."""
    if max_steps > step and saved.factor(step) == 0:
        raise ResumeMismatch(
            f"{checkpoint} finished its learning-rate schedule at step {step} (rate 0): with max_steps {max_steps} "
            f"every further step would train at rate 0. To train more, start a new run from its model "
            f"(--init-from {output / layout.MODEL} --output-dir NEW, with its own warm-up and schedule), or a new "
            f"run with more steps from scratch (entitynet run: --from train --force)")


@dataclass
class Training:
    """What ``setup`` makes for the loop and its hooks: the prepared model, optimizer and data, and
    the run's position, schedule and log records (which ``resume`` sets from a checkpoint)."""

    config: TrainConfig
    accelerator: Accelerator
    model: Any  # prepared: wrapped for data parallelism on several processes
    unwrapped: Any  # the CLIPModel itself: its temperature, evaluation and saving
    tokenizer: Any
    processor: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    optimizer: torch.optim.Optimizer
    data: MapStyleData | StreamedData
    loss_fn: ClipLoss
    plan: dict[str, Any]  # the data plan a checkpoint records (data_plan)
    schedule: Schedule
    state: dict[str, Any] = field(default_factory=lambda: {"step": 0, "epoch": 0, "batch_in_epoch": 0})
    last_record: dict[str, Any] = field(default_factory=dict)  # the last step's line, written after the final evaluation
    metrics_log: MetricsLog | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    evaluated: dict[tuple[int, str], dict[str, float]] = field(default_factory=dict)
    lora: dict[str, Any] | None = None  # model.lora: its settings and parameter counts (lora.summary), for the card

    def log(self, record: dict[str, Any], replace_step: bool = False) -> None:
        """A record into OUTPUT/logs/metrics.jsonl and Accelerate's trackers."""
        assert self.metrics_log is not None  # start_logs runs before the first step
        self.metrics_log.write(record, replace_step=replace_step)
        self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])


def train(config: TrainConfig) -> dict[str, Any]:
    """Train (or resume) ``config``'s experiment to ``max_steps``, evaluate and save OUTPUT/model.
    Returns the step reached, the final metrics, the logged history, whether this is the main
    process and the number of processes."""
    try:
        training, checkpoint, recorded = setup(config)
        if checkpoint and recorded:
            resume(training, checkpoint, recorded)
        start_logs(training)
        loop(training)
        return conclude(training)
    except DatasetProblem as error:  # a row found unfit while reading (a tar sample without text)
        raise DataError(_one_line(error)) from None


def _one_line(error: DatasetProblem) -> str:
    """A data loader worker's exception comes back as the same class with the worker's traceback in
    its message; its last line is the message raised."""
    return str(error).strip().splitlines()[-1].split("DatasetProblem: ", 1)[-1]


def setup(config: TrainConfig) -> tuple[Training, Path | None, dict[str, Any] | None]:
    """Everything before the first step, and the checkpoint to resume from with its recorded state
    (its experiment already checked, before the tokenizer or the model is made)."""
    accelerator = make_accelerator(config)
    refuse_wise_ft_out(config)
    set_seed(config.seed)
    try:
        source = resolve(config.dataset, config.dataset_config, "train")
    except DatasetProblem as error:
        raise DataError(str(error)) from None
    replays = replay_sources(config)
    streaming = wants_streaming(config, source)
    if replays and not streaming:  # never silently: alone, this dataset would be read map-style
        logger.info("streaming %s as well: a mix is always streamed (exact shares of every batch and an exact resume "
                    "come from position arithmetic); alone it would be read map-style", config.dataset)
        streaming = True
    checkpoint = latest_checkpoint(Path(config.output_dir) / layout.CHECKPOINTS)
    recorded = json.loads((checkpoint / STATE_FILE).read_text()) if checkpoint else None
    if checkpoint and recorded:  # the experiment's own keys name what changed
        check_resumable(recorded["experiment"], config, checkpoint)
    rows = None if streaming else map_style_rows(config)
    model, tokenizer, processor, context_length = build_model(config, accelerator, source, rows)
    image_size, mean, std = input_geometry(processor)
    collator = Collator(tokenizer, config.text, config.augment, image_size, config.seed, context_length)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.optimizer.weight_decay),
                                  lr=config.optimizer.learning_rate, betas=tuple(config.optimizer.betas),
                                  eps=config.optimizer.eps)
    model, optimizer, data = prepare_data(config, accelerator, source, rows, collator, model, optimizer, replays)
    schedule = Schedule(config.optimizer.warmup_steps, config.max_steps)
    if config.max_steps <= config.optimizer.warmup_steps:
        logger.warning("max_steps (%d) ends inside the warm-up (optimizer.warmup_steps %d): the learning rate only "
                       "rises, the run ends at %.0f%% of the peak rate and never decays; lower warmup_steps or raise "
                       "max_steps", config.max_steps, config.optimizer.warmup_steps,
                       100 * schedule.factor(config.max_steps - 1))
    unwrapped = accelerator.unwrap_model(model)
    training = Training(config=config, accelerator=accelerator, model=model, unwrapped=unwrapped,
                        tokenizer=tokenizer, processor=processor, mean=mean, std=std, optimizer=optimizer, data=data,
                        loss_fn=ClipLoss(accelerator.process_index, accelerator.num_processes),
                        plan=data_plan(config, accelerator.num_processes, streaming,
                                       [source.rows, *(replay.rows for replay in replays)]), schedule=schedule)
    if config.model.lora is not None:
        from entitynet.training import lora

        training.lora = lora.summary(unwrapped, config.model.lora)
        logger.info("LoRA: %s", lora.describe(training.lora))
    return training, checkpoint, recorded


def replay_sources(config: TrainConfig) -> list[Source]:
    """The train splits of ``mix``'s datasets, each found and checked like the main one; a problem
    names the entry."""
    found = []
    for index, entry in enumerate(config.mix):
        try:
            found.append(resolve(entry.dataset, entry.config or config.dataset_config, "train"))
        except DatasetProblem as error:
            raise DataError(f"mix[{index}] ({entry.dataset}): {error}") from None
    return found


def prepare_data(config: TrainConfig, accelerator: Accelerator, source: Source, rows: datasets.Dataset | None,
                 collator: Collator, model: Any, optimizer: torch.optim.Optimizer, replays: Sequence[Source] = ()
                 ) -> tuple[Any, torch.optim.Optimizer, MapStyleData | StreamedData]:
    """The model and optimizer prepared by Accelerate, with the batches of the train split: streamed
    (``rows`` None), mixed with ``replays`` (streamed) or map-style; refused when one step needs more
    rows than an epoch has."""
    if replays:
        return prepare_mix(config, accelerator, [source, *replays], collator, model, optimizer)
    if rows is None:
        stream = StreamedRows(source, TRAIN_COLUMNS, config.batch_size, config.seed, accelerator.process_index,
                              accelerator.num_processes, config.num_workers, config.shuffle_buffer)
        loader = DataLoader(stream, batch_size=config.batch_size, collate_fn=collator, num_workers=config.num_workers,
                            drop_last=True, pin_memory=accelerator.device.type == "cuda")
        model, optimizer = accelerator.prepare(model, optimizer)
        data: MapStyleData | StreamedData = StreamedData(stream, loader, collator, accelerator.device)
        logger.info("streaming %d rows from %d files (%d units) of %s; %d batches per process per epoch",
                    source.rows, len(source.files), len(source.units), config.dataset, data.batches_per_epoch())
    else:
        loader = DataLoader(rows, batch_size=config.batch_size, shuffle=True, drop_last=True, collate_fn=collator,
                            num_workers=config.num_workers, generator=torch.Generator().manual_seed(config.seed))
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        data = MapStyleData(rows, loader, collator, accelerator)
    if data.batches_per_epoch() < config.accumulation_steps:
        raise DataError(
            f"{config.dataset}: the train split has {source.rows} rows, fewer than one step of {config.batch_size} x "
            f"{config.accumulation_steps} accumulation steps x {accelerator.num_processes} processes; lower batch_size")
    return model, optimizer, data


def prepare_mix(config: TrainConfig, accelerator: Accelerator, sources: list[Source], collator: Collator, model: Any,
                optimizer: torch.optim.Optimizer) -> tuple[Any, torch.optim.Optimizer, StreamedData]:
    """``prepare_data`` for a mix: one stream yielding each process's batches source share by source
    share, so the loader's batches have the exact composition; refused when a source has less than a
    batch of its share per worker."""
    shares = mix_rows(config.batch_size, config.mix)
    stream = MixedRows(sources, shares, TRAIN_COLUMNS, config.seed, accelerator.process_index,
                       accelerator.num_processes, config.num_workers, config.shuffle_buffer)
    for index, short, rows in stream.short_sources():
        name = config.dataset if index == 0 else f"mix[{index - 1}] ({short.name})"
        raise DataError(
            f"{name}: the train split has {short.rows} rows, fewer than {rows} rows per batch x "
            f"{max(1, config.num_workers)} workers x {accelerator.num_processes} processes; lower its share or "
            f"num_workers")
    loader = DataLoader(stream, batch_size=config.batch_size, collate_fn=collator, num_workers=config.num_workers,
                        drop_last=True, pin_memory=accelerator.device.type == "cuda")
    model, optimizer = accelerator.prepare(model, optimizer)
    data = StreamedData(stream, loader, collator, accelerator.device)
    logger.info("mix: each process's batch of %d rows holds %s; %d batches per process per epoch of %s",
                config.batch_size, ", ".join(
                    [f"{shares[0]} rows of {config.dataset}"]
                    + [f"{rows} of {entry.dataset} (weight {entry.weight:g}; its {replay.source.rows} rows are an "
                       f"epoch every {replay.batches_per_epoch()} batches)"
                       for entry, rows, replay in zip(config.mix, shares[1:], stream.streams[1:])]),
                data.batches_per_epoch(), config.dataset)
    if data.batches_per_epoch() < config.accumulation_steps:
        raise DataError(
            f"{config.dataset}: the train split has {sources[0].rows} rows, fewer than one step of {shares[0]} rows "
            f"(its share of {config.batch_size}) x {config.accumulation_steps} accumulation steps x "
            f"{accelerator.num_processes} processes; lower batch_size")
    return model, optimizer, data


def resume(training: Training, checkpoint: Path, recorded: dict[str, Any]) -> None:
    """Continue from ``checkpoint``: its position (refused first for another global batch or data
    plan, or a finished schedule), the prepared objects' and RNGs' states, its schedule extended
    to ``max_steps`` and the last step's log line it kept."""
    config = training.config
    training.state = resumed_position(recorded, training.plan, checkpoint)
    saved = Schedule(**recorded["schedule"])
    check_not_extending_a_finished_schedule(saved, training.state["step"], config.max_steps, checkpoint,
                                            Path(config.output_dir))
    training.accelerator.load_state(str(checkpoint))
    training.last_record = recorded.get("log", {})
    training.schedule = saved.extended(training.state["step"], config.max_steps)
    logger.info("resuming from %s (step %d)", checkpoint, training.state["step"])


def start_logs(training: Training) -> None:
    """Accelerate's trackers and OUTPUT/logs/metrics.jsonl, cut back to the resumed step."""
    config, accelerator = training.config, training.accelerator
    if config.report_to:
        accelerator.init_trackers("entitynet-clip", config={k: v for k, v in _flatten(to_dict(config)).items()
                                                           if isinstance(v, (int, float, str, bool))})
    training.metrics_log = MetricsLog(Path(config.output_dir) / layout.TRAIN_LOGS / METRICS_FILE,
                                      accelerator.is_main_process, training.state["step"])


def loop(training: Training) -> None:
    """Steps until ``max_steps``, epoch after epoch, each followed by its hooks (``after_step``)."""
    config, state, per_step = training.config, training.state, training.config.accumulation_steps
    clock = Throughput()
    training.model.train()
    while state["step"] < config.max_steps:
        iterator = training.data.batches(state["epoch"], state["batch_in_epoch"])
        while state["step"] < config.max_steps:
            group = _take(iterator, per_step, clock)
            if len(group) < per_step:  # the epoch's end; an incomplete accumulation is left out like drop_last
                break
            lr = config.optimizer.learning_rate * training.schedule.factor(state["step"])
            loss, grad_norm = contrastive_step(
                training.model, group, loss_fn=training.loss_fn, logit_scale=training.unwrapped.logit_scale,
                accelerator=training.accelerator, optimizer=training.optimizer, lr=lr,
                max_grad_norm=config.optimizer.max_grad_norm, mean=training.mean, std=training.std)
            state["step"] += 1
            state["batch_in_epoch"] += per_step
            clock.images += config.batch_size * per_step * training.accelerator.num_processes
            after_step(training, loss, lr, grad_norm, clock)
        if state["step"] < config.max_steps:  # the epoch ran out first
            state["epoch"] += 1
            state["batch_in_epoch"] = 0


def after_step(training: Training, loss: torch.Tensor, lr: float, grad_norm: float, clock: Throughput) -> None:
    """The hooks of a step, in this order: its log line, the periodic evaluation, then the checkpoint."""
    config, step = training.config, training.state["step"]
    record = log_hook(training, loss, lr, grad_norm, clock)
    record = eval_hook(training, record)
    # logged before the checkpoint: a kill in between redoes these steps, whose lines are then dropped
    if record and step < config.max_steps:
        training.log(record)
    elif record:  # the last step's line waits for the final evaluation; the checkpoint keeps it meanwhile
        training.last_record = record
    if step % config.checkpoint_every == 0 or step == config.max_steps:
        checkpoint_hook(training)


def log_hook(training: Training, loss: torch.Tensor, lr: float, grad_norm: float, clock: Throughput) -> dict[str, Any]:
    """Every ``log_every`` steps and at the last: the step's record (the loss averaged over the
    processes), kept in the history and shown by the main process; otherwise nothing."""
    config, accelerator, step = training.config, training.accelerator, training.state["step"]
    if not (step % config.log_every == 0 or step == config.max_steps):
        return {}
    mean_loss = accelerator.reduce(loss, reduction="mean").item()
    record = {"step": step, "epoch": training.state["epoch"], "loss": mean_loss, "lr": lr, "grad_norm": grad_norm,
              "logit_scale": training.unwrapped.logit_scale.exp().item(), **clock.read()}
    training.history.append({"step": step, "loss": mean_loss, "lr": lr})
    if accelerator.is_main_process:
        logger.info("step %d/%d  loss %.4f  lr %.2e  grad norm %.3f  %.1f images/s  data wait %.0f%%",
                    step, config.max_steps, mean_loss, lr, grad_norm, record["images_per_s"],
                    100 * record["data_wait_share"])
    return record


def eval_hook(training: Training, record: dict[str, Any]) -> dict[str, Any]:
    """Every ``eval.every`` steps: ``record`` with the evaluation on ``eval.periodic_split`` added."""
    config, step = training.config, training.state["step"]
    if not (config.eval.every and step % config.eval.every == 0):
        return record
    split = config.eval.periodic_split
    if training.lora is not None and step == config.max_steps and split == config.eval.split:
        return record  # conclude evaluates this split on the merged model, the one it saves
    results = run_eval(training.accelerator, training.unwrapped, training.tokenizer, training.processor, config,
                       step, split)
    training.evaluated[(step, split)] = results
    return {"step": step, **record, **{f"{split}/{k}": v for k, v in results.items()}}


def checkpoint_hook(training: Training) -> None:
    """A checkpoint of this step: the position in global rows, with what they mean (data_plan),
    which a resume reads back per process, and what else a resume needs."""
    config, state, accelerator = training.config, training.state, training.accelerator
    position = {"step": state["step"], "epoch": state["epoch"],
                "rows_in_epoch": state["batch_in_epoch"] * config.batch_size * accelerator.num_processes}
    save_checkpoint(accelerator, Path(config.output_dir) / layout.CHECKPOINTS,
                    {**position, "data": training.plan, "schedule": training.schedule.state(),
                     "log": training.last_record, "experiment": experiment(config)}, config.keep_checkpoints)


def conclude(training: Training) -> dict[str, Any]:
    """The final evaluation on ``eval.split`` (unless this step just had it), the last log line,
    OUTPUT/model with its card (main process), the trackers closed; ``train``'s result."""
    config, accelerator, step = training.config, training.accelerator, training.state["step"]
    if config.model.lora is not None:  # the final evaluation and OUTPUT/model are of the merged model
        training.unwrapped = merge_lora(training)
    metrics = training.evaluated.get((step, config.eval.split)) or run_eval(
        accelerator, training.unwrapped, training.tokenizer, training.processor, config, step, config.eval.split)
    final = {"step": step, **training.last_record, **{f"{config.eval.split}/{k}": v for k, v in metrics.items()}}
    training.log(final, replace_step=True)  # a rerun after a kill here must not log the last step twice
    if accelerator.is_main_process:
        finish(Path(config.output_dir) / layout.MODEL, training.unwrapped, training.tokenizer, training.processor,
               config, metrics, training.history, lora=training.lora)
    accelerator.wait_for_everyone()
    lora_config = config.model.lora
    if accelerator.is_main_process and not (lora_config is not None and lora_config.save_adapter):
        remove_own_adapter(Path(config.output_dir) / layout.ADAPTER, "it adapted an earlier model (no "
                           "model.lora.save_adapter now)")
    wise_ft = wise_ft_at_end(training)
    for tracker in accelerator.trackers:  # not end_training(): the process group outlives train() (`entitynet run` evaluates next)
        tracker.finish()
    return {"step": step, "metrics": metrics, "history": training.history, "main": accelerator.is_main_process,
            "processes": accelerator.num_processes, "wise_ft": wise_ft}


def wise_ft_at_end(training: Training) -> dict[float, dict[str, Any]]:
    """``wise_ft.alphas``: the main process writes OUTPUT/wise-ft/alpha-<a>, (1 - a) * model.init_from
    + a * OUTPUT/model, with ``entitynet wise-ft``'s code (one CLIPModel folder each, with the
    finetune's tokenizer and processor); then every process evaluates each on ``eval.split`` as the
    final evaluation did, and OUTPUT/wise-ft/scores.csv, scores.json (and scores.png) put them side
    by side, the command's table with one task, the split. Returns {alpha: metrics}.

    Without alphas, a wise-ft folder of an earlier run goes: it interpolated a model replaced now."""
    from entitynet.training import wise_ft, wise_ft_scores
    from entitynet.training.evaluation.models import load_model

    config, accelerator, step = training.config, training.accelerator, training.state["step"]
    output = Path(config.output_dir)
    out, split = output / layout.WISE_FT, config.eval.split
    if not config.wise_ft.alphas:
        if accelerator.is_main_process:
            remove_own_wise_ft(out, config.model.init_from, "it interpolated an earlier model (wise_ft.alphas is empty)")
        accelerator.wait_for_everyone()
        return {}
    assert config.model.init_from is not None  # the configuration refuses alphas without it
    if accelerator.is_main_process:
        wise_ft.write_ensembles(config.model.init_from, str(output / layout.MODEL), config.wise_ft.alphas, out,
                                force=True, finetuned_context=True)
    accelerator.wait_for_everyone()
    rows = eval_rows(config, split)
    results: dict[float, dict[str, Any]] = {}
    for alpha in config.wise_ft.alphas if rows else ():
        clip = load_model(str(out / wise_ft.folder_name(alpha)))
        clip.model.to(accelerator.device)
        results[alpha] = run_eval(accelerator, clip.model, clip.tokenizer, clip.processor, config, step, split,
                                  rows=rows, label=f"wise-ft {wise_ft.folder_name(alpha)}")
        del clip
    if accelerator.is_main_process and rows:
        table = wise_ft_scores.table({alpha: [{"task_name": split, "metrics": metrics}]
                                      for alpha, metrics in results.items()})
        wise_ft_scores.write(table, out)
    accelerator.wait_for_everyone()
    return results


def refuse_wise_ft_out(config: TrainConfig) -> None:
    """Before training, what would stop the end's WiSE-FT after it: OUTPUT/wise-ft, when there, must be
    the trainer's own (replaced at the end), and must not be, hold or lie in ``model.init_from``."""
    if not config.wise_ft.alphas:
        return
    from entitynet.training.wise_ft import WiseFTError, refuse_out

    inputs = (config.model.init_from,) if config.model.init_from else ()  # the configuration requires it
    try:
        refuse_out(Path(config.output_dir) / layout.WISE_FT, True, inputs)
    except WiseFTError as error:
        raise ConfigError(f"wise_ft.alphas: {error}") from None


def merge_lora(training: Training) -> Any:
    """After the last checkpoint: OUTPUT/adapter first if asked for (main process; the adapter
    exists only until the merge), then the adapters merged into the weights on every process
    (each evaluates its share of the final split with the merged model). Returns the plain CLIPModel."""
    from entitynet.training import lora

    assert training.config.model.lora is not None
    if training.config.model.lora.save_adapter and training.accelerator.is_main_process:
        assert training.lora is not None  # setup summarised the adapters
        lora.save_adapter(training.unwrapped, Path(training.config.output_dir) / layout.ADAPTER, training.lora,
                          str(training.config.model.init_from))
    training.accelerator.wait_for_everyone()
    return lora.merged(training.unwrapped)


def save_checkpoint(accelerator: Accelerator, folder: Path, state: dict[str, Any], keep: int) -> None:
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
        apply_umask(partial)  # save_state's safetensors file is 0600 whatever the umask
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for old in sorted(p for p in folder.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def run_eval(accelerator: Accelerator, model: Any, tokenizer: Any, processor: Any, config: TrainConfig,
             step: int, split: str, rows: list[dict[str, Any]] | None = None, label: str = "") -> dict[str, Any]:
    """Zero-shot classification among the split's entities (``eval.template`` names them) and
    retrieval over its alt texts, with entitynet eval's code and metric names; every process
    embeds its share of the images. ``rows``: the split's sample when already read (``eval_rows``);
    ``label`` names the model in the log line (a WiSE-FT ensemble)."""
    rows = rows if rows is not None else eval_rows(config, split)
    if not rows:
        return {}
    metrics = evaluate_built_dataset(model, tokenizer, processor, rows, templates=("{c}",),
                                     name_format=config.eval.template, accelerator=accelerator)
    if accelerator.is_main_process:
        logger.info("step %d  %s%s: %s", step, f"{label} " if label else "", split, "  ".join(
            f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}" for key, value in metrics.items()))
    return metrics


def finish(folder: Path, model: Any, tokenizer: Any, processor: Any, config: TrainConfig,
           metrics: dict[str, float], history: list[dict[str, float]], lora: dict[str, Any] | None = None) -> None:
    from entitynet.hub_cards.model_card import write_model_card

    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    save(partial, model, tokenizer, processor)
    (partial / "eval_results.json").write_text(json.dumps({"split": config.eval.split, **metrics}, indent=2) + "\n")
    (partial / "training_config.json").write_text(json.dumps(to_dict(config), indent=2) + "\n")
    write_model_card(partial, config, metrics, history, lora=lora)
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
    add_flags(parser, TrainConfig, "")  # declared on the options they set (option(..., flag=...)), as entitynet's
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # accelerate logs every file of every checkpoint at INFO
        logging.getLogger("accelerate").setLevel(logging.WARNING)
    try:
        config = load_train_config(args.config, args.set, flag_values(args))
        result = train(config)
        PartialState().destroy_process_group()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ResumeMismatch, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if result["main"]:
        print(json.dumps({"step": result["step"], **result["metrics"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
