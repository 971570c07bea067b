"""`entitynet convert` against the real open_clip: embeddings, token ids, preprocessing, round trip.

Two interpreters, files between them, so EntityNet never imports open_clip: this script (our venv)
converts and computes transformers' side; ``open_clip_peer.py`` under the peer venv (open_clip
installed, see ../shared/ENVIRONMENT.md) makes the open_clip models and computes open_clip's side.

For each model spec NAME@CONTEXT (default: ViT-B-32 at context 32 as the paper's models, and
ViT-B-32-quickgelu at 77):

1. open_clip makes a random model (weights perturbed so every weight matters) in its Hub layout,
   plus an ``epoch_1.pt`` training checkpoint of the first model;
2. ``entitynet convert open-clip`` converts the folder (and the checkpoint, with ``--model-name``);
3. texts (the 1,000 real alt texts of ../shared/realdata, edge cases of open_clip's cleaning and
   truncation, the zero-shot prompts) and the real photos of ../shared/realdata are run through
   both: token ids; embeddings of open_clip's own token ids and pixel tensors by the CLIPModel
   (the model parity, fp32, normalised); transformers' processor against open_clip's preprocess;
   the zero-shot pipeline's probabilities against open_clip's softmax;
4. ``entitynet convert to-open-clip`` and back into open_clip: tensors identical, embeddings equal;
5. once: a model trained here (scratch tokenizer, tiny preset, untrained) goes to open_clip and
   open_clip's embeddings of it equal transformers'.

    python benchmarks/open_clip_parity.py      # 12 CPU minutes; 24 minutes of wall time on 2 busy cores
    python benchmarks/open_clip_parity.py --models ViT-B-32@32 --alt-texts 200 --peer /path/to/peer/bin/python

Writes benchmarks/results/open_clip_parity.json and prints it. Acceptance (issue 11): max abs
difference <= 1e-4 of normalised fp32 embeddings, identical token ids.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
PEER_SCRIPT = Path(__file__).with_name("open_clip_peer.py")
LABELS = ["elephant", "bear", "cattle", "dog", "ocelot", "person", "car", "an empty forest"]
EDGE_TEXTS = [
    "It&#39;s Tom &amp; Jerry", "caf&eacute; &rsquo;quoted&rsquo; &ldquo;x&rdquo;", "&amp;quot;double&amp;quot;",
    "don\u2019t \u201ccurly\u201d \u2018single\u2019", "\ufb01ne \ufb02ower", "tab\there\nnewline\r\nx",
    "\x00ctrl\x07chars\x1b[31mred\x1b[0m", "\u039f\u0394\u039f\u03a3 \u03a3\u0391\u03a3", "\u0130stanbul",
    "   lots   of    spaces   ", "nbsp\u00a0here and\u2003em", "emoji \U0001f431 and \u6f22\u5b57 text",
    "\u00c5NGSTR\u00d6M \u00dcn\u00efc\u00f6d\u00e9", "e\u0301 decomposed", "numbers 123 4567 3.14", "hello!! what?? ...",
    "C'EST L'\u00c9T\u00c9, it's we're I'll they'd", "&lt;b&gt;bold&lt;/b&gt;", "x" * 300, " ".join(["word"] * 80),
]


def run(command: list[str], **kwargs: Any) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, **kwargs)
    return time.perf_counter() - started


def inputs(work: Path, alt_texts: int) -> tuple[list[str], list[Path]]:
    import pyarrow.parquet as pq

    table = pq.read_table(REALDATA / "image_text_pairs/img2dataset/test_1000.parquet")
    alt = [t for t in table.column("TEXT").to_pylist() if t][:alt_texts]
    prompts = [f"This is a photo of {label}." for label in LABELS]  # the pipeline's default template
    photos = REALDATA / "labelled_photos" / "cameratrapai"
    images = []
    for path in sorted(photos.glob("*.jpg")):
        try:
            with Image.open(path) as image:
                image.load()
            images.append(path)
        except OSError:  # the truncated file: neither side can read it
            continue
    texts = alt + EDGE_TEXTS + prompts
    (work / "inputs.json").write_text(json.dumps({"texts": texts, "images": [str(p) for p in images]}))
    return texts, images


def entitynet(*arguments: str) -> float:
    return run([sys.executable, "-m", "entitynet", *arguments, "-q"])


def peer_embed(peer: str, model: str, work: Path, out: Path) -> dict[str, torch.Tensor]:
    run([peer, str(PEER_SCRIPT), "embed", model, str(work / "inputs.json"), str(out)])
    return load_file(str(out))


@torch.no_grad()
def compare(folder: Path, theirs: dict[str, torch.Tensor], texts: list[str], images: list[Path]) -> dict[str, Any]:
    from transformers import CLIPModel, CLIPProcessor, pipeline

    model = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPProcessor.from_pretrained(folder)
    context = model.config.text_config.max_position_embeddings
    normalize = torch.nn.functional.normalize

    def text_features(ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = torch.ones_like(ids) if mask is None else mask  # open_clip's ids: no mask, as open_clip runs them
        return torch.cat([normalize(model.get_text_features(input_ids=i, attention_mask=m).pooler_output, dim=-1)
                          for i, m in zip(ids.split(64), mask.split(64))])

    def image_features(pixels: torch.Tensor) -> torch.Tensor:
        return normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)

    ours = processor.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
    real = ours["attention_mask"].bool()
    same_tokens = (ours["input_ids"] == theirs["ids"]) | ~real  # up to and including the end token
    padding_as_open_clip = (theirs["ids"][~real] == 0).all().item()  # open_clip pads with 0 where we pad with 49407
    identical = same_tokens.all(dim=1) & (theirs["ids"] * ~real == 0).all(dim=1)
    opened = [Image.open(path) for path in images]
    rgb = [i for i, image in enumerate(opened) if image.mode == "RGB"]
    # transformers' pipeline turns photos upright by their EXIF orientation (load_image); open_clip does not
    upright = [i for i in rgb if opened[i].getexif().get(0x0112, 1) == 1]
    pixels = processor.image_processor(images=opened, return_tensors="pt")["pixel_values"]
    by_mode = {mode: (pixels[idx] - theirs["pixels"][idx]).abs().max().item()
               for mode in sorted({image.mode for image in opened})
               for idx in [[i for i, image in enumerate(opened) if image.mode == mode]]}
    result: dict[str, Any] = {
        "context_length": context, "activation": model.config.text_config.hidden_act, "texts": len(texts),
        "images": len(images), "texts_identical_ids": int(identical.sum()), "padding_is_open_clips_0": bool(padding_as_open_clip),
        # the model alone: open_clip's own token ids and pixel tensors in, embeddings compared
        "model_text_max_abs_diff": (text_features(theirs["ids"]) - theirs["text"]).abs().max().item(),
        "model_image_max_abs_diff": (image_features(theirs["pixels"]) - theirs["image"]).abs().max().item(),
        # end to end: transformers' tokenizer and image processor in front
        "tokenizer_text_max_abs_diff": (text_features(ours["input_ids"], ours["attention_mask"]) - theirs["text"]).abs().max().item(),
        "processor_pixel_max_abs_diff_by_mode": by_mode,  # open_clip resizes before converting to RGB, transformers after
        "processor_image_max_abs_diff_rgb": (image_features(pixels[rgb]) - theirs["image"][rgb]).abs().max().item(),
    }
    classify = pipeline("zero-shot-image-classification", model=str(folder))
    prompts = torch.stack([theirs["text"][texts.index(f"This is a photo of {label}.")] for label in LABELS])
    worst = 0.0
    for i in upright[:4]:
        scores = {s["label"]: s["score"] for s in classify(opened[i], candidate_labels=LABELS)}
        expected = (theirs["logit_scale"].exp() * theirs["image"][i] @ prompts.T).softmax(-1)
        worst = max(worst, max(abs(scores[label] - expected[k].item()) for k, label in enumerate(LABELS)))
    result["pipeline_probability_max_abs_diff"] = worst
    return result


def parity(spec: str, peer: str, work: Path, texts: list[str], images: list[Path], checkpoint: bool) -> dict[str, Any]:
    name, context = spec.split("@")
    oc, hf, back = work / f"{name}-oc", work / f"{name}-hf", work / f"{name}-oc-back"
    epoch = work / f"{name}-epoch_1.pt"
    run([peer, str(PEER_SCRIPT), "make", name, context, str(oc), *(["--checkpoint", str(epoch)] if checkpoint else [])])
    seconds = entitynet("convert", "open-clip", str(oc), str(hf))
    theirs = peer_embed(peer, f"local-dir:{oc}", work, work / f"{name}-oc.safetensors")
    result = {"model": spec, "convert_s": round(seconds, 1), **compare(hf, theirs, texts, images)}
    # the way back: the same tensors, and open_clip computes the same embeddings from them
    entitynet("convert", "to-open-clip", str(hf), str(back))
    source, returned = load_file(str(oc / "open_clip_model.safetensors")), load_file(str(back / "open_clip_model.safetensors"))
    result["round_trip_tensors_identical"] = source.keys() == returned.keys() and all(torch.equal(source[k], returned[k]) for k in source)
    again = peer_embed(peer, f"local-dir:{back}", work, work / f"{name}-oc-back.safetensors")
    result["round_trip_embedding_max_abs_diff"] = max((again[k] - theirs[k]).abs().max().item() for k in ("text", "image"))
    result["round_trip_ids_identical"] = torch.equal(again["ids"], theirs["ids"])
    if checkpoint:
        entitynet("convert", "open-clip", str(epoch), str(work / f"{name}-epoch-hf"), "--model-name", name)
        a, b = load_file(str(hf / "model.safetensors")), load_file(str(work / f"{name}-epoch-hf" / "model.safetensors"))
        result["checkpoint_conversion_identical"] = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for folder in (oc, hf, back, work / f"{name}-epoch-hf"):  # 600 MB each at ViT-B-32
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    epoch.unlink(missing_ok=True)
    return result


@torch.no_grad()
def trained_here(peer: str, work: Path, texts: list[str]) -> dict[str, Any]:
    """A model made by our trainer's code (scratch BPE, tiny preset) continues in open_clip."""
    from transformers import CLIPModel, CLIPProcessor

    from entitynet.training import model as scratch

    torch.manual_seed(0)
    tokenizer = scratch.train_tokenizer(texts[:800], vocab_size=2000, context_length=32)
    scratch.save(work / "scratch-hf", scratch.scratch_model("tiny", tokenizer), tokenizer, scratch.image_processor(64))
    entitynet("convert", "to-open-clip", str(work / "scratch-hf"), str(work / "scratch-oc"), "--repo", "me/scratch")
    theirs = peer_embed(peer, f"local-dir:{work / 'scratch-oc'}", work, work / "scratch.safetensors")
    model = CLIPModel.from_pretrained(work / "scratch-hf").eval()
    processor = CLIPProcessor.from_pretrained(work / "scratch-hf")
    ids = processor.tokenizer(texts, padding="max_length", truncation=True, max_length=32, return_tensors="pt")["input_ids"]
    # the model alone: open_clip's ids in (its HFTokenizer cleans texts with ftfy and HTML unescaping first)
    ours = torch.nn.functional.normalize(model.get_text_features(input_ids=theirs["ids"]).pooler_output, dim=-1)
    image = torch.nn.functional.normalize(model.get_image_features(pixel_values=theirs["pixels"]).pooler_output, dim=-1)
    return {"model": "trained here (tiny, scratch BPE) -> open_clip", "texts": len(texts), "images": len(theirs["pixels"]),
            "texts_identical_ids": int((ids == theirs["ids"]).all(dim=1).sum()),
            "model_text_max_abs_diff": (ours - theirs["text"]).abs().max().item(),
            "model_image_max_abs_diff": (image - theirs["image"]).abs().max().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", default=str(REPO.parent / "peer" / "bin" / "python"), help="python of the open_clip venv")
    parser.add_argument("--models", nargs="+", default=["ViT-B-32@32", "ViT-B-32-quickgelu@77"], metavar="NAME@CONTEXT")
    parser.add_argument("--alt-texts", type=int, default=1000, metavar="N", help="how many of the 1,000 real alt texts")
    parser.add_argument("--no-trained-here", dest="trained_here", action="store_false")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "open_clip_parity.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="open-clip-parity-") as tmp:
        work = Path(tmp)
        texts, images = inputs(work, args.alt_texts)
        results = [parity(spec, args.peer, work, texts, images, checkpoint=i == 0) for i, spec in enumerate(args.models)]
        if args.trained_here:
            results.append(trained_here(args.peer, work, texts))
    peer_version = subprocess.run([args.peer, "-c", "import open_clip; print(open_clip.__version__)"], capture_output=True,
                                  text=True, check=True).stdout.strip()
    report = {"open_clip": peer_version, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
