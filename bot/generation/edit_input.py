"""Input images for Kontext editing: checking a member's attachment and preparing it for submit.

What the model takes (field, transport, types, size) comes from its request schema, read by
``bot.pixeldojo.schema``. Flow for one ``/imagine`` with an attachment (the cog does steps 1-2,
the runner step 3):

1. :func:`validate_input_image` checks the attachment's type and size against the capabilities.
2. :func:`encode_input_image` checks it can become the value PixelDojo takes (the attachment URL,
   or a data URI / base64 of its bytes when ``capabilities.needs_image_bytes``). The job stores
   only the attachment URL (``GenerationRequest.input_image_url``), never the bytes: a 10 MiB
   image is 14 MB of base64, which every read of the job's row would carry.
3. ``JobRunner._submit`` calls :func:`submission_extra`, which puts the value under the schema's
   field name in ``client.submit(extra=...)``, reading inline images back from the attachment
   URL just then (with the cache's ``fetch_image``). Rerolls and variations reuse the URL.

This module never imports discord.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from bot.errors import RequestRefused
from bot.images import normalize_content_type, sniff_image_type
from bot.pixeldojo.errors import PixelDojoError
from bot.pixeldojo.schema import CapabilityCache, ImageTransport, ModelCapabilities

log = logging.getLogger(__name__)

EDITING_UNAVAILABLE = (
    "This PixelDojo model's API doesn't take an input image right now, so editing is "
    "unavailable. Run /imagine without an image."
)

_EXTENSION_TYPES: dict[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jpe": "image/jpeg",
    ".jfif": "image/jpeg",
    ".webp": "image/webp",
}
_TYPE_LABELS: dict[str, str] = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WebP"}


class ImageInputUnavailable(PixelDojoError):
    """A job carries an input image but the model's schema no longer offers an image field."""

    default_message = EDITING_UNAVAILABLE


class InputImageUnreadable(PixelDojoError):
    """The image to edit, needed inline, could not be read back from its attachment URL."""

    default_message = (
        "The image to edit could not be read back from Discord (attachment links expire after "
        "a while). Run /imagine again with the image attached."
    )


def format_size(size: int) -> str:
    """Bytes for people: ``10 MiB``, ``12.5 MiB``, ``300 KiB``, ``12 bytes``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} byte" + ("" if size == 1 else "s")


def _type_list(types: Iterable[str], joiner: str = "or") -> str:
    labels = [_TYPE_LABELS.get(t, t) for t in types]
    if len(labels) <= 1:
        return "".join(labels)
    return f"{', '.join(labels[:-1])} {joiner} {labels[-1]}"


def _display_name(filename: str) -> str:
    cleaned = re.sub(r"[`\r\n\t]", "", filename).strip() or "attachment"
    return cleaned if len(cleaned) <= 60 else cleaned[:57] + "..."


def image_option_description(capabilities: ModelCapabilities) -> str:
    """Text for the /imagine image option (≤100 characters, Discord's limit)."""
    if not capabilities.supports_image_input:
        return "Editing is unavailable: PixelDojo's API doesn't take an input image right now"
    types = _type_list(capabilities.accepted_mime_types)
    limit = format_size(capabilities.image_size_limit)
    return f"An image for Kontext to edit ({types}, up to {limit})"[:100]


def validate_input_image(
    *, filename: str, content_type: str | None, size: int, capabilities: ModelCapabilities
) -> None:
    """Refuse an attachment the model cannot edit, saying why (raises ``RequestRefused``).

    The type is checked by content type and by extension: each one given must be an accepted
    type (Discord may omit the content type; a name may lack an extension), and not both may be
    missing. Then the size must be above zero and within the limit.
    """
    if not capabilities.supports_image_input:
        raise RequestRefused(EDITING_UNAVAILABLE)
    accepted = capabilities.accepted_mime_types
    types = _type_list(accepted)
    name = _display_name(filename)
    extension = PurePosixPath(filename.strip()).suffix.lower()
    declared = normalize_content_type(content_type)
    by_extension = _EXTENSION_TYPES.get(extension) if extension else None
    if (
        (extension and by_extension not in accepted)
        or (declared is not None and declared not in accepted)
        or (not extension and declared is None)
    ):
        shown = f" ({declared})" if declared else ""
        raise RequestRefused(
            f"`{name}`{shown} isn't a {types} image, so Kontext can't edit "
            f"it. Attach a {types} file instead."
        )
    if size <= 0:
        raise RequestRefused(f"`{name}` is empty. Attach a {types} image to edit.")
    limit = capabilities.image_size_limit
    if size > limit:
        raise RequestRefused(
            f"`{name}` is {format_size(size)}; images to edit can be at most {format_size(limit)}. "
            "Attach a smaller or more compressed image."
        )


def encode_input_image(
    capabilities: ModelCapabilities, *, url: str, data: bytes | None, content_type: str | None
) -> str:
    """The value to send in the schema's image field: ``url`` itself, or ``data`` as a data URI
    or bare base64 when the schema takes inline images (then ``data`` is required).

    Raises ``RequestRefused`` when editing is unavailable or the bytes are not an accepted image,
    and ``ValueError`` for caller mistakes (no bytes when they are needed, a non-http URL).
    """
    if not capabilities.supports_image_input:
        raise RequestRefused(EDITING_UNAVAILABLE)
    if not capabilities.needs_image_bytes:
        if not url.startswith(("https://", "http://")):
            raise ValueError("the input image URL must be an absolute http(s) URL")
        return url
    if data is None:
        raise ValueError("this model takes inline images: pass the attachment's bytes as data")
    accepted = capabilities.accepted_mime_types
    if not data:
        raise RequestRefused(f"The attachment is empty. Attach a {_type_list(accepted)} image.")
    limit = capabilities.image_size_limit
    if len(data) > limit:
        raise RequestRefused(
            f"The image is {format_size(len(data))}; images to edit can be at most "
            f"{format_size(limit)}. Attach a smaller or more compressed image."
        )
    # The bytes decide: a declared content type is only the uploader's claim.
    mime = sniff_image_type(data)
    if mime not in accepted:
        claimed = normalize_content_type(content_type)
        shown = f" (it was sent as {claimed})" if claimed else ""
        raise RequestRefused(
            f"The attachment's contents aren't a {_type_list(accepted)} image{shown}. "
            "Attach one of those instead."
        )
    encoded = base64.b64encode(data).decode("ascii")
    if capabilities.image_transport is ImageTransport.BASE64:
        return encoded
    return f"data:{mime};base64,{encoded}"


async def submission_extra(
    cache: CapabilityCache | None, input_image: str | None
) -> dict[str, str]:
    """The ``extra`` body fields for a job whose stored input image is ``input_image`` (its
    attachment URL; rows from before it was a URL may hold the inline value itself).

    Empty without an image. Raises :class:`ImageInputUnavailable` (a ``PixelDojoError``, so the
    runner fails and refunds the job with its message) if there is no capability cache or the
    schema has no image field, and :class:`InputImageUnreadable` if an inline image cannot be
    read back or is no longer an image the model takes.
    """
    if not input_image:
        return {}
    if cache is None:
        raise ImageInputUnavailable()
    capabilities = await cache.get()
    if capabilities.image_field is None:
        raise ImageInputUnavailable()
    if capabilities.needs_image_bytes and input_image.startswith(("https://", "http://")):
        input_image = await _read_inline(cache, capabilities, input_image)
    return {capabilities.image_field: input_image}


async def _read_inline(cache: CapabilityCache, capabilities: ModelCapabilities, url: str) -> str:
    """The attachment at ``url``, read now, as the inline value the model takes."""
    if cache.fetch_image is None:
        raise InputImageUnreadable()
    try:
        data = await cache.fetch_image(url)
    except Exception as exc:
        # Not the URL: Discord signs attachment links, and logs are no place for them.
        log.warning("could not read an input image back from Discord (%s)", type(exc).__name__)
        raise InputImageUnreadable() from exc
    try:
        return encode_input_image(capabilities, url=url, data=data, content_type=None)
    except RequestRefused as refusal:
        raise InputImageUnreadable(str(refusal)) from refusal
