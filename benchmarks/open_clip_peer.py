"""The open_clip side of open_clip_parity.py; runs under the peer interpreter (open_clip installed,
entitynet not), and exchanges files only.

    PEER/bin/python benchmarks/open_clip_peer.py make NAME CONTEXT OUT [--checkpoint FILE]
    PEER/bin/python benchmarks/open_clip_peer.py embed MODEL INPUTS.json OUT.safetensors
    PEER/bin/python benchmarks/open_clip_peer.py train CONFIG.json BATCH STEPS WARMUP PRECISION DEVICE OUT.json

``make``: a randomly initialised open_clip model (weights then perturbed so that no bias is zero and
no layer-norm weight is one: every weight shows in the embeddings), saved the way open_clip saves
Hub models (``open_clip_config.json`` via ``save_config_for_hf`` + ``open_clip_model.safetensors``);
``--checkpoint`` also writes a training checkpoint as open_clip's trainer does (``epoch``, ``name``,
``state_dict`` with DDP's ``module.`` prefix, ``optimizer``).
``embed``: token ids, the preprocessed image tensors and normalised fp32 embeddings, from
``create_model_and_transforms(MODEL)`` and ``get_tokenizer(MODEL)`` (MODEL as open_clip takes it,
e.g. ``local-dir:FOLDER``).
``train``: open_clip's own training step for gpu.py, on synthetic batches: ``open_clip.CLIP(**CONFIG)``,
its ``ClipLoss``, AdamW, under ``torch.autocast(bfloat16)`` for PRECISION bf16 (its trainer's
``amp_bf16``); writes images/s and peak memory (the CUDA allocator's, or the peak resident set).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import open_clip
import safetensors.torch
import torch
from open_clip.push_to_hf_hub import save_config_for_hf
from PIL import Image


def make(name: str, context_length: int, out: Path, checkpoint: Path | None) -> None:
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms(name, pretrained=None, force_context_length=context_length)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    config = open_clip.get_model_config(name)
    config["text_cfg"]["context_length"] = context_length
    out.mkdir(parents=True, exist_ok=True)
    save_config_for_hf(model, out / "open_clip_config.json", model_config=config)
    state = model.state_dict()
    safetensors.torch.save_file(state, str(out / "open_clip_model.safetensors"))
    if checkpoint:
        optimizer = torch.optim.AdamW([p for p in model.parameters()][:2], lr=1e-3)
        torch.save({"epoch": 1, "name": f"{name}-parity", "state_dict": {f"module.{k}": v for k, v in state.items()},
                    "optimizer": optimizer.state_dict()}, checkpoint)


@torch.no_grad()
def embed(model_name: str, inputs: Path, out: Path) -> None:
    spec = json.loads(inputs.read_text())
    model, _, preprocess = open_clip.create_model_and_transforms(model_name)
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    ids = tokenizer(spec["texts"])
    text = torch.cat([model.encode_text(chunk, normalize=True) for chunk in ids.split(64)])
    pixels = torch.stack([preprocess(Image.open(path)) for path in spec["images"]])
    image = model.encode_image(pixels, normalize=True)
    safetensors.torch.save_file({"ids": ids.contiguous(), "text": text.float().contiguous(), "pixels": pixels.contiguous(),
                                 "image": image.float().contiguous(), "logit_scale": model.logit_scale.detach().reshape(1)},
                                str(out))


def train(config_path: Path, batch: int, steps: int, warmup: int, precision: str, device: str, out: Path) -> None:
    import contextlib
    import time

    config = json.loads(config_path.read_text())
    torch.manual_seed(0)
    model = open_clip.CLIP(**config).to(device).train()
    loss_fn = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    size, context = config["vision_cfg"]["image_size"], config["text_cfg"]["context_length"]
    images = torch.randn(batch, 3, size, size, device=device)
    texts = torch.randint(0, config["text_cfg"]["vocab_size"], (batch, context), device=device)
    autocast = (torch.autocast(device_type=device, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())

    def step() -> float:
        with autocast:
            image_features, text_features, scale = model(images, texts)
            loss = loss_fn(image_features, text_features, scale)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        method = "torch.cuda.max_memory_allocated"
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident set (VmHWM)
        method = "VmHWM after clear_refs"
    started = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync()
    elapsed = time.perf_counter() - started
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("VmHWM:"))
    out.write_text(json.dumps({"batch": batch, "steps": steps, "images_per_s": batch * steps / elapsed,
                               "step_s": elapsed / steps, "peak_memory_bytes": peak, "memory_method": method,
                               "loss": float(loss.detach()), "parameters": sum(p.numel() for p in model.parameters())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    maker = commands.add_parser("make")
    maker.add_argument("name")
    maker.add_argument("context_length", type=int)
    maker.add_argument("out", type=Path)
    maker.add_argument("--checkpoint", type=Path)
    embedder = commands.add_parser("embed")
    embedder.add_argument("model")
    embedder.add_argument("inputs", type=Path)
    embedder.add_argument("out", type=Path)
    trainer = commands.add_parser("train")
    trainer.add_argument("config", type=Path)
    for name in ("batch", "steps", "warmup"):
        trainer.add_argument(name, type=int)
    trainer.add_argument("precision", choices=["bf16", "no"])
    trainer.add_argument("device", choices=["cuda", "cpu"])
    trainer.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "train":
        train(args.config, args.batch, args.steps, args.warmup, args.precision, args.device, args.out)
    elif args.command == "make":
        make(args.name, args.context_length, args.out, args.checkpoint)
    else:
        embed(args.model, args.inputs, args.out)


if __name__ == "__main__":
    main()
