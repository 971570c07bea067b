"""The trainer's configuration of an `entitynet run`: a library module, so that the train stage
(``stage.py``), the eval stage (``evaluation/stage.py``) and the pipeline read it without
importing one another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from entitynet import layout
from entitynet.config import Config
from entitynet.rundir import RunDir
from entitynet.typed_config import ConfigError

if TYPE_CHECKING:
    from entitynet.training.config import TrainConfig


def train_config(config: Config, run_dir: RunDir) -> TrainConfig:
    """The trainer's configuration for this run: ``train.config`` + ``train.set``, with the run's
    dataset, its domain's configuration and the run directory as output."""
    from entitynet.training.config import load_train_config  # read when a stage runs, not when it is imported

    assignments = [*config.train.set, f"dataset={run_dir.path(layout.DATASET)}", f"dataset_config={config.domain}",
                   f"output_dir={run_dir.root}"]
    if config.push.dataset_repo:  # where the push stage will put the dataset: the model card files results there
        assignments.append(f"dataset_id={config.push.dataset_repo}")
    try:
        return load_train_config(config.train.config, assignments)
    except ConfigError as error:  # name the run's key, not only the trainer's
        raise ConfigError(f"train.config/train.set: {error}") from None
