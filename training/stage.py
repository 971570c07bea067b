"""`entitynet run`'s train stage: the trainer on RUN/dataset, in this process (one device, or every
process of an ``accelerate launch entitynet run ...``), writing RUN/model, RUN/checkpoints and
RUN/logs/metrics.jsonl. The stage's fingerprint is the trainer's experiment plus its length and
evaluation; a rerun after a crash or kill -9 resumes from the newest checkpoint.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from entitynet import layout
from entitynet.config import Config
from entitynet.rundir import Context, RunDir, StageError, shown
from entitynet.train_config import run_train_config as train_config


class TrainingFailed(StageError):
    """The dataset cannot feed training, or the checkpoints belong to another experiment."""


def check(config: Config, run_dir: RunDir) -> None:
    """Before any stage runs: the trainer's configuration loads, and what it names on the Hub can
    be had (offline: it is in the cache), so a run does not crawl for hours to fail at training."""
    settings = train_config(config, run_dir)
    wanted = {"model.init_from": (settings.model.init_from, "config.json"),
              "model.tokenizer": (settings.model.tokenizer, "tokenizer_config.json")}
    for key, (name, file) in wanted.items():
        if name and not hub_file_available(name, file):
            raise TrainingFailed(
                f"train: {key} {name} is neither a folder nor in the Hub cache, and HF_HUB_OFFLINE is set; "
                f"download it once with internet (hf download {name}) or name a local folder")
    check_replay_sources(settings)


def check_replay_sources(settings: Any) -> None:
    """``train.mix``: each replay dataset is found and can feed training (as the trainer will find
    it), before the crawl and the download rather than after them."""
    from entitynet.training.sources import DatasetProblem, resolve

    for index, entry in enumerate(settings.mix):
        try:
            resolve(entry.dataset, entry.config or settings.dataset_config, "train")
        except DatasetProblem as error:
            raise TrainingFailed(f"train: mix[{index}] ({entry.dataset}): {error}") from None


def hub_file_available(name: str, file: str) -> bool:
    """A local folder, or a Hub repository: online it will be fetched; offline it must be cached."""
    from huggingface_hub import constants, try_to_load_from_cache

    if Path(name).exists() or not constants.HF_HUB_OFFLINE:
        return True
    return isinstance(try_to_load_from_cache(name, file), str)


def settings(config: Config, context: Context) -> dict[str, Any]:
    # the dataset and output are RUN's own: a run directory that moved is the same experiment
    placed = replace(train_config(config, context.run_dir), dataset=layout.DATASET, output_dir=".")
    return {"train": placed}


def make(config: Config, context: Context) -> dict[str, Any]:
    from entitynet.training import train as trainer

    try:
        outcome = trainer.train(train_config(config, context.run_dir))
    except (trainer.DataError, trainer.ResumeMismatch) as error:
        raise TrainingFailed(f"train: {error}") from None
    history = outcome["history"]
    return {"steps": outcome["step"], "processes": outcome["processes"], "model": layout.MODEL,
            "loss_first": history[0]["loss"] if history else None, "loss_last": history[-1]["loss"] if history else None,
            "final_eval": {k: v for k, v in outcome["metrics"].items() if isinstance(v, (int, float)) or v is None},
            # wise_ft.alphas: each ensemble's top-1 on the final evaluation's split (RUN/wise-ft/scores.json has the rest)
            "wise_ft": {f"{alpha:g}": metrics.get("acc1") for alpha, metrics in outcome.get("wise_ft", {}).items()}}


def discard(config: Config, run_dir: RunDir) -> None:
    """--force trains from scratch: the checkpoints (the trainer would resume from them, or refuse
    those of another experiment), the metrics log, the trained tokenizer go; so do a LoRA adapter
    and the WiSE-FT ensembles of the model it replaces, when they hold only what the trainer wrote
    (and the ensembles are not the model the finetune starts from)."""
    from entitynet.training.outputs import remove_own_adapter, remove_own_wise_ft

    for folder in (layout.CHECKPOINTS, layout.TRAIN_LOGS, layout.TOKENIZER):
        shutil.rmtree(run_dir.path(folder), ignore_errors=True)
    remove_own_adapter(run_dir.path(layout.ADAPTER), "train --force retrains the model it adapted")
    remove_own_wise_ft(run_dir.path(layout.WISE_FT), config.train.model.init_from,
                       "train --force retrains the model they interpolated")


def summary(stats: dict[str, Any]) -> str:
    loss = ""
    if stats.get("loss_first") is not None:
        loss = f", loss {stats['loss_first']:.3f} -> {stats['loss_last']:.3f}"
    processes = f" on {stats['processes']} processes" if stats.get("processes", 1) > 1 else ""
    ensembles = stats.get("wise_ft") or {}
    wise_ft = "" if not ensembles else "; WiSE-FT top-1: " + ", ".join(
        f"alpha {alpha} {'-' if acc1 is None else f'{acc1:.3f}'}" for alpha, acc1 in ensembles.items())
    return f"  {stats.get('steps', 0)} steps{processes}{loss}; the model: {shown(str(stats.get('model')))}{wise_ft}"
