"""The trainer's configuration: one YAML file (``--config``, or a shipped ``configs/train/<name>.yaml``)
with ``--set key=value`` overrides, checked before any work, with the same rules and messages as
the stages' configuration (``entitynet.typed_config``).

It is torch-free and outside ``entitynet.training`` because the run's configuration holds it:
``train:`` of ``entitynet run`` is a ``RunTrainConfig`` (this schema, less the dataset and output the
run fills in, plus ``enabled`` and ``preset``); ``entitynet.training.config`` names the same objects."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from entitynet.typed_config import ConfigError, Layers, option, require

TRACKERS = ("tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio")


@dataclass
class ModelConfig:
    preset: Literal["tiny", "vit-s-32", "vit-b-32", "vit-b-16"] = option(
        "vit-b-32", "architecture when training from scratch (tiny is for tests and the demo)")
    init_from: str | None = option(
        None, "finetune instead: a CLIPModel id on the Hub or a folder saved with save_pretrained", flag="--init-from")
    context_length: int = option(32, "text tokens per caption, start and end included (the paper's models: 32)")
    activation: Literal["gelu", "quick_gelu"] = option(
        "gelu", "MLP activation of both towers when training from scratch: gelu as open_clip's ViT-B-32, which the "
        "paper trained; quick_gelu as OpenAI's original CLIP and open_clip's -quickgelu models")
    tokenizer: str | None = option(
        None, "from scratch: a pretrained tokenizer (Hub id or folder), e.g. openai/clip-vit-base-patch32 as the "
        "paper's models use; unset: a byte-level BPE trained on the training texts")
    vocab_size: int = option(16_384, "size of the byte-level BPE trained on the training texts")
    tokenizer_rows: int = option(
        100_000, "the BPE is trained on the texts of at most this many training rows (a seeded sample)")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass: less memory, ~30% slower",
                                          runtime=True)
    compile: bool = option(False, "torch.compile the model (through Accelerate's dynamo plugin)", runtime=True)

    def __post_init__(self) -> None:
        require(256 + 4 <= self.vocab_size <= 1_000_000, "vocab_size", "must be between 260 and 1,000,000")
        require(4 <= self.context_length <= 512, "context_length", "must be between 4 and 512")
        require(self.tokenizer_rows >= 1, "tokenizer_rows", "must be at least 1")
        # a local model to finetune must bring its tokenizer: without it training would start from a
        # tokenizer of two special tokens (a Hub id is checked when it loads)
        local = self.init_from is not None and Path(self.init_from).is_dir()
        missing = _missing_tokenizer_files(Path(self.init_from)) if local else []
        require(not missing, "init_from", f"{self.init_from} has no tokenizer, missing {', '.join(missing)}; "
                "copy the tokenizer the model was trained with into it")


@dataclass
class NounTextConfig:
    """Texts made from a noun query (the entity's name, an alias, a WordNet lemma)."""

    keep: float = option(0.4, "the query itself")
    synonym: float = option(0.6, "one of the entity's names (or, by the hierarchy chance, of its natural type)")
    definition: float = option(0.1, "the entity's description (or, by the hierarchy chance, its natural type's)")

    def __post_init__(self) -> None:
        for key in ("keep", "synonym", "definition"):
            require(getattr(self, key) >= 0, key, "must not be negative")


@dataclass
class AttributeTextConfig:
    """Texts made from an attribute query ("spotted big cat") or attribute+noun query ("spotted leopard")."""

    keep: float = option(1.0, "the query itself")
    synonym: float = option(0.2, "one of the entity's names alone (or, by the hierarchy chance, of its natural type)")
    pseudo_query: float = option(0.2, "'attribute synonym' or 'synonym attribute'")
    replace_entity: float = option(0.2, "the query with the entity's name replaced by a synonym")
    attribute_only: float = option(0.2, "the attribute alone")
    definition: float = option(0.05, "the entity's description (or, by the hierarchy chance, its natural type's)")

    def __post_init__(self) -> None:
        for key in ("keep", "synonym", "pseudo_query", "replace_entity", "attribute_only", "definition"):
            require(getattr(self, key) >= 0, key, "must not be negative")


@dataclass
class TextConfig:
    """The paper's text mix (arXiv 2505.02746; the authors' entitynet_textloader): each image gets
    one text per step, drawn as a function of (seed, epoch, image)."""

    alt_text: float = option(0.5, "chance of one of the image's alt texts, when it has any; otherwise a query's text")
    hierarchy: float = option(0.2, "chance that a synonym or definition comes from the natural type instead of the entity")
    hierarchy_living: float = option(0.1, "the hierarchy chance for living things")
    noun: NounTextConfig = option(NounTextConfig, "branch weights of noun and wordnet-noun queries")
    attr: AttributeTextConfig = option(AttributeTextConfig, "branch weights of attribute queries (attr)")
    attrnoun: AttributeTextConfig = option(AttributeTextConfig, "branch weights of attribute+noun queries (attrnoun)")

    def __post_init__(self) -> None:
        for key in ("alt_text", "hierarchy", "hierarchy_living"):
            require(0 <= getattr(self, key) <= 1, key, "is a chance between 0 and 1")


@dataclass
class AugmentConfig:
    scale: list[float] = option([0.4, 1.0], "RandomResizedCrop: range of the crop's share of the image area")
    ratio: list[float] = option([0.9, 1.111], "RandomResizedCrop: range of the crop's aspect ratio (width / height)")

    def __post_init__(self) -> None:
        require(len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1] <= 1, "scale", "must be [low, high] within (0, 1]")
        require(len(self.ratio) == 2 and 0 < self.ratio[0] <= self.ratio[1], "ratio", "must be [low, high], positive")


@dataclass
class OptimizerConfig:
    learning_rate: float = option(5e-4, "peak learning rate")
    betas: list[float] = option([0.9, 0.98], "AdamW betas (open_clip's for ViTs)")
    eps: float = option(1e-6, "AdamW epsilon (open_clip's default for ViTs; the paper presets take the authors' 1e-8)")
    weight_decay: float = option(0.2, "on every weight matrix and embedding; never on biases, norms or the temperature")
    warmup_steps: int = option(500, "linear warm-up, then cosine decay to zero at max_steps")
    max_grad_norm: float = option(1.0, "clip the global gradient norm (0: no clipping; the norm is logged either way)")

    def __post_init__(self) -> None:
        require(self.learning_rate > 0, "learning_rate", "must be positive")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "must be two numbers in [0, 1)")
        require(self.eps > 0, "eps", "must be positive")
        require(self.weight_decay >= 0, "weight_decay", "must not be negative")
        require(self.warmup_steps >= 0, "warmup_steps", "must not be negative")
        require(self.max_grad_norm >= 0, "max_grad_norm", "must not be negative")


@dataclass
class ZeroShotSample:
    """What zero-shot evaluation on a built dataset is, in the trainer (``train.eval``) and in the
    run's eval stage (``eval``, which adds what only it does): how an entity is named, how many images."""

    template: str = option("a photo of a {name}.", "zero-shot class prompt; fields: {name}, {natural_type}")
    max_images: int = option(2_000, "evaluate on at most this many images, a seeded sample across entities")

    def __post_init__(self) -> None:
        require("{name}" in self.template, "template", "must contain {name}")
        require(self.max_images >= 1, "max_images", "must be at least 1")


@dataclass
class EvalConfig(ZeroShotSample):
    split: str = option("test", "split evaluated at the end (zero-shot over its entities, retrieval over its alt texts)")
    periodic_split: str = option("validation", "split evaluated every `every` steps (the test split is kept for the end)")
    every: int = option(0, "evaluate every N steps as well (0: only at the end)")

    def __post_init__(self) -> None:
        require(self.every >= 0, "every", "must not be negative")
        super().__post_init__()


@dataclass
class WiseFTConfig:
    """WiSE-FT at the end of a finetune (``entitynet wise-ft``'s interpolation, done by the trainer):
    per alpha, (1 - alpha) * model.init_from + alpha * the finetuned model, in OUTPUT/wise-ft/alpha-<a>."""

    alphas: list[float] = option(
        [], "weights of the finetuned model in [0, 1], as `entitynet wise-ft --alphas`; each interpolation is saved "
        "in OUTPUT/wise-ft/alpha-<a> and evaluated on eval.split (OUTPUT/wise-ft/scores.json). Empty: off")

    def __post_init__(self) -> None:
        for alpha in self.alphas:
            require(0.0 <= alpha <= 1.0 and not math.isnan(alpha), "alphas",
                    f"{alpha} is outside [0, 1] (0 is the model finetuned from, 1 the finetuned one)")
        require(len(set(self.alphas)) == len(self.alphas), "alphas", "an alpha is given twice")


@dataclass
class MixEntry:
    """A replay source of ``mix``: drawn beside the main dataset in every batch, at its weight."""

    dataset: str = option("", "a dataset folder or Hub id (our layout, or any parquet image-text dataset), or "
                          "webdataset tars (a folder or a shard pattern such as shards/{00000..00099}.tar)")
    config: Literal["livingthings", "entitynet"] | None = option(
        None, "the configuration of a dataset in our layout (default: the main dataset_config); "
        "ignored for tars and for a dataset with only a default configuration")
    weight: float = option(0.0, "this source's share of every batch, in (0, 1); the main dataset gets the rest")

    def __post_init__(self) -> None:
        require(bool(self.dataset), "dataset", "name a dataset folder, Hub id or tar shards")
        require(0 < self.weight < 1, "weight", "must be a share between 0 and 1 (both excluded)")


def mix_rows(batch_size: int, mix: list[MixEntry]) -> list[int]:
    """Rows of each process's batch per source, the main dataset first: each replay source gets the
    whole rows of its weight (rounded down), the main dataset the rest (the remainder included)."""
    # the epsilon keeps 0.29 x 100 (28.999999999999996 in floating point) at 29 rows
    shares = [math.floor(entry.weight * batch_size + 1e-9) for entry in mix]
    return [batch_size - sum(shares), *shares]


@dataclass
class TrainConfig:
    # dataset and output_dir are relative to the working directory, also in a YAML file: a
    # shipped config must not point into site-packages
    dataset: str = option("", "a dataset folder (RUN/dataset) or Hub id (ORG/NAME)", flag="--dataset")
    dataset_config: Literal["livingthings", "entitynet"] = option("livingthings", "which configuration of it")
    output_dir: str = option("", "where checkpoints (checkpoints/step-N), logs (logs/) and the final model (model/) go",
                             flag="--output-dir")
    model: ModelConfig = option(ModelConfig, "the model")
    text: TextConfig = option(TextConfig, "which text an image is paired with at each step")
    augment: AugmentConfig = option(AugmentConfig, "training image augmentation (evaluation: resize + centre crop)")
    optimizer: OptimizerConfig = option(OptimizerConfig, "AdamW and the learning-rate schedule")
    eval: EvalConfig = option(EvalConfig, "zero-shot evaluation")
    wise_ft: WiseFTConfig = option(WiseFTConfig, "WiSE-FT at the end of a finetune (needs model.init_from)")
    mix: list[MixEntry] = option(
        [], "replay: datasets drawn beside `dataset` in every batch, each a list entry {dataset, config, weight}; "
        "weight is the source's share of each process's batch (whole rows, rounded down; the weights sum below 1, "
        "the main dataset gets the rest). A source without entity fields gives its alt texts. Always streamed")
    streaming: bool | None = option(
        None, "read the dataset where it lies, shard by shard, instead of converting it into an Arrow copy first; "
        "unset: on for Hub ids, webdataset tars and local datasets over 2 GiB, off for smaller local ones "
        "(and on with a mix)")
    shuffle_buffer: int = option(10_000, "streaming: rows in each process's shuffle buffer (shared by its workers)")
    batch_size: int = option(256, "images per forward pass on each process")
    accumulation_steps: int = option(
        1, "forward passes per optimizer step; the contrastive batch stays whole: batch_size x accumulation_steps x processes")
    max_steps: int = option(10_000, "optimizer steps", flag="--max-steps")
    seed: int = option(0, "seed of initialisation, shuffling, augmentation and text sampling")
    num_workers: int = option(2, "data loader workers per process", runtime=True)
    checkpoint_every: int = option(1_000, "save_state every N steps (also at the end); a rerun resumes from the last",
                                   runtime=True)
    keep_checkpoints: int = option(2, "checkpoints kept on disk", runtime=True)
    log_every: int = option(50, "log loss, learning rate, gradient norm and throughput every N steps", runtime=True)
    report_to: list[str] = option([], f"Accelerate trackers besides logs/metrics.jsonl: {', '.join(TRACKERS)}",
                                  runtime=True, flag="--report-to", metavar="TRACKERS")
    process_group_timeout: int = option(
        60, "minutes a process waits for the others at a collective (NCCL's default of 10 is shorter than a "
        "first epoch's set-up on large data)", runtime=True)
    repo_id: str = option("ORG/NAME", "the Hub repository the model card's examples name (push with `entitynet push model`)",
                          flag="--repo")
    # runtime: it names the dataset in the card and changes nothing trained
    dataset_id: str | None = option(
        None, "the dataset's Hub id the model card files results under (default: the id `dataset` was loaded by, "
        "or the one its folder records: pushed there, or its build's build.repo_id)", runtime=True, flag="--dataset-id")

    def __post_init__(self) -> None:
        require(bool(self.dataset), "dataset", "name a dataset folder or Hub id")
        require(bool(self.output_dir), "output_dir", "name an output folder")
        self._check()

    def _check(self) -> None:
        """The rules of every key but the dataset and the output (which a run fills in)."""
        for key in ("batch_size", "accumulation_steps", "max_steps", "checkpoint_every", "keep_checkpoints",
                    "log_every", "process_group_timeout", "shuffle_buffer"):
            require(getattr(self, key) >= 1, key, "must be at least 1")
        require(self.batch_size >= 2, "batch_size", "a contrastive batch needs at least 2 images")
        require(self.num_workers >= 0, "num_workers", "must not be negative")
        unknown = [name for name in self.report_to if name not in TRACKERS]
        require(not unknown, "report_to", f"unknown tracker {', '.join(unknown)}; choose from {', '.join(TRACKERS)}")
        require(re.fullmatch(r"[\w.-]+/[\w.-]+", self.repo_id) is not None, "repo_id", "must look like ORG/NAME")
        # WiSE-FT averages the model a finetune started from with its result: from scratch there is none
        require(not self.wise_ft.alphas or self.model.init_from is not None, "wise_ft.alphas",
                "WiSE-FT interpolates the model a finetune starts from (model.init_from) with the finetuned one; "
                "this run trains from scratch: set model.init_from, or leave wise_ft.alphas empty")
        require(self.dataset_id is None or re.fullmatch(r"[\w.-]+/[\w.-]+", self.dataset_id) is not None, "dataset_id",
                "must look like ORG/NAME")
        self._check_mix()

    def _check_mix(self) -> None:
        if not self.mix:
            return
        total = sum(entry.weight for entry in self.mix)
        require(total < 1, "mix", f"the weights sum to {total:g}; they must sum below 1 (the main dataset gets the rest)")
        # exact shares and an exact resume come from streaming every source (training.mix)
        require(self.streaming is not False, "streaming", "a mix is always streamed (each source's share of every "
                "batch and its place on resume are position arithmetic); leave streaming unset or true")
        for index, (entry, rows) in enumerate(zip(self.mix, mix_rows(self.batch_size, self.mix)[1:])):
            require(rows >= 1, f"mix[{index}].weight", f"{entry.dataset} at weight {entry.weight:g} is less than one row "
                    f"of a batch of {self.batch_size} per process (batch_size); raise the weight to at least "
                    f"{1 / self.batch_size:.3g} or the batch size")


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
        try:
            path = preset_file(config)
        except ConfigError as error:
            raise ConfigError(f"--config: {error}") from None
        layers.add_file(path)
    layers.add_assignments(assignments or [])
    for flag, (key, value) in (flags or {}).items():
        if value is not None:
            layers.add_value(key, value, flag)
    return layers.build()


@dataclass
class RunTrainConfig(TrainConfig):
    """`entitynet run`'s ``train:``: the trainer's configuration, whose base layer is the shipped
    trainer preset ``preset`` (then the run's files, ``--set train.KEY=VALUE`` and flags). The run
    trains on RUN/dataset, of the run's domain, and writes to RUN: those three keys stay unset."""

    enabled: bool = option(True, "train a CLIP on the built dataset (needs entitynet[train]); false: stop after build")
    preset: str = option("livingthings-vit-b-32", "the base layer of these keys: a shipped trainer configuration "
                         "(tiny, livingthings-vit-b-32, entitynet-vit-b-32) or a YAML file of the trainer's")

    def __post_init__(self) -> None:
        require(not self.dataset, "dataset", "the run trains on RUN/dataset: leave it unset")
        require(not self.output_dir, "output_dir", "the run writes to RUN: leave it unset")
        self._check()


def preset_file(name: str) -> Path:
    """A trainer configuration named by ``--config`` or ``train.preset``: a YAML file, else a shipped one."""
    path = Path(name)
    if path.is_file():
        return path
    path = shipped(name) or path
    if not path.is_file():
        folder = resources.files("entitynet.configs") / "train"
        names = sorted(item.name[:-5] for item in folder.iterdir() if item.name.endswith(".yaml"))
        raise ConfigError(f"{name}: no such file, nor a shipped training config ({', '.join(names)})")
    return path


def run_train_config(config: Any, run_dir: Any) -> TrainConfig:
    """The trainer's configuration in a run (its train and eval stages): ``config.train`` on the
    run's dataset, of its domain, written to the run directory. ``config`` is the run's ``Config``,
    ``run_dir`` its ``RunDir`` (not imported: this module stays below both)."""
    from entitynet import layout

    values = {item.name: getattr(config.train, item.name) for item in fields(TrainConfig)}
    values.update(dataset=str(run_dir.path(layout.DATASET)), dataset_config=config.domain, output_dir=str(run_dir.root))
    if config.push.dataset_repo and not values.get("dataset_id"):  # where the push stage will put the dataset:
        values["dataset_id"] = config.push.dataset_repo  # the model card files results there
    return TrainConfig(**values)


def _missing_tokenizer_files(folder: Path) -> list[str]:
    from entitynet.training.model_files import missing_tokenizer_files  # only for a local model to finetune

    return missing_tokenizer_files(folder)


__all__ = [
    "TRACKERS", "ZeroShotSample", "AttributeTextConfig", "AugmentConfig", "EvalConfig", "MixEntry", "ModelConfig",
    "NounTextConfig", "mix_rows",
    "OptimizerConfig", "RunTrainConfig", "TextConfig", "TrainConfig", "WiseFTConfig", "load_train_config", "preset_file",
    "run_train_config", "shipped",
]
