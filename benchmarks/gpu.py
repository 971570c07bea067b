"""The GPU check: the trainer's ViT-B/32 bf16 step on one GPU, in images/s and peak memory, with
open_clip's own training step on the same GPU and shapes beside it. One command, one JSON.

- ``synthetic``: the trainer's step (``training.step.contrastive_backward``, gradient-norm
  clipping and AdamW as in ``train``) on batches already on the device, at the batch and at
  half of it: the difference gives the memory per sample, hence the largest batch that fits
  80 GB; again with gradient checkpointing (``synthetic_checkpointing``);
- ``real_input``: the same step fed by the trainer's own input path (map-style rows of a built
  dataset, ``Collator``'s decode + crop + text mix in ``--num-workers`` data-loader workers,
  ``accelerator.prepare``d loader), timed as the trainer logs it: images/s and the share of the
  time spent waiting for the next batch (``data_wait_share``);
- ``eval_images``: evaluation's image pass (``evaluation.features.embed_images``, its decode
  threads, bf16 autocast) over the dataset's test rows, repeated to ``--eval-images`` images;
- ``open_clip``: open_clip's model (the same shapes, written as an open_clip model config), its
  ``ClipLoss`` and AdamW under ``torch.autocast(bfloat16)`` as its trainer's ``amp_bf16``, on the
  same synthetic batch size, run by the peer interpreter (``open_clip_peer.py train``); skipped,
  with the reason in the JSON, where that interpreter or open_clip is absent. ``ours_vs_open_clip``
  is the ratio of the synthetic images/s.

Peak memory is ``torch.cuda.max_memory_allocated`` after a reset on a GPU; on a CPU it is the
process's peak resident set over the phase (``benchmarks/memory.py``'s method). Without
``--dataset`` the script first builds the demo's dataset (``entitynet demo --no-train``, synthetic
drawings) in a temporary folder. The default shapes are the paper's; the whole run takes a few
minutes on one GPU (under 8).

    python benchmarks/gpu.py --out gpu.json
    python benchmarks/gpu.py --dataset runs/living/dataset --batch 512 --out gpu.json
    python benchmarks/gpu.py --preset tiny --batch 8 --steps 2 --warmup 1 --eval-images 16 --num-workers 0 \\
        --dataset entitynet-demo/dataset --out tiny.json      # on a CPU, in seconds (tests/test_gpu_check.py)
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory import GB, Vocabulary, largest_batch, make_model, peak_bytes, reset_peak, synthetic_batches

from entitynet.training.loss import ClipLoss
from entitynet.training.model import PRESETS, image_processor, input_geometry
from entitynet.training.step import clip_embeddings, contrastive_backward

REPO = Path(__file__).resolve().parents[1]
PEER_SCRIPT = Path(__file__).with_name("open_clip_peer.py")
CONTEXT = 32


class Peak:
    """Peak memory over a phase: the CUDA allocator's on a GPU, the peak resident set on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.method = "torch.cuda.max_memory_allocated" if self.cuda else ""

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.baseline, self.method = reset_peak()

    def bytes(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return peak_bytes(self.method)  # the whole process's peak: what the phase needed on top of what was there


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def release(accelerator: Any) -> None:
    """Let go of a phase's model, optimizer and loader: the Accelerator keeps every prepared object,
    which would count in the next phase's peak."""
    accelerator.free_memory()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def trainer_step(accelerator: Any, model: Any, optimizer: Any, mean: tuple, std: tuple) -> Callable[[dict], float]:
    """The trainer's optimizer_step without its schedule: one contrastive batch, the gradient norm
    (the trainer always computes it), AdamW, the temperature's clamp."""
    unwrapped = accelerator.unwrap_model(model)
    loss_fn = ClipLoss(accelerator.process_index, accelerator.num_processes)

    def step(batch: dict) -> float:
        loss = contrastive_backward(lambda b: clip_embeddings(model, b, mean, std), [batch], loss_fn,
                                    unwrapped.logit_scale, accelerator.backward, lambda: accelerator.no_sync(model))
        accelerator.clip_grad_norm_(model.parameters(), float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            unwrapped.logit_scale.clamp_(0, 4.6052)
        return loss

    return step


def synthetic(accelerator: Any, preset: str, batch: int, steps: int, warmup: int, checkpointing: bool) -> dict[str, Any]:
    vocabulary = Vocabulary(1024, 1021, 1022, 1023) if preset == "tiny" else Vocabulary()
    model = make_model(preset, CONTEXT, checkpointing, vocabulary)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model, optimizer = accelerator.prepare(model, optimizer)
    _, mean, std = input_geometry(image_processor(PRESETS[preset].image_size))
    step = trainer_step(accelerator, model, optimizer, mean, std)
    data = synthetic_batches(1, batch, PRESETS[preset].image_size, CONTEXT, len(vocabulary), vocabulary.eos_token_id,
                             accelerator.device)[0]
    peak = Peak(accelerator.device)
    for _ in range(warmup):  # allocates AdamW's states, autotunes kernels
        step(data)
    peak.start()
    sync(accelerator.device)
    started = time.perf_counter()
    for _ in range(steps):
        loss = step(data)
    sync(accelerator.device)
    elapsed = time.perf_counter() - started
    result = {"batch": batch, "steps": steps, "images_per_s": batch * steps / elapsed, "step_s": elapsed / steps,
              "peak_memory_bytes": peak.bytes(), "loss": float(loss),
              "parameters": sum(p.numel() for p in model.parameters())}
    del model, optimizer, step, data
    release(accelerator)
    return result


def with_batch_limit(full: dict[str, Any], half: dict[str, Any]) -> dict[str, Any]:
    """The memory per sample from two batch sizes, and the batch that fits 80 GB by it."""
    per_sample = (full["peak_memory_bytes"] - half["peak_memory_bytes"]) / max(full["batch"] - half["batch"], 1)
    return {**full, "half_batch": {k: half[k] for k in ("batch", "images_per_s", "peak_memory_bytes")},
            "per_sample_bytes": per_sample,
            "largest_batch_80gb": largest_batch(per_sample, full["parameters"]) if per_sample > 0 else None}


def build_demo_dataset(folder: Path) -> Path:
    from entitynet.cli import main

    if main(["demo", "--out", str(folder), "--size", "full", "--no-train", "-q"]) != 0:
        raise SystemExit("error: building the demo's dataset failed; pass --dataset DIR (a built dataset)")
    return folder / "dataset"


def real_input(accelerator: Any, preset: str, dataset: str, batch: int, steps: int, warmup: int,
               workers: int, output: Path) -> dict[str, Any]:
    """The trainer's input path into the trainer's step, timed as the trainer logs it."""
    from torch.utils.data import ConcatDataset, DataLoader

    from entitynet.training import train as trainer
    from entitynet.training.config import load_train_config
    from entitynet.training.data import Collator
    from entitynet.training.model import train_tokenizer
    from entitynet.training.sources import resolve
    from entitynet.training.text_mix import training_texts

    config = load_train_config("tiny", [f"dataset={dataset}", f"output_dir={output}", f"batch_size={batch}",
                                        f"num_workers={workers}"])
    source = resolve(config.dataset, config.dataset_config, "train")
    rows = trainer.map_style_rows(config)
    tokenizer = train_tokenizer(training_texts(trainer.text_sample(config, source, rows), config.text),
                                1000 if preset == "tiny" else 16_384, CONTEXT)
    # a small dataset (the demo's) is read several times over so that every batch is full: the
    # same decode, crop and text mix per row, only fewer distinct images
    repeats = -(-batch * 2 // len(rows)) if len(rows) < batch * 2 else 1
    train_rows = len(rows)
    if repeats > 1:
        rows = ConcatDataset([rows] * repeats)
    image_size = PRESETS[preset].image_size
    _, mean, std = input_geometry(image_processor(image_size))
    model = make_model(preset, CONTEXT, False, tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    collator = Collator(tokenizer, config.text, config.augment, image_size, config.seed, CONTEXT)
    loader = DataLoader(rows, batch_size=batch, shuffle=True, drop_last=True, collate_fn=collator,
                        num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=accelerator.device.type == "cuda",
                        generator=torch.Generator().manual_seed(config.seed))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    step = trainer_step(accelerator, model, optimizer, mean, std)

    def batches(loader: Any = loader) -> Any:  # bound now: the names are deleted below to free memory
        while True:  # epochs, as long as needed
            yield from loader

    iterator = batches()
    for _ in range(warmup):
        step(next(iterator))
    peak = Peak(accelerator.device)
    peak.start()
    clock = trainer.Throughput()
    for _ in range(steps):
        group = trainer._take(iterator, 1, clock)
        step(group[0])
        clock.images += batch
    sync(accelerator.device)
    read = clock.read()
    result = {"batch": batch, "steps": steps, "num_workers": workers, "train_rows": train_rows, "rows_repeated": repeats, **read,
              "peak_memory_bytes": peak.bytes()}
    del model, optimizer, loader, iterator, step, batches
    release(accelerator)
    return result


def eval_images(accelerator: Any, preset: str, dataset: str, count: int, output: Path) -> dict[str, Any]:
    from entitynet.training import train as trainer
    from entitynet.training.config import load_train_config
    from entitynet.training.evaluation.features import embed_images
    from entitynet.training.evaluation.inputs import built_examples

    config = load_train_config("tiny", [f"dataset={dataset}", f"output_dir={output}", f"eval.max_images={count}"])
    rows = trainer.eval_rows(config, config.eval.split) or []
    if not rows:
        return {"skipped": f"{dataset} has no {config.eval.split} rows"}
    rows = (rows * (count // len(rows) + 1))[:count]
    model = accelerator.prepare(make_model(preset, CONTEXT))
    processor = image_processor(PRESETS[preset].image_size)
    embed_images(model, processor, built_examples(rows[:64]), accelerator, progress=False)  # warm-up
    peak = Peak(accelerator.device)
    peak.start()
    started = time.perf_counter()
    features = embed_images(model, processor, built_examples(rows), accelerator, batch_size=256, progress=False)
    sync(accelerator.device)
    elapsed = time.perf_counter() - started
    result = {"images": len(features), "images_per_s": len(features) / elapsed, "peak_memory_bytes": peak.bytes()}
    del model
    release(accelerator)
    return result


def open_clip_config(preset: str, vocab_size: int) -> dict[str, Any]:
    """Our preset's shapes as an open_clip model config (``open_clip.CLIP(**config)``)."""
    shape = PRESETS[preset]
    return {"embed_dim": shape.embed_dim,
            "vision_cfg": {"image_size": shape.image_size, "layers": shape.vision_layers,
                           "width": shape.vision_width, "patch_size": shape.patch_size,
                           "head_width": shape.vision_width // shape.vision_heads},
            "text_cfg": {"context_length": CONTEXT, "vocab_size": vocab_size, "width": shape.text_width,
                         "heads": shape.text_heads, "layers": shape.text_layers}}


def open_clip_step(peer: str, preset: str, batch: int, steps: int, warmup: int, precision: str,
                   device: torch.device, work: Path) -> dict[str, Any]:
    if not Path(peer).exists():
        return {"skipped": f"no open_clip interpreter at {peer} (--peer)"}
    found = subprocess.run([peer, "-c", "import open_clip; print(open_clip.__version__)"], capture_output=True, text=True)
    if found.returncode != 0:
        return {"skipped": f"{peer} cannot import open_clip"}
    config = work / "open_clip_config.json"
    config.write_text(json.dumps(open_clip_config(preset, 1024 if preset == "tiny" else Vocabulary().size)))
    out = work / "open_clip_step.json"
    done = subprocess.run([peer, str(PEER_SCRIPT), "train", str(config), str(batch), str(steps), str(warmup), precision,
                           device.type, str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        return {"failed": done.stderr[-2000:]}
    return {"open_clip": found.stdout.strip(), **json.loads(out.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vit-b-32", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=256, help="per-step batch of the synthetic and real-input phases")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per phase")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each phase")
    parser.add_argument("--eval-images", type=int, default=2048)
    parser.add_argument("--dataset", help="a built dataset folder (default: the demo's, built first)")
    parser.add_argument("--num-workers", type=int, default=8)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "no"])
    parser.add_argument("--peer", default=str(REPO.parent / "peer" / "bin" / "python"), help="python of an open_clip venv")
    parser.add_argument("--out", type=Path, default=Path("gpu.json"))
    args = parser.parse_args()
    from accelerate import Accelerator

    began = time.perf_counter()
    accelerator = Accelerator(mixed_precision=args.precision)
    device = accelerator.device
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
        "preset": args.preset, "precision": args.precision, "batch": args.batch,
        "memory_method": Peak(device).method or "peak resident set (VmHWM after clear_refs, or ru_maxrss)"}
    half = max(args.batch // 2, 1)
    full = synthetic(accelerator, args.preset, args.batch, args.steps, args.warmup, False)
    report["synthetic"] = with_batch_limit(full, synthetic(accelerator, args.preset, half, args.steps, args.warmup, False))
    full = synthetic(accelerator, args.preset, args.batch, args.steps, args.warmup, True)
    report["synthetic_checkpointing"] = with_batch_limit(
        full, synthetic(accelerator, args.preset, half, args.steps, args.warmup, True))
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        dataset = args.dataset or str(build_demo_dataset(work / "demo"))
        report["dataset"] = dataset if args.dataset else "the demo's dataset (entitynet demo --no-train), built here"
        report["real_input"] = real_input(accelerator, args.preset, dataset, args.batch, args.steps, args.warmup,
                                          args.num_workers, work / "out")
        report["eval_images"] = eval_images(accelerator, args.preset, dataset, args.eval_images, work / "out")
        report["open_clip"] = open_clip_step(args.peer, args.preset, args.batch, args.steps, args.warmup,
                                             args.precision, device, work)
    theirs = report["open_clip"].get("images_per_s")
    report["ours_vs_open_clip"] = report["synthetic"]["images_per_s"] / theirs if theirs else None
    report["wall_s"] = time.perf_counter() - began
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    synthetic_line = report["synthetic"]
    print(f"{args.preset} {args.precision} batch {args.batch} on {report['device']}: "
          f"{synthetic_line['images_per_s']:.0f} images/s synthetic, {report['real_input']['images_per_s']:.0f} from the "
          f"dataset (data wait {100 * report['real_input']['data_wait_share']:.0f}%), peak "
          f"{synthetic_line['peak_memory_bytes'] / GB:.2f} GB; open_clip: "
          f"{theirs and f'{theirs:.0f} images/s' or report['open_clip']}; written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
