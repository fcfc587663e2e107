"""Result images: what counts as an image, and re-encoding within bounded memory."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.images import UnusableImage, verify_image


def encoded(fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 120).save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_png_jpeg_and_webp_are_images(fmt: str, mime: str) -> None:
    assert verify_image(encoded(fmt)) == mime


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"Claim your free Nitro at https://evil.example",
        encoded("GIF"),  # an image, but not one of the three PixelDojo produces
        encoded("BMP"),
        encoded("PNG")[:-30],  # truncated
        encoded("JPEG")[:200],
        encoded("WEBP")[:40],
        b"\x89PNG\r\n\x1a\n" + b"\0" * 64,
        b"\xff\xd8\xff" + b"<html>",
        encoded("JPEG")[:3] + encoded("PNG")[3:],  # magic and content disagree
    ],
)
def test_anything_else_is_not(data: bytes) -> None:
    with pytest.raises(UnusableImage) as caught:
        verify_image(data)
    assert str(caught.value) == "PixelDojo sent a file that is not a PNG, JPEG or WebP image."
