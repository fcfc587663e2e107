"""Make result images fit Discord's upload limits (re-encoding within bounded memory).

Images reach here already checked by :func:`bot.images.verify_image`.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

from PIL import Image

from bot.images import open_image, sniff_format

# Discord refuses a whole request above roughly this size, whatever the per-file limit.
MAX_REQUEST_BYTES = 25 * 1024 * 1024
# Room for the JSON payload and multipart framing next to the files.
_OVERHEAD = 64 * 1024
# Re-encoding starts from at most this many pixels on the long side (Discord shows less).
MAX_UPLOAD_SIDE = 4096


@dataclass(frozen=True)
class UploadImage:
    """An image as it will be uploaded."""

    data: bytes
    filename: str
    reencoded: bool = False


def image_extension(data: bytes) -> str:
    """The file extension for a verified image."""
    return {"JPEG": "jpg", "WEBP": "webp"}.get(sniff_format(data) or "", "png")


def _shrink(data: bytes, budget: int) -> bytes:
    """Re-encode as JPEG, lowering quality then size, until it fits `budget` bytes."""
    with open_image(data) as source:
        # thumbnail() shrinks in place before anything is copied: a JPEG even decodes at a
        # reduced scale (draft), and no copy is larger than MAX_UPLOAD_SIDE on its long side.
        source.thumbnail((MAX_UPLOAD_SIDE, MAX_UPLOAD_SIDE))
        image = source.convert("RGB")
    scale = 1.0
    while True:
        candidate = image
        if scale < 1.0:
            size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
            candidate = image.resize(size, Image.Resampling.LANCZOS)
        for quality in (92, 85, 75):
            out = io.BytesIO()
            candidate.save(out, format="JPEG", quality=quality, optimize=True)
            if out.tell() <= budget:
                return out.getvalue()
        if candidate.width <= 64 or candidate.height <= 64:
            return out.getvalue()
        scale *= 0.75


def fit_for_upload(images: list[bytes], *, file_limit: int, stem: str) -> list[UploadImage]:
    """Name the images and re-encode any that would break the per-file or per-request limit."""
    count = max(1, len(images))
    budget = min(file_limit, (MAX_REQUEST_BYTES - _OVERHEAD) // count) - _OVERHEAD // count
    fitted = []
    for index, data in enumerate(images, start=1):
        if len(data) <= budget:
            fitted.append(UploadImage(data, f"{stem}-{index}.{image_extension(data)}"))
        else:
            fitted.append(UploadImage(_shrink(data, budget), f"{stem}-{index}.jpg", reencoded=True))
    return fitted


async def fit_for_upload_async(
    images: list[bytes], *, file_limit: int, stem: str
) -> list[UploadImage]:
    """`fit_for_upload` off the event loop: re-encoding is CPU work."""
    return await asyncio.to_thread(fit_for_upload, images, file_limit=file_limit, stem=stem)
