"""The card's pictures, drawn with Pillow (no plotting library needed): a grid of sample images
with their first alt text, and a histogram of the number of images per entity."""

from __future__ import annotations

import io
import textwrap
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

BINS = [(1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, 10**9)]


def sample_grid(samples: list[tuple[bytes, str]], path: Path, columns: int = 4, cell: int = 192) -> None:
    """``samples``: (image bytes, caption) pairs; written as one PNG."""
    font = ImageFont.load_default()
    rows = max(1, (len(samples) + columns - 1) // columns)
    caption_height = 44
    sheet = Image.new("RGB", (columns * cell, rows * (cell + caption_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (data, caption) in enumerate(samples):
        x, y = (index % columns) * cell, (index // columns) * (cell + caption_height)
        with Image.open(io.BytesIO(data)) as picture:
            thumb = picture.convert("RGB")
            thumb.thumbnail((cell - 8, cell - 8))
            sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        lines = textwrap.wrap(caption or "", width=30)[:3]
        for number, line in enumerate(lines):
            draw.text((x + 4, y + cell + number * 13), line, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, "PNG", optimize=True)


def images_per_entity(counts: Counter[str], path: Path, width: int = 640, height: int = 360) -> list[tuple[str, int]]:
    """Bar chart of how many entities have 1, 2, 3-5, ... images; returns the bars drawn."""
    bars = []
    for low, high in BINS:
        label = f"{low}" if low == high else (f"{low}+" if high >= 10**9 else f"{low}-{high}")
        bars.append((label, sum(1 for n in counts.values() if low <= n <= high)))
    font = ImageFont.load_default()
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, bottom, top = 50, height - 40, 48
    slot = (width - left - 20) / len(bars)
    tallest = max([n for _, n in bars] + [1])
    draw.text((left, 8), "entities by number of images", fill="black", font=font)
    draw.line([(left, top), (left, bottom), (width - 10, bottom)], fill="black")
    for index, (label, count) in enumerate(bars):
        x0 = left + index * slot + 6
        bar_top = bottom - (bottom - top) * count / tallest
        draw.rectangle([x0, bar_top, x0 + slot - 12, bottom], fill=(70, 110, 180))
        draw.text((x0, bottom + 6), label, fill="black", font=font)
        draw.text((x0, bar_top - 14), str(count), fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "PNG", optimize=True)
    return bars
