"""Reading an open_clip model: a Hub repo, a folder in open_clip's Hub layout, or a training checkpoint.

- ``hf-hub:ORG/NAME`` or ``ORG/NAME``: ``snapshot_download`` of ``open_clip_config.json`` and the
  weights (``open_clip_model.safetensors``, else ``open_clip_pytorch_model.bin``), then read as a folder.
- a folder with ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and those weights;
  when its ``text_cfg`` names a tokenizer (``hf_tokenizer_name``, as ``to-open-clip`` writes for a
  model trained here), the tokenizer's files lie beside them and are read from there, as open_clip
  reads them for ``local-dir:``.
- a file written by open_clip's trainer (``epoch_N.pt``: a dict with ``state_dict``, ``epoch``,
  ``optimizer``, ...; keys start with ``module.`` after DDP) plus a model name: one of the
  architectures in ``open_clip_models.json`` (numbers from open_clip's ``model_configs``, optionally
  with ``-quickgelu``) or a JSON file holding an open_clip model config.

Weights load with safetensors or ``torch.load(weights_only=True)``, never full unpickling.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from entitynet.training.convert.errors import ConversionError

logger = logging.getLogger(__name__)

CONFIG = "open_clip_config.json"
WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_PREFIX = "hf-hub:"
TOKENIZER_FILE = "tokenizer.json"  # a tokenizer the folder carries (PreTrainedTokenizerFast's save_pretrained)
TOKENIZER_PATTERNS = [TOKENIZER_FILE, "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"]


@dataclass
class OpenClipModel:
    """What a source holds: the config and the weights, and how to name it in a model card."""

    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    state: dict[str, torch.Tensor] = field(repr=False)
    name: str  # "ORG/NAME", a folder or file name (never a full local path: cards get published)
    hub_id: str | None = None
    revision: str | None = None
    tokenizer_dir: Path | None = None  # the folder holding the model's own tokenizer files, if it has them


def hub_id_of(source: str) -> str | None:
    """The repo id if ``source`` names a Hub repo rather than a local path."""
    if source.startswith(HUB_PREFIX):
        return source[len(HUB_PREFIX):]
    if not Path(source).exists() and HUB_ID.match(source):
        return source
    return None


def read_open_clip(source: str, model_name: str | None = None) -> OpenClipModel:
    hub_id = hub_id_of(source)
    if hub_id:
        folder, revision = download(hub_id)
        model = read_folder(folder)
        model.name, model.hub_id, model.revision = hub_id, hub_id, revision
        return model
    path = Path(source)
    if path.is_dir():
        return read_folder(path)
    if path.is_file():
        if not model_name:
            raise ConversionError(f"{path.name} is a checkpoint file: name its architecture with --model-name "
                                  f"(one of {', '.join(builtin_names())}, or an open_clip model config .json)")
        return read_checkpoint(path, model_name)
    raise ConversionError(f"{source}: no such folder or file, and not a Hub repo id (ORG/NAME or hf-hub:ORG/NAME)")


def download(hub_id: str) -> tuple[Path, str]:
    """The open_clip files of a Hub repo (the Hub cache is reused); returns the folder and its commit."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        # the repo's own tokenizer files come along (used only when text_cfg names a tokenizer)
        folder = Path(snapshot_download(hub_id, allow_patterns=[CONFIG, WEIGHTS[0], *TOKENIZER_PATTERNS]))
        if not (folder / WEIGHTS[0]).exists():  # older repos carry only the pickled weights
            folder = Path(snapshot_download(hub_id, allow_patterns=[CONFIG, WEIGHTS[1], *TOKENIZER_PATTERNS]))
    except RepositoryNotFoundError:
        raise ConversionError(f"{hub_id}: no such model repo on the Hub (or it is private and no token is set)") from None
    except LocalEntryNotFoundError:
        raise ConversionError(f"{hub_id}: not in the local Hub cache and the Hub cannot be reached "
                              "(HF_HUB_OFFLINE set, or no network)") from None
    except (HfHubHTTPError, OSError) as error:
        raise ConversionError(f"{hub_id}: download failed: {_redacted(error)}") from None
    return folder, folder.name  # snapshot folders are named by their commit


def read_folder(folder: Path) -> OpenClipModel:
    config_path = folder / CONFIG
    weights = next((folder / name for name in WEIGHTS if (folder / name).is_file()), None)
    if not config_path.is_file() or weights is None:
        found = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
        raise ConversionError(f"{folder.name} is not an open_clip model folder: it needs {CONFIG} and {WEIGHTS[0]} "
                              f"(or {WEIGHTS[1]}); found {found}")
    config = read_json(config_path)
    if not isinstance(config.get("model_cfg"), dict):
        raise ConversionError(f"{config_path.name} has no model_cfg: not an open_clip Hub config")
    tokenizer_dir = folder if (folder / TOKENIZER_FILE).is_file() else None
    return OpenClipModel(config["model_cfg"], config.get("preprocess_cfg") or {}, load_weights(weights), folder.name,
                         tokenizer_dir=tokenizer_dir)


def read_checkpoint(path: Path, model_name: str) -> OpenClipModel:
    model_cfg, preprocess_cfg = model_config(model_name)
    if not preprocess_cfg:
        logger.warning("%s carries no preprocessing config: using open_clip's defaults (OpenAI mean and std, bicubic, "
                       "shortest-edge resize and centre crop); if the run used --image-mean/--image-std, pass a .json "
                       "with model_cfg and preprocess_cfg as --model-name", path.name)
    checkpoint = load_weights(path)
    return OpenClipModel(model_cfg, preprocess_cfg, checkpoint, f"{path.name} ({Path(model_name).stem})")


def builtin_names() -> list[str]:
    return sorted(_builtin())


def model_config(model_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``model_cfg`` and ``preprocess_cfg`` for a built-in name or a JSON file (open_clip's
    ``model_configs/*.json`` format, or ``open_clip_config.json``'s)."""
    if model_name.endswith(".json"):
        config = read_json(Path(model_name))
        if "model_cfg" in config:
            return config["model_cfg"], config.get("preprocess_cfg") or {}
        return config, {}
    builtin = _builtin()
    base, quick = (model_name[: -len("-quickgelu")], True) if model_name.endswith("-quickgelu") else (model_name, False)
    if base not in builtin:
        raise ConversionError(f"unknown open_clip model name {model_name!r}: known are {', '.join(sorted(builtin))} "
                              "(each also with -quickgelu), or give an open_clip model config .json")
    config = json.loads(json.dumps(builtin[base]))  # a copy
    if quick:
        config["quick_gelu"] = True
    return config, {}


def _builtin() -> dict[str, Any]:
    return json.loads((resources.files("entitynet.training.convert") / "open_clip_models.json").read_text())


def read_json(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConversionError(f"{path.name} is not readable JSON: {error}") from None
    if not isinstance(config, dict):
        raise ConversionError(f"{path.name} does not hold a JSON object")
    return config


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a torch file loaded with ``weights_only=True``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path))
        except Exception as error:  # safetensors raises its own SafetensorError and plain OSError alike
            raise ConversionError(f"{path.name} is not a readable safetensors file: {error}") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, AttributeError, TypeError) as error:
            raise ConversionError(
                f"{path.name} holds more than tensors and plain containers, so torch.load(weights_only=True) refused "
                f"it ({str(error).splitlines()[0]}). Unpickling it fully could run code, so it is not loaded: if you "
                "trust the file, load it yourself and save its state_dict with safetensors.torch.save_file.") from None
        except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
            raise ConversionError(f"{path.name} is not a readable torch checkpoint: {str(error).splitlines()[0]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # open_clip's training checkpoints: epoch, optimizer, ... beside the weights
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path.name} holds no state dict of tensors")
    return {_strip_wrappers(key): value for key, value in state.items()}


def _strip_wrappers(key: str) -> str:
    """DistributedDataParallel prefixes ``module.``, torch.compile ``_orig_mod.``."""
    for prefix in ("module.", "_orig_mod."):
        key = key.removeprefix(prefix)
    return key


def _redacted(error: BaseException) -> str:
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    for secret in filter(None, (os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN"))):
        message = message.replace(secret, "***")
    return message
