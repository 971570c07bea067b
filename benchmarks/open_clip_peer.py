"""The open_clip side of open_clip_parity.py; runs under the peer interpreter (open_clip installed,
entitynet not), and exchanges files only.

    PEER/bin/python benchmarks/open_clip_peer.py make NAME CONTEXT OUT [--checkpoint FILE]
    PEER/bin/python benchmarks/open_clip_peer.py embed MODEL INPUTS.json OUT.safetensors

``make``: a randomly initialised open_clip model (weights then perturbed so that no bias is zero and
no layer-norm weight is one: every weight shows in the embeddings), saved the way open_clip saves
Hub models (``open_clip_config.json`` via ``save_config_for_hf`` + ``open_clip_model.safetensors``);
``--checkpoint`` also writes a training checkpoint as open_clip's trainer does (``epoch``, ``name``,
``state_dict`` with DDP's ``module.`` prefix, ``optimizer``).
``embed``: token ids, the preprocessed image tensors and normalised fp32 embeddings, from
``create_model_and_transforms(MODEL)`` and ``get_tokenizer(MODEL)`` (MODEL as open_clip takes it,
e.g. ``local-dir:FOLDER``).
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
    args = parser.parse_args()
    if args.command == "make":
        make(args.name, args.context_length, args.out, args.checkpoint)
    else:
        embed(args.model, args.inputs, args.out)


if __name__ == "__main__":
    main()
