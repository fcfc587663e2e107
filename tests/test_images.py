"""Result images: what counts as an image, and re-encoding within bounded memory."""

from __future__ import annotations

import io
import tracemalloc

import pytest
from PIL import Image

from bot.generation.uploads import fit_for_upload
from bot.images import TooManyPixels, UnusableImage, verify_image


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


def test_an_image_with_absurdly_many_pixels_is_refused_from_its_header() -> None:
    out = io.BytesIO()
    Image.new("1", (13_000, 13_000)).save(out, format="PNG")  # 20 KiB, 169 megapixels
    bomb = out.getvalue()
    tracemalloc.start()
    try:
        with pytest.raises(TooManyPixels) as caught:
            verify_image(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # never decoded
    assert "too large for the bot" in str(caught.value)
    assert isinstance(caught.value, UnusableImage)


def test_oversized_images_are_reencoded_from_a_bounded_size() -> None:
    # 24 MB as an uncompressed PNG; as a JPEG it would fit at full size, but no one needs
    # 8000 pixels across, and re-encoding must not work on more than it has to.
    out = io.BytesIO()
    Image.new("RGB", (8000, 1000), 120).save(out, format="PNG", compress_level=0)
    wide = out.getvalue()
    [fitted] = fit_for_upload([wide], file_limit=2 << 20, stem="job")
    assert fitted.reencoded and fitted.filename == "job-1.jpg"
    with Image.open(io.BytesIO(fitted.data)) as image:
        assert image.size == (4096, 512)
