"""Peak memory of one accumulated training step on CPU: the step as it was before issue 18 (the
accumulation cache held whole CLIPOutputs) against ``training.step.contrastive_backward`` (the
cache holds the embeddings only), and ViT-B/32's memory per sample, with and without gradient
checkpointing, which bounds the per-GPU batch.

Method: each configuration runs in a fresh interpreter (``--one``). Once the model, an AdamW whose
states exist (a first step on zero gradients allocates them) and the micro-batches are in memory,
the process's peak resident set is reset (``5`` written to ``/proc/self/clear_refs`` resets
``VmHWM``); one step then runs (the cache's no-gradient pass, forward + backward per micro-batch,
AdamW's step), and its memory is ``VmHWM`` minus the resident set at the reset: gradients,
activations and the cache. tracemalloc does not see torch's allocations, and torch has no CPU
allocator statistics; RSS sees everything. Where clear_refs cannot be written, ru_maxrss is
used (then the model's construction may mask a smaller step, as the output says).

    python benchmarks/memory.py                     # tiny and ViT-B/32 shapes, before/after, per sample
    python benchmarks/memory.py --quick             # tiny shapes only (seconds)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from entitynet.training.images import normalize
from entitynet.training.loss import ClipLoss
from entitynet.training.model import PRESETS, enable_checkpointing, scratch_model
from entitynet.training.step import clip_embeddings, contrastive_backward

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
GB = 1e9


@dataclass
class Vocabulary:
    """What ``scratch_model`` reads of a tokenizer: its size and special ids (CLIP's BPE by
    default, the ViT-B/32 presets' tokenizer), so that no tokenizer has to be loaded or trained."""

    size: int = 49408
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    pad_token_id: int = 49407

    def __len__(self) -> int:
        return self.size


def make_model(preset: str, context_length: int, checkpointing: bool = False, vocabulary: Any = None) -> Any:
    """A scratch model of ``preset`` in training mode (seeded), checkpointing as the trainer does."""
    torch.manual_seed(0)
    if vocabulary is None:
        vocabulary = Vocabulary(1024, 1021, 1022, 1023) if preset == "tiny" else Vocabulary()
    model = scratch_model(preset, vocabulary, context_length)  # type: ignore[arg-type]
    if checkpointing:
        enable_checkpointing(model)
    return model.train()


def synthetic_batches(count: int, size: int, image_size: int, context_length: int, vocab: int,
                      eos: int, device: Any = "cpu") -> list[dict[str, torch.Tensor]]:
    """uint8 pixels and token ids shaped as the collator's (every caption padded to the context)."""
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(count):
        ids = torch.randint(0, vocab - 3, (size, context_length), generator=generator)
        ids[:, -1] = eos
        batches.append({key: value.to(device) for key, value in {
            "pixel_values": torch.randint(0, 256, (size, image_size, image_size, 3), dtype=torch.uint8,
                                          generator=generator),
            "input_ids": ids, "attention_mask": torch.ones_like(ids)}.items()})
    return batches


def step_before(model: Any, group: list[dict[str, torch.Tensor]], loss_fn: ClipLoss) -> torch.Tensor:
    """The trainer's step before issue 18 (commit 2980b79), kept to measure against: the cache
    holds every micro-batch's whole CLIPOutput, and each micro-batch's outputs live until the next
    forward has run."""
    def forward(batch: dict[str, torch.Tensor]) -> Any:
        return model(pixel_values=normalize(batch["pixel_values"], MEAN, STD), input_ids=batch["input_ids"],
                     attention_mask=batch["attention_mask"])

    with torch.no_grad():
        cached = [forward(batch) for batch in group]
    images = [out.image_embeds for out in cached]
    texts = [out.text_embeds for out in cached]
    for index, batch in enumerate(group):
        last = index == len(group) - 1
        outputs = forward(batch)
        scale = model.logit_scale if last else model.logit_scale.detach()
        loss = loss_fn(torch.cat(images[:index] + [outputs.image_embeds] + images[index + 1:]),
                       torch.cat(texts[:index] + [outputs.text_embeds] + texts[index + 1:]), scale)
        loss.backward()
    return loss.detach()


def step_after(model: Any, group: list[dict[str, torch.Tensor]], loss_fn: ClipLoss) -> torch.Tensor:
    return contrastive_backward(lambda batch: clip_embeddings(model, batch, MEAN, STD), group, loss_fn,
                                model.logit_scale, lambda loss: loss.backward(), contextlib.nullcontext)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> tuple[int, str]:
    """(resident bytes now, method): the peak is reset to now where Linux allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmRSS") * 1024, "VmHWM after clear_refs"
    except OSError:
        return _status_kb("VmRSS") * 1024, "ru_maxrss (peak not reset)"


def peak_bytes(method: str) -> int:
    if method.startswith("VmHWM"):
        return _status_kb("VmHWM") * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def one(preset: str, micro: int, accumulation: int, mode: str, checkpointing: bool, context_length: int) -> dict[str, Any]:
    """Measure one configuration in this process (run in a fresh interpreter)."""
    torch.set_num_threads(2)
    model = make_model(preset, context_length, checkpointing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for parameter in model.parameters():  # allocate AdamW's states: they are there at every later step
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    shape = PRESETS[preset]
    vocab = model.config.text_config.vocab_size
    group = synthetic_batches(accumulation, micro, shape.image_size, context_length, vocab, vocab - 2)
    step = step_before if mode == "before" else step_after
    baseline, method = reset_peak()
    loss = step(model, group, ClipLoss())
    optimizer.step()
    peak = peak_bytes(method)
    parameters = sum(p.numel() for p in model.parameters())
    return {"preset": preset, "micro_batch": micro, "accumulation_steps": accumulation, "mode": mode,
            "gradient_checkpointing": checkpointing, "parameters": parameters, "step_bytes": peak - baseline,
            "baseline_bytes": baseline, "method": method, "loss": float(loss)}


def measure(preset: str, micro: int, accumulation: int, mode: str, checkpointing: bool = False,
            context_length: int = 32) -> dict[str, Any]:
    command = [sys.executable, __file__, "--one", preset, str(micro), str(accumulation), mode,
               str(int(checkpointing)), str(context_length)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def largest_batch(per_sample: float, parameters: int, memory: float = 80 * GB) -> int:
    """Per-GPU batch that fits ``memory``: what is left after fp32 weights, gradients and AdamW's two
    states (16 bytes per parameter, as under Accelerate's bf16 autocast) over the memory per sample."""
    return int((memory - 16 * parameters) // per_sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes only")
    parser.add_argument("--one", nargs=6, metavar=("PRESET", "MICRO", "ACCUM", "MODE", "CKPT", "CONTEXT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        preset, micro, accumulation, mode, checkpointing, context = args.one
        print(json.dumps(one(preset, int(micro), int(accumulation), mode, checkpointing == "1", int(context))))
        return
    shapes = [("tiny", 256, 4)] + ([] if args.quick else [("vit-b-32", 8, 4)])
    report: dict[str, Any] = {"accumulated_step": []}
    for preset, micro, accumulation in shapes:
        before = measure(preset, micro, accumulation, "before")
        after = measure(preset, micro, accumulation, "after")
        assert abs(before["loss"] - after["loss"]) < 1e-4, (before["loss"], after["loss"])  # the same step
        row = {"preset": preset, "micro_batch": micro, "accumulation_steps": accumulation,
               "before_mb": round(before["step_bytes"] / 1e6, 1), "after_mb": round(after["step_bytes"] / 1e6, 1),
               "after_vs_before": round(after["step_bytes"] / before["step_bytes"], 3), "method": after["method"]}
        report["accumulated_step"].append(row)
        print(f"{preset} {micro} x {accumulation}: one step {row['before_mb']} MB before, {row['after_mb']} MB after "
              f"({row['after_vs_before']}x)", file=sys.stderr)
    if not args.quick:
        small, large = 4, 24  # far apart: at 8 vs 16 the difference drowned in the allocator's noise
        for checkpointing in (False, True):
            a = measure("vit-b-32", small, 1, "after", checkpointing)
            b = measure("vit-b-32", large, 1, "after", checkpointing)
            per_sample = (b["step_bytes"] - a["step_bytes"]) / (large - small)
            key = "with_checkpointing" if checkpointing else "without_checkpointing"
            report[key] = {"per_sample_mb_fp32": round(per_sample / 1e6, 2), "parameters": a["parameters"],
                           "step_mb_at": {small: round(a["step_bytes"] / 1e6, 1), large: round(b["step_bytes"] / 1e6, 1)},
                           "largest_batch_80gb": largest_batch(per_sample, a["parameters"]) if per_sample > 0 else None}
            print(f"ViT-B/32 {key.replace('_', ' ')}: {per_sample / 1e6:.1f} MB per sample (fp32, CPU) -> "
                  f"largest per-GPU batch in 80 GB {report[key]['largest_batch_80gb']}", file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
