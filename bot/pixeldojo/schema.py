"""What the model's request schema says about input images, read once and cached.

PixelDojo's request schemas reject unknown properties, so the bot never guesses the name of the
input-image field. It reads ``GET /models/flux-kontext-pro/schema`` at start-up
(:func:`discover_capabilities`), keeps the answer in a :class:`CapabilityCache`, and when the
schema offers no image property, editing is reported as unavailable
(``bot.generation.edit_input`` prepares a member's image from these capabilities).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from bot.images import IMAGE_MIME_TYPES, normalize_content_type
from bot.pixeldojo.errors import PixelDojoError
from bot.pixeldojo.models import MODEL_ID

log = logging.getLogger(__name__)

DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024

# Property names that carry the image to edit, most likely first: the first one the schema has
# wins. Any other image property is found only if it says it takes a URL, data URI or base64.
IMAGE_FIELD_NAMES: tuple[str, ...] = ("image_url", "input_image", "image")
# The documented body fields (webhook_url is a "uri" string too): never the image to edit.
_NOT_IMAGE_INPUT = frozenset(
    {"prompt", "model", "aspect_ratio", "num_outputs", "seed", "webhook_url"}
)
# Format words a description may list, mapped to MIME types.
_FORMAT_WORDS: dict[str, str] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
}
_URI_FORMAT = "uri"
_DATA_URI_FORMAT = "data-url"
_SIZE_KEY = "x-max-bytes"
_UNITS: dict[str, int] = {"kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}
# A limit stated in the description ("maximum 5 MB").
_SIZE_IN_TEXT = re.compile(
    r"(?:max(?:imum)?|up to|at most)[^0-9]{0,24}(\d+(?:\.\d+)?)\s*(kib|kb|mib|mb)\b"
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
    """What one model's request schema says about input images.

    ``image_mime_types`` and ``max_image_bytes`` are what the schema states (None: not stated);
    ``error`` is set when the schema could not be read, in which case editing is unavailable.
    """

    model: str = MODEL_ID
    image_field: str | None = None
    image_transport: ImageTransport | None = None
    image_mime_types: tuple[str, ...] | None = None
    max_image_bytes: int | None = None
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
            return IMAGE_MIME_TYPES
        return tuple(t for t in IMAGE_MIME_TYPES if t in self.image_mime_types)

    @property
    def image_size_limit(self) -> int:
        """Largest attachment accepted: the schema's stated maximum, else 10 MiB."""
        return self.max_image_bytes or DEFAULT_MAX_IMAGE_BYTES


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
        max_bytes = _max_bytes(prop)
    return ModelCapabilities(
        model=model,
        image_field=field,
        image_transport=transport,
        image_mime_types=mime_types,
        max_image_bytes=max_bytes,
        discovered_at=now,
    )


def _top_level_properties(schema: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The body's properties (those that are objects, under string names)."""
    props = schema.get("properties")
    if not isinstance(props, Mapping):
        return {}
    return {
        name: prop
        for name, prop in props.items()
        if isinstance(name, str) and isinstance(prop, Mapping)
    }


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
    return bool(words & {"image", "images", "photo"})


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
        if view is None or name in _NOT_IMAGE_INPUT:
            continue
        if _mentions_image(name, _text(view)) and _stated_transport(view) is not None:
            candidates.append(name)
    if len(candidates) > 1:
        log.info("several possible input-image properties %s; using %r", candidates, candidates[0])
    return candidates[0] if candidates else None


def _stated_transport(prop: Mapping[str, Any]) -> ImageTransport | None:
    """How the property says it takes an image (format, contentEncoding, or its description),
    or None when it does not say."""
    text = _text(prop)
    fmt = str(prop.get("format", "")).lower()
    encoding = str(prop.get("contentEncoding", "")).lower()
    data_uri = fmt == _DATA_URI_FORMAT or _DATA_URI_IN_TEXT.search(text) is not None
    says_base64 = encoding == "base64" or "base64" in text
    says_url = _URL_IN_TEXT.search(_DATA_URI_IN_TEXT.sub(" ", text)) is not None
    if encoding == "base64":
        return ImageTransport.DATA_URI if data_uri else ImageTransport.BASE64
    if says_url:  # "a URL or base64 image": a URL is lighter and the attachment has one
        return ImageTransport.URL
    if data_uri:
        return ImageTransport.DATA_URI
    if says_base64:  # base64 inside a "uri" string can only be a data URI
        return ImageTransport.DATA_URI if fmt == _URI_FORMAT else ImageTransport.BASE64
    if fmt == _URI_FORMAT:
        return ImageTransport.URL
    return None


def _transport(name: str, prop: Mapping[str, Any]) -> ImageTransport:
    stated = _stated_transport(prop)
    if stated is not None:
        return stated
    if not name.lower().endswith(("url", "uri")):
        log.info("input-image property %r does not say how it takes images; sending a URL", name)
    return ImageTransport.URL


def _mime_types(prop: Mapping[str, Any]) -> tuple[str, ...] | None:
    """MIME types the schema states for the image (its ``contentMediaType``, else formats its
    description names), or None when it states none (or any)."""
    declared = prop.get("contentMediaType")
    if isinstance(declared, str):
        stated = [declared]
    else:
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


def _max_bytes(prop: Mapping[str, Any]) -> int | None:
    """The largest image the schema allows, in bytes, if it says (the smallest stated limit)."""
    text = _text(prop)
    limits = [int(float(number) * _UNITS[unit]) for number, unit in _SIZE_IN_TEXT.findall(text)]
    stated = prop.get(_SIZE_KEY)
    if isinstance(stated, int) and not isinstance(stated, bool):
        limits.append(stated)
    limits = [limit for limit in limits if limit > 0]
    return min(limits) if limits else None


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
