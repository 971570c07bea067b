"""What a tokenizer trained for OUTPUT was made from, kept beside it (``OUTPUT/tokenizer/
entitynet_tokenizer.json``), so that a later run reuses it only for the same experiment.

A scratch tokenizer is a function of the training texts it was sampled from: the dataset (named
relative to OUTPUT when it lies inside, so a moved run directory is the same), its configuration
and train rows, how the sample was drawn (seed, size, streamed or map-style, the shuffle buffer),
the text mix that turns rows into texts, the vocabulary size and the recipe of ``train_tokenizer``.
The trainer compares the record with the run it is starting (``training/train.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from entitynet import layout
from entitynet.rundir import write_text_atomic
from entitynet.training.config import TrainConfig
from entitynet.training.model import TOKENIZER_RECIPE
from entitynet.typed_config import to_dict


def dataset_identity(dataset: str, output_dir: str) -> str:
    """A local dataset by its resolved path, relative to OUTPUT when inside it; a Hub id as it is."""
    path = Path(dataset)
    if not path.exists():
        return dataset
    resolved, output = path.resolve(), Path(output_dir).resolve()
    if resolved == output or output in resolved.parents:
        return resolved.relative_to(output).as_posix()
    return str(resolved)


def made_from(config: TrainConfig, train_rows: int, streamed: bool) -> dict[str, Any]:
    """The settings a scratch tokenizer depends on, by the configuration's dotted keys."""
    text = {f"text.{key}": value for key, value in _flatten(to_dict(config.text)).items()}
    return {
        "dataset": dataset_identity(config.dataset, config.output_dir), "dataset_config": config.dataset_config,
        "train_rows": train_rows, "seed": config.seed, "model.tokenizer_rows": config.model.tokenizer_rows,
        "model.vocab_size": config.model.vocab_size, "sample": "streamed" if streamed else "map-style",
        "shuffle_buffer": config.shuffle_buffer if streamed else None, **text, "recipe": TOKENIZER_RECIPE,
    }


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read(folder: Path) -> dict[str, Any] | None:
    """The recorded settings, or None when the folder has no (readable) record."""
    try:
        return json.loads((folder / layout.TOKENIZER_RECORD).read_text())["made_from"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write(folder: Path, settings: dict[str, Any], tokens: int, rows_sampled: int) -> None:
    record = {"made_from": settings, "tokens": tokens, "rows_sampled": rows_sampled}
    write_text_atomic(folder / layout.TOKENIZER_RECORD, json.dumps(record, indent=2) + "\n")


def differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The keys whose values differ (JSON round trip: lists stay lists)."""
    wanted = json.loads(json.dumps(wanted))
    return sorted(key for key in set(saved) | set(wanted) if saved.get(key) != wanted.get(key))
