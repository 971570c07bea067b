"""Training and evaluation crops with PIL + torch: RandomResizedCrop's ranges, draft decoding that
changes nothing visible, any input mode, determinism per (seed, epoch, image), clear errors."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from entitynet.training.config import AugmentConfig  # noqa: E402
from entitynet.training.images import (CLIP_MEAN, CLIP_STD, center_crop_box, crop_to_array, eval_image,  # noqa: E402
                                       normalize, random_resized_crop_box, train_image)


def photo_like(width: int, height: int, mode: str = "RGB", fmt: str = "JPEG") -> bytes:
    """A smooth gradient with grain, so resizing differences are measurable but small."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(0)
    pixels = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def test_random_resized_crops_stay_within_scale_and_ratio():
    augment = AugmentConfig()
    rng = random.Random(0)
    areas, ratios = [], []
    for _ in range(2000):
        left, top, right, bottom = random_resized_crop_box(512, 384, tuple(augment.scale), tuple(augment.ratio), rng)
        assert 0 <= left < right <= 512 and 0 <= top < bottom <= 384
        areas.append((right - left) * (bottom - top) / (512 * 384))
        ratios.append((right - left) / (bottom - top))
    assert 0.39 <= min(areas) and max(areas) <= 1.0
    assert 0.88 <= min(ratios) and max(ratios) <= 1.13
    assert np.std(areas) > 0.1  # really random, not one box
    # an image far outside the ratio range falls back to its centre, clamped to the range
    left, top, right, bottom = random_resized_crop_box(1000, 100, (0.9, 1.0), (0.9, 1.111), random.Random(0))
    assert (right - left) / (bottom - top) == pytest.approx(1.111, rel=0.02) and left > 0


def test_draft_decoding_matches_a_full_decode():
    data = photo_like(1600, 1200)
    image = Image.open(io.BytesIO(data))
    box = (100.0, 50.0, 1300.0, 1150.0)  # 1100 px tall: decoded at 1/4 scale for a 224 crop
    drafted = crop_to_array(image, box, 224)
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC, box=box))
    assert drafted.shape == (224, 224, 3) and drafted.dtype == np.uint8
    assert np.abs(drafted.astype(int) - full.astype(int)).mean() < 3  # grain-level differences only


def test_any_mode_and_format_becomes_rgb():
    rng = random.Random(0)
    for mode, fmt in [("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("P", "PNG"), ("RGB", "WEBP")]:
        array = train_image(photo_like(300, 200, mode, fmt), 64, (0.4, 1.0), (0.9, 1.111), rng)
        assert array.shape == (64, 64, 3) and array.dtype == np.uint8, (mode, fmt)
    assert eval_image(photo_like(300, 200), 64).shape == (64, 64, 3)


def test_evaluation_is_resize_and_centre_crop():
    data = photo_like(400, 200)
    assert center_crop_box(400, 200) == (100, 0, 300, 200)
    ours = eval_image(data, 100)
    reference = Image.open(io.BytesIO(data)).resize((200, 100), Image.Resampling.BICUBIC).crop((50, 0, 150, 100))
    assert np.abs(ours.astype(int) - np.asarray(reference).astype(int)).mean() < 3


def test_normalize_is_clip_normalisation_on_the_device_of_the_batch():
    pixels = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)  # as collated: channels last
    expected = (pixels.permute(0, 3, 1, 2).float() / 255 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    assert torch.allclose(normalize(pixels, CLIP_MEAN, CLIP_STD), expected, atol=1e-5)
    assert normalize(pixels, CLIP_MEAN, CLIP_STD, torch.bfloat16).dtype == torch.bfloat16


def test_the_collator_draws_crops_and_texts_per_image_and_epoch():
    from transformers import PreTrainedTokenizerFast

    from entitynet.training.config import TextConfig
    from entitynet.training.data import Collator
    from entitynet.training.model import train_tokenizer

    tokenizer: PreTrainedTokenizerFast = train_tokenizer(["a lion", "a photo of a tiger"] * 10, 300, 16)
    rows = [{"image": {"bytes": photo_like(320, 240), "path": None}, "image_id": f"img{n}", "alt_texts": ["a lion"],
             "queries": [], "entities": []} for n in range(4)]
    collator = Collator(tokenizer, TextConfig(), AugmentConfig(), 64, seed=0, context_length=16)
    batch = collator(rows)
    assert batch["pixel_values"].shape == (4, 64, 64, 3) and batch["pixel_values"].dtype == torch.uint8
    assert batch["input_ids"].shape == (4, 16)
    assert torch.equal(collator(rows)["pixel_values"], batch["pixel_values"])  # a function of (seed, epoch, image)
    assert torch.equal(collator(list(reversed(rows)))["pixel_values"], batch["pixel_values"].flip(0))
    assert not torch.equal(batch["pixel_values"][0], batch["pixel_values"][1])  # each image its own crop
    collator.epoch = 1
    assert not torch.equal(collator(rows)["pixel_values"], batch["pixel_values"])  # another epoch, other crops
    broken = [{**rows[0], "image": {"bytes": b"not a picture", "path": None}, "image_id": "broken"}]
    with pytest.raises(ValueError, match="image broken cannot be decoded"):
        collator(broken)
