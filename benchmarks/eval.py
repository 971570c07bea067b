"""`entitynet eval`'s image throughput against the bare model forward on the same batches.

The images are the real camera-trap photos (../shared/realdata), cut and scaled to ImageNet-like
JPEGs (about 500x375, quality 90, varied crops) and written as CLIP_benchmark webdataset shards. The
model is a randomly initialised ViT-B/32 CLIPModel (transformers' default CLIPConfig) with a small
tokenizer; weights do not change the work.

- bare: every image decoded and preprocessed by the model's image processor beforehand (not
  timed); then only ``model.get_image_features`` over the batches is timed;
- ours: the image pass of a zero-shot classification task on the shards, timed from opening the
  data to the last embedding: reading the tars, decoding, preprocessing, the forward,
  normalising, keeping labels; "whole task" adds the classifier from the 8 class names (a text
  forward), ranking and the metric module;
- bound: on a CPU the model's threads use every core, so decoding cannot hide behind the
  forward: the best possible rate is 1 / (forward + decode and preprocess), both measured here.

Both in this process, one after the other in each round; the ratio is taken per round (this
machine is shared, so rates drift between rounds) and its median reported, in wall time and in
CPU time of the process (all threads). Target: ours >= 0.9x bare.

    python benchmarks/eval.py                         # 256 images, batch 64, 3 rounds
    python benchmarks/eval.py --images 64 --rounds 2 --patch 16   # ViT-B/16
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from eval_data import label_of, webdataset  # noqa: E402

PHOTOS = REPO.parent / "shared" / "realdata" / "labelled_photos" / "cameratrapai"


def imagenet_like(photos: list[Path], count: int, folder: Path) -> list[Path]:
    """``count`` JPEGs about ImageNet's size, cut from the photos at random places and scales."""
    from PIL import Image, ImageOps

    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    sources = [ImageOps.exif_transpose(Image.open(p)).convert("RGB") for p in photos]
    out = []
    for n in range(count):
        index = n % len(photos)
        image = sources[index]
        width = rng.randint(image.width // 3, image.width)
        height = min(image.height, int(width * rng.uniform(0.6, 0.9)))
        left, top = rng.randint(0, image.width - width), rng.randint(0, image.height - height)
        crop = image.crop((left, top, left + width, top + height))
        crop = crop.resize((500, max(1, round(500 * height / width))), Image.BICUBIC)
        path = folder / f"{photos[index].stem}_{n:04d}.jpg"
        buffer = io.BytesIO()
        crop.save(buffer, "JPEG", quality=90)
        path.write_bytes(buffer.getvalue())
        out.append(path)
    return out


def vit(folder: Path, words: list[str], patch: int) -> Path:
    """transformers' default CLIPConfig is ViT-B/32 at 224 px (patch 16: ViT-B/16); the text side
    gets a small tokenizer."""
    from eval_data import tiny_clip
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    tiny = tiny_clip(folder / "tokenizer-source", words)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config={"vocab_size": len(tokenizer), "max_position_embeddings": 32,
                                              "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0},
                                 vision_config={"patch_size": patch}))
    out = folder / f"vit-b-{patch}"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    CLIPImageProcessor().save_pretrained(out)
    return out


class Clock:
    """Wall and CPU seconds (all threads of this process) of a block."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def preprocess(clip, images: list[Path], batch: int) -> tuple[list[torch.Tensor], Clock]:
    """The batches the model sees, and what making them took (one thread)."""
    from entitynet.training.evaluation.images import decode

    with Clock() as clock:
        decoded = [decode(p.read_bytes(), str(p)) for p in images]
        pixels = [clip.processor(images=decoded[i:i + batch], return_tensors="pt")["pixel_values"]
                  for i in range(0, len(decoded), batch)]
    return pixels, clock


def bare(clip, pixels: list[torch.Tensor]) -> Clock:
    with Clock() as clock, torch.no_grad():
        for batch in pixels:
            clip.model.get_image_features(pixel_values=batch)
    return clock


def ours(clip, shards: Path, batch: int, workers: int | None) -> tuple[Clock, Clock]:
    """Clocks of the image pass and of the whole task."""
    from accelerate import Accelerator

    from entitynet.training.evaluation.features import embed_images
    from entitynet.training.evaluation.inputs import DataSpec, open_input
    from entitynet.training.evaluation.tasks import FeatureCache, Settings, TaskSpec, run_task

    accelerator, spec = Accelerator(), TaskSpec("bench", DataSpec(str(shards)))
    with Clock() as task:
        with Clock() as image_pass:
            source = open_input(spec.data)
            features = embed_images(clip.model, clip.processor, source.read(), accelerator, batch, workers, progress=False)
        cache = FeatureCache({source.key: features})
        run_task(clip, spec, accelerator, cache, Settings(batch_size=batch, workers=workers, progress=False), source)
    return image_pass, task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, help="decoding threads (default: evaluation's own default)")
    parser.add_argument("--photos", default=str(PHOTOS))
    parser.add_argument("--patch", type=int, choices=[32, 16], default=32, help="ViT-B/32 or ViT-B/16")
    parser.add_argument("--threads", type=int, help="torch threads (default torch's: one per core); 1 makes the "
                        "CPU-time ratio nearly independent of other load on the machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from entitynet.training.evaluation import load_model

    work = Path(tempfile.mkdtemp(prefix="eval-bench-"))
    photos = sorted(p for p in Path(args.photos).glob("*.jpg") if "truncated" not in p.name)
    images = imagenet_like(photos, args.images, work / "images")
    shards = webdataset(images, work / "wds", shards=4)
    clip = load_model(str(vit(work, [f"a photo of a {label_of(p)}." for p in photos] * 20, args.patch)))
    clip.model.eval()
    pixels, _ = preprocess(clip, images, args.batch)
    bare(clip, pixels[:1])  # warm-up: first calls allocate
    n = args.images
    print(f"images {n} (about 500x375 JPEG), batch {args.batch}, torch threads {torch.get_num_threads()}, "
          f"ViT-B/{args.patch} fp32 on CPU")
    print("| round | bare img/s | ours img/s | ours / bare | bound / bare | whole task img/s | "
          "bare img/CPU-s | ours img/CPU-s | ours / bare (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios, cpu_ratios = [], []
    for round_ in range(1, args.rounds + 1):
        forward = bare(clip, pixels)
        _, prep = preprocess(clip, images, args.batch)
        image_pass, task = ours(clip, shards, args.batch, args.workers)
        ratio, cpu_ratio = forward.wall / image_pass.wall, forward.cpu / image_pass.cpu
        bound = forward.wall / (forward.wall + prep.wall)  # forward, then decoding: nothing overlaps on a busy CPU
        ratios.append(ratio)
        cpu_ratios.append(cpu_ratio)
        print(f"| {round_} | {n / forward.wall:.1f} | {n / image_pass.wall:.1f} | {ratio:.3f} | {bound:.3f} | "
              f"{n / task.wall:.1f} | {n / forward.cpu:.2f} | {n / image_pass.cpu:.2f} | {cpu_ratio:.3f} |")
    median, cpu_median = sorted(ratios)[len(ratios) // 2], sorted(cpu_ratios)[len(cpu_ratios) // 2]
    print(f"ours / bare, median of rounds: {median:.3f} wall, {cpu_median:.3f} CPU time "
          f"(target >= 0.9: {'met' if median >= 0.9 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
