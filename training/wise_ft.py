"""WiSE-FT (Wortsman et al., 2022): weight-space ensembles of a zero-shot CLIP and its finetune.

``interpolate(a, b, alpha)`` is ``(1 - alpha) * A + alpha * B`` over every floating-point parameter
and buffer (computed in float32, stored in B's dtype; alpha 0 and 1 are copies, so they are A and B
exactly). Integer buffers (``position_ids``) must be equal and are copied. ``write_ensembles``
writes one CLIPModel folder per alpha, with the finetune's tokenizer and image processor, so
``CLIPModel.from_pretrained`` and ``pipeline("zero-shot-image-classification")`` load each one.

Two models are refused, with one message naming what differs, when their weights' names or shapes,
their activations, their tokenizers (vocabulary, ids of probe texts, context length) or their
image inputs (size, mean, std) differ: an average of such models is no model.

OUT is assembled in a temporary folder beside it and renamed into place (``rundir.swap_in``), so
it holds all the alphas or none. An existing OUT is used when empty; one that holds what this
command did not write (no ``wise_ft.json``, or other entries) is refused, and one it wrote is
replaced only with ``force``. ``entitynet wise-ft`` (``wise_ft_scores`` adds the suite's table).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from entitynet.rundir import apply_umask, swap_in, temporary_folder, write_text_atomic

logger = logging.getLogger(__name__)

MANIFEST = "wise_ft.json"
# what OUT holds after this command (glob patterns of its top-level entries): only such an OUT is replaced
WRITTEN = (MANIFEST, "alpha-*", "eval", "scores.csv", "scores.json", "scores.png")
PROBE_TEXTS = ("a photo of a lion.", "Spotted leopard, Panthera pardus!", "an osprey in flight over the sea")


class WiseFTError(ValueError):
    """Models that cannot be interpolated, bad alphas or an OUT that cannot be written; the message names it."""


@dataclass(frozen=True)
class Ensemble:
    alpha: float
    folder: Path


def parse_alphas(text: str) -> list[float]:
    """``0,0.25,0.5`` -> [0.0, 0.25, 0.5]; each in [0, 1], none twice."""
    alphas = []
    for item in text.split(","):
        try:
            alpha = float(item)
        except ValueError:
            raise WiseFTError(f"--alphas {text}: {item.strip()!r} is not a number") from None
        if not (0.0 <= alpha <= 1.0) or math.isnan(alpha):
            raise WiseFTError(f"--alphas {text}: {item.strip()} is outside [0, 1] (0 is the zero-shot model, "
                              "1 the finetuned one)")
        if alpha in alphas:
            raise WiseFTError(f"--alphas {text}: {item.strip()} is given twice")
        alphas.append(alpha)
    return alphas


def folder_name(alpha: float) -> str:
    return f"alpha-{alpha:g}"


def interpolate(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * a + alpha * b`` per floating-point tensor; other tensors are b's (checked equal
    by ``check_compatible``). The ends are copies, not arithmetic: ``a + 1 * (b - a)`` is not b."""
    mixed = {}
    for name, right in b.items():
        left = a[name]
        if not right.is_floating_point():
            mixed[name] = right.clone()
        elif alpha == 0.0:
            mixed[name] = left.to(right.dtype).clone()
        elif alpha == 1.0:
            mixed[name] = right.clone()
        else:
            mixed[name] = ((1.0 - alpha) * left.float() + alpha * right.float()).to(right.dtype)
    return mixed


def weight_differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """What keeps two state dicts from being averaged: names one lacks, shapes, unequal integer buffers."""
    problems = []
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    for side, names in (("the zero-shot model", only_a), ("the finetuned model", only_b)):
        if names:
            problems.append(f"weights only {side} has: {_few(names)}")
    for name in sorted(set(a) & set(b)):
        if a[name].shape != b[name].shape:
            problems.append(f"{name}: shape {tuple(a[name].shape)} vs {tuple(b[name].shape)}")
        elif a[name].is_floating_point() != b[name].is_floating_point():
            problems.append(f"{name}: {a[name].dtype} vs {b[name].dtype}")
        elif not a[name].is_floating_point() and not torch.equal(a[name], b[name]):
            problems.append(f"{name}: integer buffers differ")
    return problems


def model_differences(a: Any, b: Any, finetuned_context: bool = False) -> list[str]:
    """Everything that differs between two loaded ``Clip`` models (evaluation.models) and keeps
    them from being averaged: weights, activations, tokenizers, image inputs. ``finetuned_context``:
    B is A's finetune, whose context length is its trainer's choice, not a difference."""
    problems = weight_differences(a.model.state_dict(), b.model.state_dict())
    for tower in ("text_config", "vision_config"):
        left, right = getattr(a.model.config, tower).hidden_act, getattr(b.model.config, tower).hidden_act
        if left != right:
            problems.append(f"{tower}.hidden_act: {left} vs {right}")
    problems += tokenizer_differences(a.tokenizer, b.tokenizer, finetuned_context)
    from entitynet.training.model import input_geometry

    for name, left, right in zip(("image size", "image mean", "image std"), input_geometry(a.processor),
                                 input_geometry(b.processor)):
        if left != right:
            problems.append(f"{name}: {left} vs {right}")
    return problems


def tokenizer_differences(a: Any, b: Any, finetuned_context: bool = False) -> list[str]:
    vocab_a, vocab_b = a.get_vocab(), b.get_vocab()
    if vocab_a != vocab_b:
        changed = sorted(token for token in set(vocab_a) | set(vocab_b) if vocab_a.get(token) != vocab_b.get(token))
        return [f"tokenizers: vocabularies differ ({len(vocab_a)} vs {len(vocab_b)} tokens; "
                f"{len(changed)} tokens missing or with other ids, e.g. {_few(changed, 3)})"]
    for text in PROBE_TEXTS:
        if a(text)["input_ids"] != b(text)["input_ids"]:
            return [f"tokenizers: {text!r} is tokenized differently ({a(text)['input_ids']} vs {b(text)['input_ids']})"]
    if a.model_max_length != b.model_max_length and not finetuned_context:
        return [f"tokenizers: context length {a.model_max_length} vs {b.model_max_length}"]
    return []


def foreign_entries(out: Path) -> list[str]:
    """The names in ``out`` that wise-ft does not write (``WRITTEN``)."""
    return sorted(e.name for e in out.iterdir() if not any(fnmatch.fnmatchcase(e.name, p) for p in WRITTEN))


def refuse_out(out: Path, force: bool, inputs: Sequence[str]) -> None:
    """OUT must not be, hold or lie inside an input; an existing OUT must be empty, or this command's
    own output (replaced only with ``force``)."""
    from entitynet.training.convert.convert import refuse_overlap
    from entitynet.training.convert.errors import ConversionError

    for source in inputs:
        if Path(source).exists():
            try:
                refuse_overlap(out, Path(source))
            except ConversionError as error:
                raise WiseFTError(str(error)) from None
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise WiseFTError(f"OUT {out} is {'a link' if out.is_symlink() else 'a file'}; name a folder to write")
    if not out.exists() or not any(out.iterdir()):
        return
    foreign = foreign_entries(out)
    if not (out / MANIFEST).is_file() or foreign:
        shown = _few(foreign) if foreign else f"no {MANIFEST}"
        raise WiseFTError(f"OUT {out} is not empty and not written by entitynet wise-ft ({shown}); name another OUT")
    if not force:
        raise WiseFTError(f"OUT {out} holds an earlier wise-ft output; pass --force to replace it")


def write_ensembles(zero_shot: str, finetuned: str, alphas: Sequence[float], out: str | Path,
                    force: bool = False, finetuned_context: bool = False) -> list[Ensemble]:
    """One CLIPModel folder per alpha under ``out`` (``alpha-0.5``...), and ``wise_ft.json``.
    ``finetuned_context``: the trainer's own finetune of ``zero_shot``, which truncates texts at its
    ``model.context_length`` (kept: the ensembles take its tokenizer) whatever ``zero_shot``'s is."""
    from entitynet.training.evaluation.models import ModelError, load_model

    out = Path(out)
    if not alphas:
        raise WiseFTError("no alphas given")
    refuse_out(out, force, (zero_shot, finetuned))
    try:
        a, b = load_model(zero_shot), load_model(finetuned)
    except ModelError as error:
        raise WiseFTError(str(error)) from None
    problems = model_differences(a, b, finetuned_context)
    if problems:
        raise WiseFTError(f"{zero_shot} and {finetuned} cannot be interpolated: " + "; ".join(problems))
    weights_a = {name: tensor.detach().cpu() for name, tensor in a.model.state_dict().items()}
    # a copy: load_state_dict below writes into b.model's own tensors, which its state_dict shares
    weights_b = {name: tensor.detach().cpu().clone() for name, tensor in b.model.state_dict().items()}
    del a.model
    staging = temporary_folder(out.resolve().parent, f".{out.name}.partial-")
    try:
        ensembles = []
        for alpha in alphas:
            folder = staging / folder_name(alpha)
            b.model.load_state_dict(interpolate(weights_a, weights_b, alpha))
            b.model.save_pretrained(folder, safe_serialization=True)
            b.tokenizer.save_pretrained(folder)
            b.processor.save_pretrained(folder)
            ensembles.append(Ensemble(alpha, out / folder.name))
            logger.info("alpha %g: %s", alpha, out / folder.name)
        manifest = {"method": "WiSE-FT: (1 - alpha) * zero_shot + alpha * finetuned, every floating-point weight",
                    "zero_shot": zero_shot, "finetuned": finetuned, "tokenizer_and_processor": finetuned,
                    "models": {folder_name(e.alpha): e.alpha for e in ensembles}}
        write_text_atomic(staging / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        apply_umask(staging)  # safetensors writes the weights 0600 whatever the umask
        if out.exists():
            refuse_out(out, True, ())  # checked again now: still empty or ours
        swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ensembles


def _few(names: Sequence[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
