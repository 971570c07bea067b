"""LoRA finetuning through PEFT (``model.lora``): the pretrained model's weights stay frozen and
low-rank updates of the chosen layers of both towers train; at the end the updates are merged
into the weights, so OUTPUT/model is a plain ``CLIPModel`` (and, with ``save_adapter``,
OUTPUT/adapter holds the adapter alone, PEFT's format).

What trains: the adapters only. The output projections (``visual_projection``,
``text_projection``) are frozen unless named in ``targets`` (then they get adapters of their own,
which merge like the others). The temperature (``logit_scale``) stays frozen at the base model's
value: a trainable one would be a weight outside the adapter, so the adapter alone on its base
would no longer give the merged model's logits; the card and the log say the value kept.
"""

from __future__ import annotations

import logging
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model

from entitynet.rundir import apply_umask
from entitynet.training.config import LoraConfig
from entitynet.typed_config import ConfigError

logger = logging.getLogger(__name__)

TOWERS = {"vision_model.": "vision", "visual_projection": "vision", "text_model.": "text", "text_projection": "text"}


def matches(name: str, target: str) -> bool:
    """PEFT's rule for a list of target modules: the module's dotted name is the target or ends in ``.target``."""
    return name == target or name.endswith("." + target)


def wrap(model: torch.nn.Module, config: LoraConfig, init_from: str) -> PeftModel:
    """``model`` with LoRA adapters on ``config.targets`` (PEFT's ``get_peft_model``); every other
    weight frozen. A target that matches no layer of the model is refused, named, before PEFT's own
    error (which names the set of targets, with a traceback)."""
    names = [name for name, _ in model.named_modules()]
    unmatched = [target for target in config.targets if not any(matches(name, target) for name in names)]
    if unmatched:
        raise ConfigError(f"model.lora.targets: {', '.join(unmatched)} match no layer of {init_from}")
    peft_config = PeftLoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                 target_modules=list(config.targets), bias="none")
    with warnings.catch_warnings():  # peft 0.21 asks transformers 5 for is_gradient_checkpointing, deprecated there
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        wrapped = get_peft_model(model, peft_config)
    return wrapped


def summary(model: PeftModel, config: LoraConfig) -> dict[str, Any]:
    """What the card and the log say: the settings, the trainable and total parameters, the
    adapted layers per tower and the temperature kept."""
    trainable, total = model.get_nb_trainable_parameters()
    # PEFT's embedding layers keep their adapters in lora_embedding_A, the others in lora_A
    adapted = [name for name, module in model.named_modules()
               if getattr(module, "lora_A", None) or getattr(module, "lora_embedding_A", None)]
    towers = {"vision": 0, "text": 0}
    for name in adapted:
        inner = name.removeprefix("base_model.model.")
        tower = next((t for prefix, t in TOWERS.items() if inner.startswith(prefix)), None)
        if tower:
            towers[tower] += 1
    return {"rank": config.rank, "alpha": config.alpha, "targets": list(config.targets), "dropout": config.dropout,
            "trainable_parameters": trainable, "parameters": total, "layers": towers,
            "logit_scale": float(model.get_base_model().logit_scale.exp().item())}


def describe(info: dict[str, Any]) -> str:
    """One line: ``rank 16, alpha 32 on q_proj, v_proj (24 vision and 24 text layers): 1,179,648 of ...``."""
    layers = info["layers"]
    return (f"rank {info['rank']}, alpha {info['alpha']:g} on {', '.join(info['targets'])} ({layers['vision']} vision "
            f"and {layers['text']} text layers): {info['trainable_parameters']:,} of {info['parameters']:,} parameters "
            f"trained ({100 * info['trainable_parameters'] / info['parameters']:.2f}%); temperature kept at "
            f"{info['logit_scale']:.2f}")


def save_adapter(model: PeftModel, folder: Path, info: dict[str, Any], base: str) -> None:
    """The adapter alone (PEFT's ``save_pretrained``: adapter_config.json, adapter_model.safetensors)
    with a card of ours (PEFT's is a template of placeholders), written aside and renamed into place."""
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    (partial / "README.md").write_text(adapter_card(info, base))
    apply_umask(partial)  # safetensors writes the weights 0600 whatever the umask
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    logger.info("adapter saved to %s", folder)


def adapter_card(info: dict[str, Any], base: str) -> str:
    """What the adapter is, the model it loads onto and how; ``base_model`` in the metadata only for a
    Hub id (a local folder is named in the text)."""
    hub_id = not Path(base).exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", base) is not None
    metadata = "library_name: peft\n" + (f"base_model: {base}\n" if hub_id else "") + \
        "tags:\n- entitynet\n- clip\n- lora\n"
    return (f"---\n{metadata}---\n\n# LoRA adapter for `{base}`\n\nTrained by EntityNet's trainer (`model.lora`): "
            f"{describe(info)}. The `model` folder beside it holds the same weights merged into a plain "
            "`CLIPModel`; this folder is the adapter alone, for loading onto its base:\n\n```python\n"
            "from peft import PeftModel\nfrom transformers import CLIPModel\n\n"
            f'model = PeftModel.from_pretrained(CLIPModel.from_pretrained("{base}"), "path/to/adapter")\n```\n')


def merged(model: PeftModel) -> torch.nn.Module:
    """The base model with the adapters' updates added to its weights, in place (the training is
    over: the final checkpoint holds the adapters), PEFT's layers replaced by plain ones."""
    return model.merge_and_unload()


__all__ = ["adapter_card", "describe", "matches", "merged", "save_adapter", "summary", "wrap"]
