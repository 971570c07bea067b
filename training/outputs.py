"""What the trainer writes beside OUTPUT/model and removes again: the WiSE-FT ensembles
(``wise_ft.alphas``: OUTPUT/wise-ft) and the LoRA adapter (``model.lora.save_adapter``:
OUTPUT/adapter). A folder is removed only when it holds nothing but what the trainer writes there
and is not the model a finetune starts from (``--force`` removes only what the command wrote);
otherwise it is kept and the log says why."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

# PEFT's save_pretrained, and our card (training/lora.py)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "README.md")


def remove_own_adapter(folder: Path, why: str) -> bool:
    """Remove ``folder`` when it is an adapter the trainer saved (``adapter_config.json`` and PEFT's
    files only). Returns whether it was removed."""
    if not folder.is_dir():
        return False
    foreign = sorted(entry.name for entry in folder.iterdir() if entry.name not in ADAPTER_FILES)
    if not (folder / "adapter_config.json").is_file() or foreign:
        logger.warning("%s kept: it holds %s, not only the adapter the trainer saved", folder,
                       ", ".join(foreign[:5]) if foreign else "no adapter_config.json")
        return False
    shutil.rmtree(folder)
    logger.warning("%s removed: %s", folder, why)
    return True


def remove_own_wise_ft(folder: Path, init_from: str | None, why: str) -> bool:
    """Remove ``folder`` when it holds only the trainer's WiSE-FT output (its manifest, alpha-*
    folders, scores: ``wise_ft.foreign_entries``) and neither is, holds nor lies in ``init_from``
    (``wise_ft.refuse_out``'s rule). Returns whether it was removed."""
    from entitynet.training.wise_ft import MANIFEST, WiseFTError, foreign_entries, refuse_out

    if not folder.is_dir() or not any(folder.iterdir()):
        return False
    foreign = foreign_entries(folder)
    if not (folder / MANIFEST).is_file() or foreign:
        logger.warning("%s kept: it holds %s, not only the trainer's WiSE-FT output", folder,
                       ", ".join(foreign[:5]) if foreign else f"no {MANIFEST}")
        return False
    try:
        refuse_out(folder, True, (init_from,) if init_from else ())
    except WiseFTError:  # the only refusal left: it is, holds or lies in the model the finetune starts from
        logger.warning("%s kept: model.init_from %s is, holds or lies in it", folder, init_from)
        return False
    shutil.rmtree(folder)
    logger.warning("%s removed: %s", folder, why)
    return True
