"""The model under evaluation: a ``transformers.CLIPModel`` with its tokenizer and image processor.

``load_model(spec)`` takes a folder saved by our trainer (or any ``save_pretrained`` folder) or a
Hub id. open_clip checkpoints (a folder with ``open_clip_config.json``, or ``open_clip:SOURCE``)
go through the open_clip converter, imported from ``OPEN_CLIP_CONVERTER`` when it is installed:
that is the one place the converter plugs in. A model without its tokenizer files is refused,
naming them (``model_files``): it would be scored with a tokenizer of two special tokens.
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entitynet.training.model_files import MissingTokenizer, require_tokenizer, require_vocabulary

logger = logging.getLogger(__name__)

# "module:function"; the function takes the source and returns (CLIPModel, tokenizer, image processor)
OPEN_CLIP_CONVERTER = "entitynet.training.convert:load_clip"
OPEN_CLIP_PREFIX = "open_clip:"


class ModelError(ValueError):
    """A model that cannot be loaded for evaluation; the message names it."""


@dataclass
class Clip:
    """A CLIP model ready to embed images and texts; ``name`` is what the results table shows."""

    model: Any
    tokenizer: Any
    processor: Any
    name: str


def load_model(spec: str) -> Clip:
    path = Path(spec)
    if spec.startswith(OPEN_CLIP_PREFIX):
        return load_open_clip(spec[len(OPEN_CLIP_PREFIX):], spec)
    if path.is_dir():
        if (path / "open_clip_config.json").is_file() and not (path / "config.json").is_file():
            return load_open_clip(spec, spec)
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: no config.json; expected a folder saved with save_pretrained "
                             "(our trainer's OUTPUT/model) or an open_clip folder")
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
        if model_type != "clip":
            raise ModelError(f"{path}: a {model_type!r} model; evaluation needs a CLIPModel (model_type 'clip')")
        try:
            require_tokenizer(path)
        except MissingTokenizer as error:
            raise ModelError(str(error)) from None
    elif path.exists():
        raise ModelError(f"{path}: a file; give the model's folder or a Hub id")
    return load_transformers(spec)


def load_transformers(spec: str) -> Clip:
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    try:
        model = CLIPModel.from_pretrained(spec)
        tokenizer = AutoTokenizer.from_pretrained(spec)
        processor = AutoImageProcessor.from_pretrained(spec)
        require_vocabulary(tokenizer, spec)
    except MissingTokenizer as error:
        raise ModelError(str(error)) from None
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"{spec}: cannot load a CLIPModel with its tokenizer and image processor ({first})") from None
    return Clip(model, tokenizer, processor, _display_name(spec))


def load_open_clip(source: str, spec: str) -> Clip:
    module_name, _, function = OPEN_CLIP_CONVERTER.partition(":")
    try:
        convert = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError):
        raise ModelError(f"{spec}: an open_clip checkpoint; evaluating it needs the open_clip converter "
                         f"({OPEN_CLIP_CONVERTER}), which this installation lacks. Convert it to a CLIPModel "
                         "folder first, or evaluate it with CLIP_benchmark") from None
    model, tokenizer, processor = convert(source)
    return Clip(model, tokenizer, processor, _display_name(source))


def _display_name(spec: str) -> str:
    path = Path(spec)
    if not path.exists():
        return spec
    # OUTPUT/model of our trainer is better named by its run folder than by "model"
    return f"{path.resolve().parent.name}/{path.name}" if path.name == "model" else path.name
