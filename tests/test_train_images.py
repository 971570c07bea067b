"""Training and evaluation crops with PIL + torch: RandomResizedCrop's ranges, draft decoding that
changes nothing visible, any input mode, determinism per (seed, epoch, image), clear errors."""

from __future__ import annotations

import io
import itertools
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from entitynet.training.config import AugmentConfig  # noqa: E402
from entitynet.training.images import (  # noqa: E402
    CLIP_MEAN,
    CLIP_STD,
    crop_to_array,
    normalize,
    random_resized_crop_box,
    train_image,
)


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


def mixed_rows(count: int) -> list[dict]:
    """Rows as the data loader hands them over: alt texts or not, queries of every kind, entities,
    JPEGs of several sizes and a grey PNG."""
    rows = []
    for n in range(count):
        image = photo_like(160 + 16 * (n % 5), 120, "L" if n % 7 == 3 else "RGB", "PNG" if n % 7 == 3 else "JPEG")
        rows.append({
            "image": {"bytes": image, "path": None}, "image_id": f"img{n:04d}",
            "alt_texts": [f"a photo of spotted cat {n}"] if n % 3 else [],
            "queries": [{"text": "leopard", "kind": "noun", "entity_id": "Q1", "attribute": None},
                        {"text": "spotted leopard", "kind": "attrnoun", "entity_id": "Q1", "attribute": "spotted"},
                        {"text": "spotted big cat", "kind": "attr", "entity_id": "Q1", "attribute": "spotted"}],
            "entities": [{"id": "Q1", "name": "leopard", "aliases": ["Panthera pardus"], "description": "a big cat",
                          "natural_type": "big cat", "natural_type_aliases": ["wild cat"], "domain": "living"}],
        })
    return rows


def test_collated_batches_are_the_per_sample_texts_tokens_and_crops_unchanged():
    """Issue 18, item 7: the faster collator gives what its pieces give one sample at a time, as
    it did before (texts by sample_text, ids by the tokenizer on the batch's texts, crops by
    train_image, stacked), for every seed and epoch."""
    from entitynet.training.config import TextConfig
    from entitynet.training.data import Collator
    from entitynet.training.model import train_tokenizer
    from entitynet.training.text_mix import rng_for, sample_text, training_texts

    rows = mixed_rows(21)
    tokenizer = train_tokenizer(list(training_texts(rows, TextConfig())), 400, 16)
    reused = Collator(tokenizer, TextConfig(), AugmentConfig(), 48, seed=0, context_length=16)
    reused.token_cache.keep = 5  # a bound smaller than a batch's texts: the cache starts over, often
    for seed, epoch in ((0, 0), (0, 1), (7, 3)):
        reused.seed, reused.epoch = seed, epoch
        fresh = Collator(tokenizer, TextConfig(), AugmentConfig(), 48, seed=seed, context_length=16, epoch=epoch)
        texts = [sample_text(row, TextConfig(), seed, epoch) for row in rows]
        tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
        augment = AugmentConfig()
        crops = [train_image(row["image"]["bytes"], 48, tuple(augment.scale), tuple(augment.ratio),
                             rng_for(seed, epoch, row["image_id"], "crop")) for row in rows]
        for (batch_rows, start), collator in itertools.product(((rows[:8], 0), (rows[8:16], 8), (rows[16:], 16)),
                                                              (fresh, reused)):
            batch = collator(batch_rows)
            end = start + len(batch_rows)
            assert torch.equal(batch["input_ids"], tokens["input_ids"][start:end])
            assert torch.equal(batch["attention_mask"], tokens["attention_mask"][start:end])
            assert batch["input_ids"].dtype == tokens["input_ids"].dtype == torch.int64
            assert torch.equal(batch["pixel_values"], torch.from_numpy(np.stack(crops[start:end])))
            assert batch["pixel_values"].dtype == torch.uint8 and batch["pixel_values"].is_contiguous()


def test_a_batch_still_held_is_never_overwritten_by_the_next():
    """The collator reuses a batch's pixel array only once no tensor (or view) refers to it."""
    import pickle

    from entitynet.training.config import TextConfig
    from entitynet.training.data import Collator
    from entitynet.training.model import train_tokenizer
    from entitynet.training.text_mix import training_texts

    rows = mixed_rows(8)
    tokenizer = train_tokenizer(list(training_texts(rows, TextConfig())), 400, 16)
    collator = Collator(tokenizer, TextConfig(), AugmentConfig(), 32, seed=0, context_length=16)
    first = collator(rows[:4])["pixel_values"]
    kept = first.clone()
    view = first[1:]
    del first
    second = collator(rows[4:])["pixel_values"]  # same shape; the first is still referred to by ``view``
    assert torch.equal(view, kept[1:]) and not torch.equal(second, kept)
    address = second.data_ptr()
    del second
    assert collator(rows[:4])["pixel_values"].data_ptr() == address  # released: reused, no fresh pages
    held = [collator(rows[:4])["pixel_values"] for _ in range(6)]  # more than the pool keeps
    assert len({t.data_ptr() for t in held}) == 6 and all(torch.equal(t, kept) for t in held)
    worker = pickle.loads(pickle.dumps(collator))
    assert worker.buffers.arrays == [] and worker.token_cache.rows == {}  # a worker starts with its own
    assert collator.token_cache.rows and worker.token_cache.keep == collator.token_cache.keep
