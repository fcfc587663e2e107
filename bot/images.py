"""Image bytes: which format they are, and whether they decode, under a pixel limit.

Shared by the PixelDojo client (every result is checked with :func:`verify_image` before anyone
sees it: it must decode as PNG, JPEG or WebP, whatever its Content-Type or name said) and by
generation (re-encoding results for upload, checking members' attachments). Pillow only.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

# Flux results are a few megapixels. Nothing larger than this is decoded at all, so one image
# costs at most ~160 MB while it is checked or re-encoded (RGBA). Pillow on its own only warns
# between its limit and twice that: make the warning an error in this process too.
MAX_IMAGE_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
warnings.simplefilter("error", Image.DecompressionBombWarning)

_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
IMAGE_MIME_TYPES: tuple[str, ...] = tuple(_FORMATS.values())
"""The types :func:`verify_image` accepts: PNG, JPEG and WebP, in that order."""
_TYPE_ALIASES: dict[str, str] = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
}
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


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type of PNG, JPEG or WebP bytes from their signature, else None."""
    return _FORMATS.get(sniff_format(data) or "")


def normalize_content_type(content_type: str | None) -> str | None:
    """``"Image/JPG; q=1"`` → ``"image/jpeg"``; None for an empty value."""
    if not content_type:
        return None
    mime = content_type.split(";", 1)[0].strip().lower()
    return _TYPE_ALIASES.get(mime, mime) or None


def open_image(data: bytes) -> Image.Image:
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
    with open_image(data) as image:
        kind = image.format or ""
        try:
            image.verify()  # structure and checksums, cheap
        except Exception as exc:
            raise UnusableImage(f"broken {kind}: {exc!r}") from exc
    with open_image(data) as image:
        try:
            if kind == "JPEG":
                image.draft(image.mode, (image.width // 8, image.height // 8))
            image.load()  # every byte of pixel data decodes
        except Exception as exc:
            raise UnusableImage(f"{kind} pixel data does not decode: {exc!r}") from exc
    return _FORMATS[kind]
