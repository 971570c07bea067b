"""Turn fetched bytes into a stored image: validate, normalise, resize, encode, hash.

- The pixel count is checked from the header before anything is decoded, against an explicit
  limit passed in (nothing global is changed): a decompression bomb ends as
  ``decompression_bomb``, never as a crash or a huge allocation.
- JPEGs are decoded in draft mode at the smallest scale still at least the target size.
- EXIF orientation is applied; animations give their first frame; CMYK, palette, 16-bit,
  grayscale and alpha images become RGB (transparent pixels over white).
- Minimum side and maximum aspect ratio filters; shrink (never enlarge) to ``max_side``.
- Re-encoded as JPEG (quality 90 by default) or WebP; the sha256 of the stored bytes is the
  image id, and a 64-bit difference hash (dHash) finds near-duplicates.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageOps, UnidentifiedImageError

from entitynet.config import DownloadConfig

ImageReason = Literal["decompression_bomb", "corrupt_image", "unsupported_format", "too_small", "bad_aspect"]


@dataclass(frozen=True)
class Processed:
    data: bytes | None
    reason: ImageReason | None = None
    detail: str = ""
    width: int = 0
    height: int = 0
    original_width: int = 0
    original_height: int = 0
    sha256: str = ""
    dhash: int = 0

    @property
    def ok(self) -> bool:
        return self.data is not None


READABLE = frozenset({"jpeg", "png", "gif", "bmp", "tiff", "webp", "ico", "avif"})


_UNREADABLE = (Image.DecompressionBombError, Image.DecompressionBombWarning, UnidentifiedImageError,
               OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError)


def process(data: bytes, config: DownloadConfig, sniffed: str | None = None) -> Processed:
    """``sniffed`` (the format the magic bytes announce) tells a broken file of a format we read
    (``corrupt_image``) from a format this Pillow cannot read at all (``unsupported_format``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _process(data, config)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return Processed(None, "decompression_bomb", str(error)[:200])
    except UnidentifiedImageError:
        if sniffed in READABLE:
            return Processed(None, "corrupt_image", f"a {sniffed} file Pillow cannot read")
        return Processed(None, "unsupported_format", f"{sniffed or 'unknown'} format, not readable here")
    except _UNREADABLE as error:
        return Processed(None, "corrupt_image", f"{type(error).__name__}: {error}"[:200])


def dhash_as_stored(data: bytes, config: DownloadConfig) -> int | None:
    """The dHash ``process`` gives these bytes (the same decoding, pixel limit, EXIF orientation,
    first frame, RGB and shrink; no size filters), or None if they cannot be read. Decontamination
    hashes evaluation images this way, so a copy is found whatever its EXIF rotation."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            rgb, _ = _decode(data, config)
            return dhash(_shrink(rgb, config.max_side))
    except _UNREADABLE:
        return None


def _decode(data: bytes, config: DownloadConfig) -> tuple[Image.Image, tuple[int, int]]:
    """Upright RGB pixels and the original size; too many pixels is a decompression bomb."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if width * height > config.max_pixels:
            raise Image.DecompressionBombError(f"{width}x{height} pixels")
        if image.format == "JPEG" and max(width, height) > config.max_side:
            # Decode at the smallest DCT scale still at least the target size (a 1024x768 JPEG for
            # max side 512 decodes at 512x384 directly): several times less work than decoding it
            # whole. Asking for a square would keep full resolution whenever the image is not square.
            scale = config.max_side / max(width, height)
            image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        image.load()
        rotated = ImageOps.exif_transpose(image, in_place=False) if image.getexif().get(0x0112, 1) != 1 else image
        return flatten_to_rgb(rotated), (width, height)


def _shrink(rgb: Image.Image, max_side: int) -> Image.Image:
    if max(rgb.size) <= max_side:
        return rgb
    scale = max_side / max(rgb.size)
    size = (max(1, round(rgb.size[0] * scale)), max(1, round(rgb.size[1] * scale)))
    return rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _process(data: bytes, config: DownloadConfig) -> Processed:
    rgb, (width, height) = _decode(data, config)
    if min(rgb.size) < config.min_side:
        return Processed(None, "too_small", f"{rgb.size[0]}x{rgb.size[1]}")
    if max(rgb.size) / min(rgb.size) > config.max_aspect:
        return Processed(None, "bad_aspect", f"{rgb.size[0]}x{rgb.size[1]}")
    rgb = _shrink(rgb, config.max_side)
    buffer = io.BytesIO()
    if config.format == "webp":
        rgb.save(buffer, "WEBP", quality=config.quality, method=4)
    else:
        rgb.save(buffer, "JPEG", quality=config.quality, optimize=False, progressive=False)
    stored = buffer.getvalue()
    return Processed(
        stored, width=rgb.size[0], height=rgb.size[1], original_width=width, original_height=height,
        sha256=hashlib.sha256(stored).hexdigest(), dhash=dhash(rgb),
    )


def flatten_to_rgb(image: Image.Image) -> Image.Image:
    """Any mode to RGB; transparency is composited over white, 16-bit scaled to 8-bit."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 0..255 by the actual range, not by clipping
        low, high = image.getextrema()
        span = max(1, high - low)
        image = image.point(lambda value: (value - low) * 255 / span).convert("L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def dhash(image: Image.Image, size: int = 8) -> int:
    """64-bit difference hash: brighter-than-right-neighbour bits of a 9x8 grayscale thumbnail."""
    small = image.convert("L").resize((size + 1, size), Image.Resampling.BILINEAR)
    pixels = small.tobytes()
    bits = 0
    for row in range(size):
        for column in range(size):
            left = pixels[row * (size + 1) + column]
            right = pixels[row * (size + 1) + column + 1]
            bits = (bits << 1) | (left > right)
    return bits


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()
