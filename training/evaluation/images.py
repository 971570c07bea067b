"""Turning stored images into RGB pictures, the same way for every dataset format.

Every reader hands over the stored bytes (or, for rows already decoded by ``datasets``, a PIL
image), so an image folder, a Hugging Face dataset and webdataset shards of the same files give
the same pixels: EXIF orientation applied (as ``datasets`` does when it decodes), then RGB.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image, ImageOps


class UnreadableImage(ValueError):
    """An image that cannot be decoded; the message names where it came from."""


def upright_rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def decode(data: Any, where: str) -> Image.Image:
    """bytes, a ``{"bytes", "path"}`` dict (``datasets.Image(decode=False)``) or a PIL image -> RGB."""
    if isinstance(data, Image.Image):
        return upright_rgb(data)
    if isinstance(data, dict):
        path = data.get("path")
        where = where if not path or path in where else f"{where} ({path})"
        data = data.get("bytes") or _read(data.get("path"), where)
    if not isinstance(data, (bytes, bytearray)):
        raise UnreadableImage(f"{where}: not an image (got {type(data).__name__})")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return upright_rgb(opened)
    except Image.UnidentifiedImageError:  # its own message names a BytesIO object's address
        raise UnreadableImage(f"{where}: cannot read the image (not in a format Pillow knows)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableImage(f"{where}: cannot read the image ({error})") from None


def _read(path: str | None, where: str) -> bytes:
    if not path:
        raise UnreadableImage(f"{where}: the row has neither image bytes nor a path")
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise UnreadableImage(f"{where}: cannot read the image file ({error})") from None
