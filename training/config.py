"""The trainer's configuration: one YAML file (``--config``, or a shipped ``configs/train/<name>.yaml``)
with ``--set key=value`` overrides, checked before any work, with the same rules and messages as
the stages' configuration (``entitynet.typed_config``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from entitynet.typed_config import ConfigError, Layers, option, require

PRESET_NAMES = ("tiny", "vit-s-32", "vit-b-32", "vit-b-16")


@dataclass
class ModelConfig:
    preset: Literal["tiny", "vit-s-32", "vit-b-32", "vit-b-16"] = option(
        "vit-b-32", "architecture when training from scratch (tiny is for tests and the demo)")
    init_from: str | None = option(
        None, "finetune instead: a CLIPModel id on the Hub or a folder saved with save_pretrained")
    vocab_size: int = option(16_384, "from scratch: size of the byte-level BPE trained on the training texts")

    def __post_init__(self) -> None:
        require(256 + 4 <= self.vocab_size <= 1_000_000, "vocab_size", "must be between 260 and 1,000,000")


@dataclass
class TextConfig:
    alt_text: float = option(0.5, "weight of an alt text as the image's text at a step (the paper: half the time)")
    query: float = option(0.25, "weight of a search query that found the image")
    entity: float = option(0.25, "weight of an entity text made with entity_template")
    entity_template: str = option("a photo of a {name}, a type of {natural_type}.",
                                  "entity text; fields: {name}, {natural_type}, {description}")

    def __post_init__(self) -> None:
        require(min(self.alt_text, self.query, self.entity) >= 0, "alt_text", "weights must not be negative")
        require(self.alt_text + self.query + self.entity > 0, "alt_text", "at least one weight must be positive")
        require("{name}" in self.entity_template, "entity_template", "must contain {name}")


@dataclass
class EvalConfig:
    split: str = option("test", "split for zero-shot classification and retrieval at the end (and every eval_every steps)")
    template: str = option("a photo of a {name}.", "zero-shot class prompt; fields: {name}, {natural_type}")
    every: int = option(0, "evaluate every N steps as well (0: only at the end)")
    max_images: int = option(2_000, "evaluate on at most this many images")

    def __post_init__(self) -> None:
        require(self.every >= 0 and self.max_images >= 1, "every", "must not be negative")
        require("{name}" in self.template, "template", "must contain {name}")


@dataclass
class TrainConfig:
    # dataset and output_dir are relative to the working directory, also in a YAML file: a
    # shipped config must not point into site-packages
    dataset: str = option("", "a dataset folder (RUN/dataset) or Hub id (ORG/NAME)")
    dataset_config: Literal["livingthings", "entitynet"] = option("livingthings", "which configuration of it")
    output_dir: str = option("", "where checkpoints (checkpoints/step-N) and the final model (model/) go")
    model: ModelConfig = option(ModelConfig, "the model")
    text: TextConfig = option(TextConfig, "which text an image is paired with at each step")
    eval: EvalConfig = option(EvalConfig, "zero-shot evaluation")
    batch_size: int = option(256, "images per step on each process (the contrastive batch is this times the processes)")
    max_steps: int = option(10_000, "optimizer steps")
    learning_rate: float = option(5e-4, "peak learning rate (AdamW)")
    weight_decay: float = option(0.2, "AdamW weight decay (not on biases, norms, embeddings, logit scale)")
    warmup_steps: int = option(500, "linear warm-up, then cosine decay to zero")
    max_grad_norm: float = option(1.0, "gradient clipping (0: off)")
    seed: int = option(0, "seed of initialisation, shuffling and text sampling")
    num_workers: int = option(2, "data loader workers per process")
    checkpoint_every: int = option(1_000, "save_state every N steps (also at the end); a rerun resumes from the last")
    keep_checkpoints: int = option(2, "checkpoints kept on disk")
    log_every: int = option(50, "log loss, learning rate and throughput every N steps")
    repo_id: str = option("ORG/NAME", "the Hub repository the model card's examples name (push with `entitynet push model`)")

    def __post_init__(self) -> None:
        require(bool(self.dataset), "dataset", "name a dataset folder or Hub id")
        require(bool(self.output_dir), "output_dir", "name an output folder")
        for key in ("batch_size", "max_steps", "checkpoint_every", "keep_checkpoints", "log_every"):
            require(getattr(self, key) >= 1, key, "must be at least 1")
        require(self.batch_size >= 2, "batch_size", "a contrastive batch needs at least 2 images")
        require(self.learning_rate > 0, "learning_rate", "must be positive")
        require(self.warmup_steps >= 0 and self.num_workers >= 0, "warmup_steps", "must not be negative")
        require(self.max_grad_norm >= 0 and self.weight_decay >= 0, "max_grad_norm", "must not be negative")
        require(re.fullmatch(r"[\w.-]+/[\w.-]+", self.repo_id) is not None, "repo_id", "must look like ORG/NAME")


def shipped(name: str) -> Path | None:
    """A training config shipped with the package: ``configs/train/<name>.yaml``."""
    if not re.fullmatch(r"[a-z0-9_.-]+", name):
        return None
    candidate = resources.files("entitynet.configs") / "train" / f"{name}.yaml"
    return Path(str(candidate)) if candidate.is_file() else None


def load_train_config(config: str | None, assignments: list[str] | None = None,
                      flags: dict[str, tuple[str, object]] | None = None) -> TrainConfig:
    """Layers: the file (or shipped config), ``--set`` pairs, then flags ({flag: (key, value)})."""
    layers = Layers(TrainConfig)
    if config is not None:
        path = Path(config)
        if not path.is_file():
            path = shipped(config) or path
            if not path.is_file():
                folder = resources.files("entitynet.configs") / "train"
                names = sorted(item.name[:-5] for item in folder.iterdir() if item.name.endswith(".yaml"))
                raise ConfigError(f"--config: {config}: no such file, nor a shipped training config ({', '.join(names)})")
        layers.add_file(path)
    layers.add_assignments(assignments or [])
    for flag, (key, value) in (flags or {}).items():
        if value is not None:
            layers.add_value(key, value, flag)
    return layers.build()
