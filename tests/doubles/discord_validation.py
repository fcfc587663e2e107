"""Discord's request limits, enforced by the test double with Discord-shaped error bodies.

Errors follow Discord's format: ``{"code": 50035, "message": "Invalid Form Body", "errors":
{"embeds": {"0": {"title": {"_errors": [{"code": ..., "message": ...}]}}}}}``.
"""

from __future__ import annotations

import re
from typing import Any

from .discord_models import MessageFlag, OptionType, iter_components

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_ATTACHMENTS = 10
MAX_EMBED_TOTAL = 6000
EMBED_LIMITS = {"title": 256, "description": 4096}
MAX_EMBED_FIELDS = 25
MAX_FIELD_NAME = 256
MAX_FIELD_VALUE = 1024
MAX_FOOTER_TEXT = 2048
MAX_AUTHOR_NAME = 256
MAX_ACTION_ROWS = 5
MAX_ROW_ITEMS = 5
MAX_CUSTOM_ID = 100
MAX_BUTTON_LABEL = 80
MAX_CHOICES = 25
MAX_OPTIONS = 25
MAX_GLOBAL_COMMANDS = 100
COMMAND_NAME_RE = re.compile(r"^[-_'\w]{1,32}$")


class ApiError(Exception):
    """An error answer: HTTP status plus Discord's JSON error body."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.body: dict[str, Any] = {"message": message, "code": code}
        if errors:
            self.body["errors"] = errors


class FormErrors:
    """Collects field errors into Discord's nested ``errors`` object."""

    def __init__(self) -> None:
        self.errors: dict[str, Any] = {}

    def add(self, path: list[str | int], code: str, message: str) -> None:
        node = self.errors
        for key in path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def max_length(self, path: list[str | int], limit: int) -> None:
        self.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")

    def raise_if_any(self) -> None:
        if self.errors:
            raise ApiError(400, 50035, "Invalid Form Body", self.errors)


def unknown(kind: str, code: int) -> ApiError:
    """A 404 such as ``Unknown Message`` (10008)."""
    return ApiError(404, code, f"Unknown {kind}")


def embed_length(embed: dict[str, Any]) -> int:
    """Characters that count towards Discord's 6000-per-message embed budget."""
    total = len(embed.get("title") or "") + len(embed.get("description") or "")
    total += len((embed.get("footer") or {}).get("text") or "")
    total += len((embed.get("author") or {}).get("name") or "")
    for fld in embed.get("fields") or []:
        total += len(fld.get("name") or "") + len(fld.get("value") or "")
    return total


def check_message(
    *,
    content: str | None,
    embeds: list[dict[str, Any]],
    components: list[dict[str, Any]],
    attachment_count: int,
    flags: int,
    has_poll: bool = False,
    sticker_count: int = 0,
) -> None:
    """Validate a message's final state as Discord does; raise :class:`ApiError` if invalid."""
    errors = FormErrors()
    if content is not None and len(content) > MAX_CONTENT:
        errors.max_length(["content"], MAX_CONTENT)
    if len(embeds) > MAX_EMBEDS:
        errors.max_length(["embeds"], MAX_EMBEDS)
    for index, embed in enumerate(embeds):
        _check_embed(errors, index, embed)
    if sum(embed_length(e) for e in embeds) > MAX_EMBED_TOTAL:
        errors.add(
            ["embeds"],
            "MAX_EMBED_SIZE_EXCEEDED",
            f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}",
        )
    if attachment_count > MAX_ATTACHMENTS:
        errors.max_length(["attachments"], MAX_ATTACHMENTS)
    _check_components(errors, components, flags)
    if flags & MessageFlag.IS_COMPONENTS_V2 and (content or embeds):
        errors.add(
            ["content" if content else "embeds"],
            "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
            "The 'content' and 'embeds' fields cannot be used when using "
            "MessageFlags.IS_COMPONENTS_V2",
        )
    errors.raise_if_any()
    if not (content or embeds or components or attachment_count or has_poll or sticker_count):
        raise ApiError(400, 50006, "Cannot send an empty message")


def _check_embed(errors: FormErrors, index: int, embed: dict[str, Any]) -> None:
    for key, limit in EMBED_LIMITS.items():
        if len(embed.get(key) or "") > limit:
            errors.max_length(["embeds", index, key], limit)
    fields = embed.get("fields") or []
    if len(fields) > MAX_EMBED_FIELDS:
        errors.max_length(["embeds", index, "fields"], MAX_EMBED_FIELDS)
    for position, fld in enumerate(fields):
        if len(fld.get("name") or "") > MAX_FIELD_NAME:
            errors.max_length(["embeds", index, "fields", position, "name"], MAX_FIELD_NAME)
        if len(fld.get("value") or "") > MAX_FIELD_VALUE:
            errors.max_length(["embeds", index, "fields", position, "value"], MAX_FIELD_VALUE)
        for key in ("name", "value"):
            if not fld.get(key):
                errors.add(
                    ["embeds", index, "fields", position, key],
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                )
    if len((embed.get("footer") or {}).get("text") or "") > MAX_FOOTER_TEXT:
        errors.max_length(["embeds", index, "footer", "text"], MAX_FOOTER_TEXT)
    if len((embed.get("author") or {}).get("name") or "") > MAX_AUTHOR_NAME:
        errors.max_length(["embeds", index, "author", "name"], MAX_AUTHOR_NAME)


def _check_components(errors: FormErrors, components: list[dict[str, Any]], flags: int) -> None:
    if not flags & MessageFlag.IS_COMPONENTS_V2 and len(components) > MAX_ACTION_ROWS:
        errors.max_length(["components"], MAX_ACTION_ROWS)
    for index, row in enumerate(components):
        if row.get("type") == 1 and len(row.get("components", [])) > MAX_ROW_ITEMS:
            errors.max_length(["components", index, "components"], MAX_ROW_ITEMS)
    seen: set[str] = set()
    for component in iter_components(components):
        custom_id = component.get("custom_id")
        if custom_id is not None:
            if len(custom_id) > MAX_CUSTOM_ID:
                errors.max_length(["components", "custom_id"], MAX_CUSTOM_ID)
            if custom_id in seen:
                errors.add(
                    ["components"],
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                )
            seen.add(custom_id)
        if component.get("type") == 2 and len(component.get("label") or "") > MAX_BUTTON_LABEL:
            errors.max_length(["components", "label"], MAX_BUTTON_LABEL)


def check_commands(commands: list[dict[str, Any]], *, is_global: bool) -> None:
    """Validate a bulk-overwrite body the way Discord does (names, lengths, counts)."""
    errors = FormErrors()
    names: set[tuple[int, str]] = set()
    chat_input = 0
    for index, command in enumerate(commands):
        ctype = int(command.get("type", 1))
        name = command.get("name", "")
        if ctype == 1:
            chat_input += 1
            _check_name(errors, [index, "name"], name)
            description = command.get("description", "")
            if not 1 <= len(description) <= 100:
                errors.add(
                    [index, "description"],
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                )
        elif not 1 <= len(name) <= 32:
            errors.add(
                [index, "name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length."
            )
        if (ctype, name) in names:
            errors.add(
                [index, "name"],
                "APPLICATION_COMMANDS_DUPLICATE_NAME",
                f"Application command names must be unique: {name}",
            )
        names.add((ctype, name))
        _check_options(errors, [index, "options"], command.get("options") or [])
    if is_global and chat_input > MAX_GLOBAL_COMMANDS:
        errors.max_length([], MAX_GLOBAL_COMMANDS)
    errors.raise_if_any()


def _check_name(errors: FormErrors, path: list[str | int], name: str) -> None:
    if not COMMAND_NAME_RE.match(name) or name != name.lower():
        errors.add(path, "APPLICATION_COMMAND_INVALID_NAME", f"Command name is invalid: {name!r}")


def _check_options(
    errors: FormErrors, path: list[str | int], options: list[dict[str, Any]]
) -> None:
    if len(options) > MAX_OPTIONS:
        errors.max_length(path, MAX_OPTIONS)
    seen_optional = False
    for index, option in enumerate(options):
        here = [*path, index]
        _check_name(errors, [*here, "name"], option.get("name", ""))
        if not 1 <= len(option.get("description", "")) <= 100:
            errors.add(
                [*here, "description"],
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            )
        if option.get("type") in (OptionType.SUB_COMMAND, OptionType.SUB_COMMAND_GROUP):
            _check_options(errors, [*here, "options"], option.get("options") or [])
            continue
        if option.get("required"):
            if seen_optional:
                errors.add(
                    [*here, "required"],
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            seen_optional = True
        choices = option.get("choices") or []
        if len(choices) > MAX_CHOICES:
            errors.max_length([*here, "choices"], MAX_CHOICES)
        for position, choice in enumerate(choices):
            if not 1 <= len(choice.get("name", "")) <= 100:
                errors.add(
                    [*here, "choices", position, "name"],
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                )
            if isinstance(choice.get("value"), str) and len(choice["value"]) > 100:
                errors.max_length([*here, "choices", position, "value"], 100)
        if choices and option.get("autocomplete"):
            errors.add(
                [*here, "autocomplete"],
                "APPLICATION_COMMAND_OPTION_CHOICES_AUTOCOMPLETE",
                "Autocomplete cannot be set if there are choices.",
            )


def check_modal(data: dict[str, Any]) -> None:
    """Validate a MODAL (type 9) callback's data."""
    errors = FormErrors()
    if not 1 <= len(data.get("title") or "") <= 45:
        errors.add(["data", "title"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
    if not 1 <= len(data.get("custom_id") or "") <= MAX_CUSTOM_ID:
        errors.add(
            ["data", "custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
        )
    if not 1 <= len(data.get("components") or []) <= 5:
        errors.add(
            ["data", "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
        )
    errors.raise_if_any()


def check_autocomplete(data: dict[str, Any]) -> None:
    """Validate an APPLICATION_COMMAND_AUTOCOMPLETE_RESULT (type 8) callback's data."""
    errors = FormErrors()
    if len(data.get("choices") or []) > MAX_CHOICES:
        errors.max_length(["data", "choices"], MAX_CHOICES)
    errors.raise_if_any()
