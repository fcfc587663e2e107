"""Check result images and make them fit Discord's upload limits.

Every image the bot posts went through :func:`verify_image` first: it must decode as PNG, JPEG
or WebP, whatever its Content-Type or name said.
"""

from __future__ import annotations

import asyncio
import io
import warnings
from dataclasses import dataclass

from PIL import Image

# Discord refuses a whole request above roughly this size, whatever the per-file limit.
MAX_REQUEST_BYTES = 25 * 1024 * 1024
# Room for the JSON payload and multipart framing next to the files.
_OVERHEAD = 64 * 1024

# Flux results are a few megapixels. Nothing larger than this is decoded at all, so one image
# costs at most ~160 MB while it is checked or re-encoded (RGBA). Pillow on its own only warns
# between its limit and twice that: make the warning an error in this process too.
MAX_IMAGE_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
warnings.simplefilter("error", Image.DecompressionBombWarning)
# Re-encoding starts from at most this many pixels on the long side (Discord shows less).
MAX_UPLOAD_SIDE = 4096

_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
NOT_AN_IMAGE = "PixelDojo sent a file that is not a PNG, JPEG or WebP image."


class UnusableImage(ValueError):
    """The bytes are not an image the bot will post. The message is safe to show; ``detail``
    says what was wrong, for logs."""

    def __init__(self, detail: str, message: str = NOT_AN_IMAGE) -> None:
        super().__init__(message)
        self.detail = detail


class TooManyPixels(UnusableImage):
    """An image above :data:`MAX_IMAGE_PIXELS`, refused from its header."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            detail,
            "The generated image is too large for the bot to handle "
            f"(more than {MAX_IMAGE_PIXELS // 1_000_000} megapixels).",
        )


def sniff_format(data: bytes) -> str | None:
    """The Pillow format name the magic bytes announce (PNG, JPEG or WEBP), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _open(data: bytes) -> Image.Image:
    """Open lazily (the header only) as the format the magic bytes announce, refusing
    images above :data:`MAX_IMAGE_PIXELS` before any pixel is decoded."""
    expected = sniff_format(data)
    if expected is None:
        raise UnusableImage(f"starts with {data[:8]!r}")
    try:
        image = Image.open(io.BytesIO(data), formats=[expected])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooManyPixels(str(exc)) from exc
    except Exception as exc:  # Pillow raises many types for hostile input
        raise UnusableImage(f"broken {expected} header: {exc!r}") from exc
    # Checked here as well: the warnings filter is process state that tests (and threads
    # using warnings.catch_warnings) may change.
    if image.width * image.height > MAX_IMAGE_PIXELS:
        image.close()
        raise TooManyPixels(f"{image.width}x{image.height} pixels")
    return image


def verify_image(data: bytes) -> str:
    """Check that ``data`` decodes as a PNG, JPEG or WebP image; return its MIME type.

    Raises :class:`UnusableImage`. CPU work: call it off the event loop.
    """
    with _open(data) as image:
        kind = image.format or ""
        try:
            image.verify()  # structure and checksums, cheap
        except Exception as exc:
            raise UnusableImage(f"broken {kind}: {exc!r}") from exc
    with _open(data) as image:
        try:
            if kind == "JPEG":
                image.draft(image.mode, (image.width // 8, image.height // 8))
            image.load()  # every byte of pixel data decodes
        except Exception as exc:
            raise UnusableImage(f"{kind} pixel data does not decode: {exc!r}") from exc
    return _FORMATS[kind]


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
    with _open(data) as source:
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
