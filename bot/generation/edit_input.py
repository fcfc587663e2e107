"""Input images for Kontext editing: what the model's schema accepts, and checking attachments.

PixelDojo's request schemas reject unknown properties, so the bot never guesses the name of the
input-image field. It reads ``GET /models/flux-kontext-pro/schema`` at start-up
(:func:`discover_capabilities`), keeps the answer in a :class:`CapabilityCache`, and when the
schema offers no image property, editing is reported as unavailable.

Flow for one ``/imagine`` with an attachment (the cog does steps 1-2, the runner step 3):

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

import asyncio
import base64
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any, Protocol

from bot.errors import RequestRefused
from bot.images import normalize_content_type, sniff_image_type
from bot.pixeldojo.errors import PixelDojoError
from bot.pixeldojo.models import MODEL_ID

log = logging.getLogger(__name__)

DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
SUPPORTED_MIME_TYPES: tuple[str, ...] = ("image/png", "image/jpeg", "image/webp")
EDITING_UNAVAILABLE = (
    "This PixelDojo model's API doesn't take an input image right now, so editing is "
    "unavailable. Run /imagine without an image."
)

# Property names that carry the image to edit, most likely first.
IMAGE_FIELD_NAMES: tuple[str, ...] = (
    "image_url",
    "input_image",
    "image",
    "image_prompt",
    "init_image",
    "reference_image",
    "input_image_url",
    "image_uri",
    "input_image_uri",
    "init_image_url",
    "reference_image_url",
    "source_image",
    "source_image_url",
    "image_input",
)
# Documented body fields and names that are images but not the one to edit.
_NOT_IMAGE_INPUT = frozenset({"prompt", "model", "aspect_ratio", "num_outputs", "seed"})
_NOT_IMAGE_INPUT_PARTS = ("webhook", "callback", "mask", "output", "negative")

_EXTENSION_TYPES: dict[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jpe": "image/jpeg",
    ".jfif": "image/jpeg",
    ".webp": "image/webp",
}
_TYPE_LABELS: dict[str, str] = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WebP"}
# Format words a description may list, mapped to MIME types.
_FORMAT_WORDS: dict[str, str] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
    "heic": "image/heic",
    "avif": "image/avif",
}
_URI_FORMATS = frozenset({"uri", "url", "iri", "uri-reference", "iri-reference"})
_DATA_URI_FORMATS = frozenset({"data-url", "data-uri", "dataurl", "datauri"})
_MIME_KEYS = (
    "contentMediaType",
    "x-mime-types",
    "x-content-types",
    "mimeTypes",
    "acceptedMimeTypes",
    "accept",
    "x-accept",
)
_SIZE_KEYS = (
    "maxSize",
    "maxBytes",
    "maxFileSize",
    "maxFileSizeBytes",
    "x-max-size",
    "x-max-bytes",
    "x-max-file-size",
)
_UNITS: dict[str, int] = {
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}
_SIZE_IN_TEXT = re.compile(
    r"(?:max(?:imum)?|up to|limit(?:ed)?|at most|no (?:more|larger) than|under|less than|<=?|≤)"
    r"[^0-9]{0,24}(\d+(?:\.\d+)?)\s*(kib|kb|mib|mb|gib|gb|bytes|byte|b)\b"
)
_DATA_URI_IN_TEXT = re.compile(r"data[\s_-]*ur[il]s?\b|data:")
_URL_IN_TEXT = re.compile(r"\b(?:https?|urls?|uris?|links?)\b")


class ImageTransport(StrEnum):
    """How the schema's image field takes the image."""

    URL = "url"  # a public http(s) URL PixelDojo downloads
    DATA_URI = "data_uri"  # data:<mime>;base64,<bytes>
    BASE64 = "base64"  # bare base64 of the file


@dataclass(frozen=True)
class ModelCapabilities:
    """What one model's request schema says about input images and a few other options.

    ``image_mime_types`` and ``max_image_bytes`` are what the schema states (None: not stated);
    ``error`` is set when the schema could not be read, in which case editing is unavailable.
    """

    model: str = MODEL_ID
    image_field: str | None = None
    image_transport: ImageTransport | None = None
    image_mime_types: tuple[str, ...] | None = None
    max_image_bytes: int | None = None
    aspect_ratios: tuple[str, ...] | None = None
    num_outputs_min: int | None = None
    num_outputs_max: int | None = None
    discovered_at: float = 0.0
    error: str | None = None

    @property
    def supports_image_input(self) -> bool:
        """True when the API takes an input image, so /imagine can offer editing."""
        return self.image_field is not None and bool(self.accepted_mime_types)

    @property
    def needs_image_bytes(self) -> bool:
        """True when the image must be sent inline, so the caller must download the attachment."""
        return self.image_transport in (ImageTransport.DATA_URI, ImageTransport.BASE64)

    @property
    def accepted_mime_types(self) -> tuple[str, ...]:
        """PNG, JPEG and WebP, narrowed to the schema's list of types when it has one."""
        if self.image_mime_types is None:
            return SUPPORTED_MIME_TYPES
        return tuple(t for t in SUPPORTED_MIME_TYPES if t in self.image_mime_types)

    @property
    def image_size_limit(self) -> int:
        """Largest attachment accepted: the schema's stated maximum, else 10 MiB."""
        return self.max_image_bytes or DEFAULT_MAX_IMAGE_BYTES


class ImageInputUnavailable(PixelDojoError):
    """A job carries an input image but the model's schema no longer offers an image field."""

    default_message = EDITING_UNAVAILABLE


class InputImageUnreadable(PixelDojoError):
    """The image to edit, needed inline, could not be read back from its attachment URL."""

    default_message = (
        "The image to edit could not be read back from Discord (attachment links expire after "
        "a while). Run /imagine again with the image attached."
    )


ImageFetcher = Callable[[str], Awaitable[bytes]]
"""Reads an attachment's bytes from its URL (the bot passes discord.py's CDN download)."""


class SchemaSource(Protocol):
    """The part of ``PixelDojoClient`` discovery needs."""

    async def get_model_schema(self, model: str = MODEL_ID) -> dict[str, Any]:
        """Return the model's request JSON Schema."""
        ...


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------


async def discover_capabilities(
    client: SchemaSource, *, model: str = MODEL_ID, clock: Callable[[], float] = time.time
) -> ModelCapabilities:
    """Read the model's request schema. Never raises for API or schema trouble: it logs a
    warning and returns capabilities without an image field, so the bot still starts."""
    try:
        schema = await client.get_model_schema(model)
    except PixelDojoError as exc:
        log.warning(
            "could not read the %s request schema (%s); image editing is unavailable",
            model,
            exc.api_message or exc.message,
        )
        return ModelCapabilities(model=model, discovered_at=clock(), error=exc.message)
    try:
        capabilities = parse_capabilities(schema, model=model, now=clock())
    except Exception as exc:
        log.warning(
            "could not understand the %s request schema (%r); image editing is unavailable",
            model,
            exc,
        )
        return ModelCapabilities(model=model, discovered_at=clock(), error=str(exc) or repr(exc))
    if capabilities.error:
        log.warning(
            "the %s request schema is unusable (%s); image editing is unavailable",
            model,
            capabilities.error,
        )
    elif capabilities.image_field is None:
        log.warning(
            "the %s request schema has no input-image property; image editing is unavailable",
            model,
        )
    else:
        log.info(
            "%s takes an input image in %r as %s (types %s, up to %d bytes)",
            model,
            capabilities.image_field,
            capabilities.image_transport,
            ", ".join(capabilities.accepted_mime_types) or "none usable",
            capabilities.image_size_limit,
        )
    return capabilities


def parse_capabilities(
    schema: Mapping[str, Any], *, model: str = MODEL_ID, now: float = 0.0
) -> ModelCapabilities:
    """Turn a request JSON Schema into :class:`ModelCapabilities` (pure; used by discovery)."""
    properties = _top_level_properties(schema)
    if not properties:
        return ModelCapabilities(
            model=model, discovered_at=now, error="the schema lists no request properties"
        )
    field = _find_image_field(properties)
    transport: ImageTransport | None = None
    mime_types: tuple[str, ...] | None = None
    max_bytes: int | None = None
    if field is not None:
        prop = _string_view(properties[field]) or {}
        transport = _transport(field, prop)
        mime_types = _mime_types(prop)
        max_bytes = _max_bytes(prop, transport)
    ratios = _aspect_ratios(properties.get("aspect_ratio"))
    low, high = _integer_bounds(properties.get("num_outputs"))
    return ModelCapabilities(
        model=model,
        image_field=field,
        image_transport=transport,
        image_mime_types=mime_types,
        max_image_bytes=max_bytes,
        aspect_ratios=ratios,
        num_outputs_min=low,
        num_outputs_max=high,
        discovered_at=now,
    )


def _top_level_properties(schema: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The body's properties, including those spread over ``allOf`` parts."""
    merged: dict[str, Mapping[str, Any]] = {}
    parts: list[Any] = [schema]
    all_of = schema.get("allOf")
    if isinstance(all_of, list):
        parts.extend(all_of)
    for part in parts:
        props = part.get("properties") if isinstance(part, Mapping) else None
        if isinstance(props, Mapping):
            for name, prop in props.items():
                if isinstance(name, str) and isinstance(prop, Mapping):
                    merged.setdefault(name, prop)
    return merged


def _types(prop: Mapping[str, Any]) -> set[str]:
    raw = prop.get("type")
    if isinstance(raw, str):
        return {raw}
    if isinstance(raw, list):
        return {t for t in raw if isinstance(t, str)}
    return set()


def _string_view(prop: Mapping[str, Any]) -> dict[str, Any] | None:
    """The property as a string schema (merging an ``anyOf``/``oneOf`` string branch), or None
    when it cannot hold a free string (another type, or an ``enum``/``const``)."""
    view = {k: v for k, v in prop.items() if k not in ("anyOf", "oneOf")}
    types = _types(prop)
    if not types:
        for key in ("anyOf", "oneOf"):
            branches = prop.get(key)
            if not isinstance(branches, list):
                continue
            for branch in branches:
                if isinstance(branch, Mapping) and "string" in _types(branch):
                    return {**view, **branch}
    if types and "string" not in types:
        return None
    if not types and any(k in prop for k in ("properties", "items", "anyOf", "oneOf")):
        return None
    if "enum" in view or "const" in view:
        return None
    return view


def _text(prop: Mapping[str, Any]) -> str:
    parts = [prop.get("title"), prop.get("description")]
    return " ".join(p for p in parts if isinstance(p, str)).lower()


def _mentions_image(name: str, text: str) -> bool:
    words = set(re.split(r"[^a-z0-9]+", name.lower())) | set(re.findall(r"[a-z]+", text))
    return bool(words & {"image", "images", "img", "photo", "picture"})


def _looks_like_input(prop: Mapping[str, Any]) -> bool:
    fmt = str(prop.get("format", "")).lower()
    text = _text(prop)
    return (
        fmt in _URI_FORMATS
        or fmt in _DATA_URI_FORMATS
        or "contentEncoding" in prop
        or str(prop.get("contentMediaType", "")).lower().startswith("image/")
        or _URL_IN_TEXT.search(text) is not None
        or "base64" in text
        or _DATA_URI_IN_TEXT.search(text) is not None
    )


def _excluded(name: str) -> bool:
    lowered = name.lower()
    return lowered in _NOT_IMAGE_INPUT or any(p in lowered for p in _NOT_IMAGE_INPUT_PARTS)


def _find_image_field(properties: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The input-image property: a known name first, else a string property that says it is
    an image given as a URL, data URI or base64. None rather than a guess."""
    for name in IMAGE_FIELD_NAMES:
        prop = properties.get(name)
        if prop is not None and _string_view(prop) is not None:
            return name
    candidates: list[str] = []
    for name, prop in properties.items():
        view = _string_view(prop)
        if view is None or _excluded(name):
            continue
        if _mentions_image(name, _text(view)) and _looks_like_input(view):
            candidates.append(name)
    if len(candidates) > 1:
        log.info("several possible input-image properties %s; using %r", candidates, candidates[0])
    return candidates[0] if candidates else None


def _transport(name: str, prop: Mapping[str, Any]) -> ImageTransport:
    text = _text(prop)
    fmt = str(prop.get("format", "")).lower()
    encoding = str(prop.get("contentEncoding", "")).lower()
    data_uri = fmt in _DATA_URI_FORMATS or _DATA_URI_IN_TEXT.search(text) is not None
    says_base64 = encoding == "base64" or "base64" in text
    says_url = _URL_IN_TEXT.search(_DATA_URI_IN_TEXT.sub(" ", text)) is not None
    if encoding == "base64":
        return ImageTransport.DATA_URI if data_uri else ImageTransport.BASE64
    if says_url:  # "a URL or base64 image": a URL is lighter and the attachment has one
        return ImageTransport.URL
    if data_uri:
        return ImageTransport.DATA_URI
    if says_base64:  # base64 inside a "uri" string can only be a data URI
        return ImageTransport.DATA_URI if fmt in _URI_FORMATS else ImageTransport.BASE64
    if fmt not in _URI_FORMATS and not name.lower().endswith(("url", "uri")):
        log.info("input-image property %r does not say how it takes images; sending a URL", name)
    return ImageTransport.URL


def _as_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [item.strip() for item in value if isinstance(item, str) and item.strip()]
    return []


def _mime_types(prop: Mapping[str, Any]) -> tuple[str, ...] | None:
    """MIME types the schema states for the image, or None when it states none (or any)."""
    stated: list[str] = []
    for key in _MIME_KEYS:
        stated.extend(_as_strings(prop.get(key)))
    if not stated:
        words = re.findall(r"[a-z]+", _text(prop))
        stated = [_FORMAT_WORDS[w] for w in words if w in _FORMAT_WORDS]
    types = []
    for item in stated:
        mime = normalize_content_type(item)
        if mime in ("image/*", "*/*"):
            return None
        if mime and mime not in types:
            types.append(mime)
    return tuple(types) or None


def _parse_size(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        return int(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", value.lower())
        if match and match.group(2) in ("", *_UNITS):
            size = int(float(match.group(1)) * _UNITS.get(match.group(2), 1))
            return size if size > 0 else None
    return None


def _max_bytes(prop: Mapping[str, Any], transport: ImageTransport) -> int | None:
    """The largest image the schema allows, in bytes, if it says (the smallest stated limit)."""
    limits = [size for key in _SIZE_KEYS if (size := _parse_size(prop.get(key))) is not None]
    for number, unit in _SIZE_IN_TEXT.findall(_text(prop)):
        limits.append(int(float(number) * _UNITS[unit]))
    max_length = prop.get("maxLength")
    if transport is not ImageTransport.URL and isinstance(max_length, int) and max_length > 0:
        # Inline images grow by a third in base64 (plus a short "data:...;base64," prefix).
        overhead = 40 if transport is ImageTransport.DATA_URI else 0
        limits.append(max(0, max_length - overhead) * 3 // 4)
    limits = [limit for limit in limits if limit > 0]
    return min(limits) if limits else None


def _aspect_ratios(prop: Mapping[str, Any] | None) -> tuple[str, ...] | None:
    if prop is None:
        return None
    options: list[Any] = []
    for source in (prop, *[b for b in prop.get("anyOf", []) or [] if isinstance(b, Mapping)]):
        enum = source.get("enum")
        if isinstance(enum, list):
            options.extend(enum)
    ratios = tuple(dict.fromkeys(o for o in options if isinstance(o, str)))
    return ratios or None


def _integer_bounds(prop: Mapping[str, Any] | None) -> tuple[int | None, int | None]:
    if prop is None:
        return None, None

    def bound(key: str, exclusive: str, step: int) -> int | None:
        value = prop.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return math.ceil(value) if step > 0 else math.floor(value)
        value = prop.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return math.floor(value) + 1 if step > 0 else math.ceil(value) - 1
        return None

    return bound("minimum", "exclusiveMinimum", 1), bound("maximum", "exclusiveMaximum", -1)


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


class CapabilityCache:
    """The last discovery for one client and model, refreshed on demand or when stale.

    A failed refresh keeps the last successful discovery (a blip must not switch editing off)
    and is retried after ``retry_after`` seconds; successful ones are kept ``max_age`` seconds
    (None: until :meth:`refresh`). The bot keeps one for its client and hands it to the runner.
    ``fetch_image`` reads an attachment back when the model takes inline images.
    """

    def __init__(
        self,
        client: SchemaSource,
        *,
        model: str = MODEL_ID,
        max_age: float | None = 3600.0,
        retry_after: float = 60.0,
        clock: Callable[[], float] = time.time,
        fetch_image: ImageFetcher | None = None,
    ) -> None:
        self.client = client
        self.fetch_image = fetch_image
        self.model = model
        self.max_age = max_age
        self.retry_after = retry_after
        self.clock = clock
        self._capabilities = ModelCapabilities(model=model, error="not discovered yet")
        self._checked_at: float | None = None
        self._lock = asyncio.Lock()

    @property
    def capabilities(self) -> ModelCapabilities:
        """The last discovery (no image field before the first one)."""
        return self._capabilities

    @property
    def checked_at(self) -> float | None:
        """When the schema was last asked for (successfully or not), or None if never."""
        return self._checked_at

    @property
    def is_stale(self) -> bool:
        """True when :meth:`get` would ask the API again."""
        if self._checked_at is None:
            return True
        limit = self.retry_after if self._capabilities.error else self.max_age
        return limit is not None and self.clock() - self._checked_at >= limit

    async def refresh(self) -> ModelCapabilities:
        """Ask the API for the schema now and return the capabilities in effect."""
        async with self._lock:
            return await self._refresh()

    async def get(self) -> ModelCapabilities:
        """The capabilities, discovering them first if never done or stale."""
        if not self.is_stale:
            return self._capabilities
        async with self._lock:
            if self.is_stale:  # another caller may have refreshed while we waited
                await self._refresh()
            return self._capabilities

    async def _refresh(self) -> ModelCapabilities:
        found = await discover_capabilities(self.client, model=self.model, clock=self.clock)
        self._checked_at = self.clock()
        previous = self._capabilities
        if found.error and previous.error is None:
            log.warning(
                "keeping the %s capabilities discovered at %.0f after a failed refresh",
                self.model,
                previous.discovered_at,
            )
            return previous
        self._capabilities = found
        return found


# --------------------------------------------------------------------------------------------
# Attachments
# --------------------------------------------------------------------------------------------


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
