"""LoRA (``model.lora``) against a full finetune of the same model: training steps per second, the
memory training adds on top of the model's weights, and the trainable parameters.

Both sides are the trainer's own pieces: the model of a preset (seeded; a finetune's starting
weights do not change what a step costs), for LoRA wrapped by ``training.lora.wrap`` with the
default targets (q/k/v/out projections of both towers), AdamW over ``train.parameter_groups``
(the trainable parameters only), ``accelerator.prepare``, and ``step.contrastive_step`` (gradient
norm, clipping, AdamW, the temperature clamp) on synthetic uint8 batches shaped as the collator's.

Each (side, round) runs in a fresh interpreter (``--one``); rounds alternate the sides and each
side's best round is kept. Memory: with the model built, the peak is reset (CUDA:
``torch.cuda.reset_peak_memory_stats``; CPU: ``5`` into ``/proc/self/clear_refs`` resets the
resident set's high-water mark ``VmHWM``), then the optimizer is made and one warm-up step plus
the timed steps run; training memory = the peak since the reset minus what was resident at it:
AdamW's states, gradients and activations (CUDA: ``torch.cuda.max_memory_allocated`` minus the
allocated bytes at the reset). The process's whole peak (``ru_maxrss``, weights included) is
reported beside it.

Speed: the median wall-clock time of the timed steps (steps/s), and the median CPU time the
process spent per step (``time.process_time``, all its threads): on a machine shared with other
jobs the wall clock measures the load as much as the step, the CPU time the step's work.

    python benchmarks/lora.py                         # ViT-B/32, batch 8, 3 timed steps, 2 rounds
    python benchmarks/lora.py --preset tiny --batch 32 --steps 10    # seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from memory import Vocabulary, make_model, peak_bytes, reset_peak, synthetic_batches

from entitynet.training.config import LoraConfig
from entitynet.training.loss import ClipLoss
from entitynet.training.model import PRESETS
from entitynet.training.step import contrastive_step
from entitynet.training.train import parameter_groups

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def one(side: str, preset: str, batch: int, steps: int, rank: int) -> dict[str, Any]:
    """One side measured in this process (run in a fresh interpreter)."""
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    model = make_model(preset, 32, vocabulary=Vocabulary(1024, 1021, 1022, 1023) if preset == "tiny" else None)
    if side == "lora":
        from entitynet.training import lora

        model = lora.wrap(model, LoraConfig(rank=rank, alpha=2.0 * rank), preset)
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    accelerator = Accelerator(cpu=not cuda)
    if cuda:
        model = model.to(accelerator.device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline, method = torch.cuda.memory_allocated(), "torch.cuda.max_memory_allocated"
    else:
        baseline, method = reset_peak()
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.2), lr=1e-5, betas=(0.9, 0.98), eps=1e-6)
    model, optimizer = accelerator.prepare(model, optimizer)
    logit_scale = accelerator.unwrap_model(model).logit_scale
    shape = PRESETS[preset]
    vocab = accelerator.unwrap_model(model).config.text_config.vocab_size
    group = synthetic_batches(1, batch, shape.image_size, 32, vocab, vocab - 2, accelerator.device)
    times, cpu_times, losses = [], [], []
    for index in range(steps + 1):  # the first step allocates AdamW's states and warms the kernels: not timed
        if cuda:
            torch.cuda.synchronize()
        started, cpu_started = time.perf_counter(), time.process_time()
        loss, _ = contrastive_step(model, group, loss_fn=ClipLoss(), logit_scale=logit_scale, accelerator=accelerator,
                                   optimizer=optimizer, lr=1e-5, max_grad_norm=1.0, mean=MEAN, std=STD)
        losses.append(float(loss))
        if cuda:
            torch.cuda.synchronize()
        if index:
            times.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu_started)
    peak = torch.cuda.max_memory_allocated() if cuda else peak_bytes(method)
    return {"side": side, "preset": preset, "batch": batch, "steps": steps, "rank": rank if side == "lora" else None,
            "device": str(accelerator.device), "parameters": parameters, "trainable": trainable,
            "step_s": statistics.median(times), "steps_per_s": 1 / statistics.median(times),
            "cpu_s_per_step": statistics.median(cpu_times),
            "training_bytes": peak - baseline, "process_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "method": method, "first_loss": losses[0]}


def measure(side: str, preset: str, batch: int, steps: int, rank: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--one", side, preset, str(batch), str(steps), str(rank)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vit-b-32", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round (after one warm-up step)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        side, preset, batch, steps, rank = args.one
        print(json.dumps(one(side, preset, int(batch), int(steps), int(rank))))
        return
    runs: dict[str, list[dict[str, Any]]] = {"full": [], "lora": []}
    for round_ in range(args.rounds):
        for side in ("full", "lora") if round_ % 2 == 0 else ("lora", "full"):
            result = measure(side, args.preset, args.batch, args.steps, args.rank)
            runs[side].append(result)
            print(f"round {round_ + 1} {side}: {result['steps_per_s']:.3f} steps/s, {result['cpu_s_per_step']:.1f} "
                  f"CPU s per step, training memory "
                  f"{result['training_bytes'] / 1e6:,.1f} MB, process peak {result['process_peak_bytes'] / 1e6:,.1f} MB",
                  file=sys.stderr)
    assert abs(runs["full"][0]["first_loss"] - runs["lora"][0]["first_loss"]) < 1e-4  # the same model and batch
    best = {side: {"steps_per_s": max(r["steps_per_s"] for r in rows),
                   "cpu_s_per_step": round(min(r["cpu_s_per_step"] for r in rows), 2),
                   "training_mb": round(min(r["training_bytes"] for r in rows) / 1e6, 1),
                   "process_peak_mb": round(min(r["process_peak_bytes"] for r in rows) / 1e6, 1),
                   "trainable": rows[0]["trainable"], "parameters": rows[0]["parameters"],
                   "rounds_steps_per_s": [round(r["steps_per_s"], 3) for r in rows],
                   "rounds_cpu_s_per_step": [round(r["cpu_s_per_step"], 2) for r in rows],
                   "rounds_training_mb": [round(r["training_bytes"] / 1e6, 1) for r in rows]}
            for side, rows in runs.items()}
    full, lora = best["full"], best["lora"]
    report = {"preset": args.preset, "batch": args.batch, "rank": args.rank, "device": runs["full"][0]["device"],
              "method": runs["full"][0]["method"], "torch": torch.__version__, **best,
              "lora_vs_full": {"steps_per_s": round(lora["steps_per_s"] / full["steps_per_s"], 3),
                               "cpu_s_per_step": round(lora["cpu_s_per_step"] / full["cpu_s_per_step"], 3),
                               "training_memory": round(lora["training_mb"] / full["training_mb"], 3),
                               "process_peak": round(lora["process_peak_mb"] / full["process_peak_mb"], 3),
                               "trainable": round(lora["trainable"] / full["trainable"], 5)}}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
