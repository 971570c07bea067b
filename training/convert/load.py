"""``load_clip(source)``: any CLIP source as (CLIPModel, tokenizer, image processor).

A transformers model (Hub id or ``save_pretrained`` folder) loads as it is. An open_clip model
(``hf-hub:ORG/NAME``, an ``ORG/NAME`` repo without transformers' ``config.json``, a folder in
open_clip's layout, or a training checkpoint with ``model_name``) is converted once into
``$ENTITYNET_CACHE/converted/`` and loaded from there; the cache key holds the source's identity
(Hub commit, or path, size and modification time of the local files) and the converter's version,
so a changed source converts again. Conversion is atomic, so processes that call this at the same
time (one per GPU) never see a half-written folder. A transformers folder without its tokenizer
files is refused, naming them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import transformers
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, PreTrainedTokenizerBase

from entitynet.training.convert.convert import convert_open_clip
from entitynet.training.convert.errors import ConversionError
from entitynet.training.convert.open_clip_files import CONFIG, TOKENIZER_FILE, WEIGHTS, download, hub_id_of
from entitynet.training.model_files import MissingTokenizer, require_tokenizer, require_vocabulary

logger = logging.getLogger(__name__)

CONVERTER_VERSION = 1  # bump when conversions change their output: cached ones are then redone


def load_clip(source: str, model_name: str | None = None) -> tuple[CLIPModel, PreTrainedTokenizerBase, Any]:
    """The model, tokenizer and image processor of ``source`` (see the module docstring)."""
    folder = resolve_transformers_model(source, model_name)
    try:
        if Path(folder).is_dir():
            require_tokenizer(folder)
        model = CLIPModel.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        require_vocabulary(tokenizer, folder)
    except MissingTokenizer as error:
        raise ConversionError(str(error)) from None
    # the PIL image processor, whose resizing is the one open_clip's transforms do (transformers 5 would
    # pick its torchvision backend when torchvision is installed; 4 called the choice use_fast)
    pil = {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {"use_fast": False}
    processor = AutoImageProcessor.from_pretrained(folder, **pil)
    return model, tokenizer, processor


def resolve_transformers_model(source: str, model_name: str | None = None) -> str:
    """A transformers id or folder for ``source``, converting an open_clip source into the cache."""
    path = Path(source)
    if path.is_dir() and (path / "config.json").is_file():
        return source
    hub_id = hub_id_of(source)
    if hub_id and not source.startswith("hf-hub:") and _has_transformers_config(hub_id):
        return hub_id
    identity = _identity(source, hub_id, model_name)
    folder = converted_cache() / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', source.strip('/'))[-60:]}-{_digest(identity)}"
    if not folder.is_dir():
        logger.info("converting %s from open_clip into %s", source, folder)
        try:
            convert_open_clip(source, folder, model_name)
        except (ConversionError, OSError):
            if not folder.is_dir():  # else another process finished the same conversion first
                raise
    return str(folder)


def converted_cache() -> Path:
    from entitynet.kg.wordnet import cache_home  # the project's one per-user cache

    return cache_home() / "converted"


def _has_transformers_config(hub_id: str) -> bool:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        hf_hub_download(hub_id, "config.json")
        return True
    except LocalEntryNotFoundError:  # offline: decide by what the cache holds
        return not isinstance(try_to_load_from_cache(hub_id, CONFIG), str)
    except EntryNotFoundError:
        return False
    except RepositoryNotFoundError:
        raise ConversionError(f"{hub_id}: no such model repo on the Hub (or it is private and no token is set)") from None


def _identity(source: str, hub_id: str | None, model_name: str | None) -> dict[str, Any]:
    identity: dict[str, Any] = {"converter": CONVERTER_VERSION, "model_name": model_name}
    if hub_id:
        identity.update(hub=hub_id, revision=download(hub_id)[1])
        return identity
    path = Path(source).resolve()
    # a folder's own tokenizer (hf_tokenizer_name) is part of what the conversion reads
    files = [path / name for name in (CONFIG, *WEIGHTS, TOKENIZER_FILE)] if path.is_dir() else [path]
    if model_name and model_name.endswith(".json"):
        files.append(Path(model_name).resolve())
    identity["files"] = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    if not identity["files"]:
        raise ConversionError(f"{source}: no such folder or file, and not a Hub repo id (ORG/NAME or hf-hub:ORG/NAME)")
    return identity


def _digest(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
