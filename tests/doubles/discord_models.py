"""Data types shared by the Discord test double.

Specs (``GuildSpec`` & co.) describe the world the double serves; records (``MessageRecord``,
``InteractionRecord`` ...) are what it observed the bot do. Everything here is plain data: the
server logic lives in :mod:`tests.doubles.discord_double`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

DISCORD_EPOCH_MS = 1420070400000
MIB = 1024 * 1024


class Perm:
    """Permission bits (https://discord.com/developers/docs/topics/permissions)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CHANGE_NICKNAME = 1 << 26
    MANAGE_ROLES = 1 << 28
    USE_APPLICATION_COMMANDS = 1 << 31
    MODERATE_MEMBERS = 1 << 40
    SEND_MESSAGES_IN_THREADS = 1 << 38
    # Every bit up to the highest one Discord currently defines; the owner and ADMINISTRATOR get it.
    ALL = (1 << 53) - 1


#: What ``@everyone`` gets when a :class:`GuildSpec` does not define that role itself.
DEFAULT_EVERYONE_PERMISSIONS = (
    Perm.CREATE_INSTANT_INVITE
    | Perm.ADD_REACTIONS
    | Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.CHANGE_NICKNAME
    | Perm.USE_APPLICATION_COMMANDS
    | Perm.SEND_MESSAGES_IN_THREADS
)

#: Permissions of the bot's managed integration role (what a typical invite link grants).
DEFAULT_BOT_PERMISSIONS = (
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.SEND_MESSAGES_IN_THREADS
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.ADD_REACTIONS
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.USE_APPLICATION_COMMANDS
)


class MessageFlag:
    """Message flag bits used by the double."""

    SUPPRESS_EMBEDS = 1 << 2
    EPHEMERAL = 1 << 6
    LOADING = 1 << 7
    SUPPRESS_NOTIFICATIONS = 1 << 12
    IS_COMPONENTS_V2 = 1 << 15


class OptionType:
    """Application command option types."""

    SUB_COMMAND = 1
    SUB_COMMAND_GROUP = 2
    STRING = 3
    INTEGER = 4
    BOOLEAN = 5
    USER = 6
    CHANNEL = 7
    ROLE = 8
    MENTIONABLE = 9
    NUMBER = 10
    ATTACHMENT = 11


class SnowflakeFactory:
    """Generates strictly increasing, time-based snowflakes (as Discord does).

    discord.py derives ``created_at`` (and an interaction's 15 minute expiry) from the id, so ids
    must encode the current time.
    """

    def __init__(self, worker_id: int = 1) -> None:
        self._worker = worker_id & 0x1F
        self._last = 0
        self._counter = itertools.count()

    def next(self) -> int:
        """Return a fresh snowflake for "now"."""
        millis = int(time.time() * 1000) - DISCORD_EPOCH_MS
        value = (millis << 22) | (self._worker << 17) | (next(self._counter) & 0xFFF)
        self._last = value = max(value, self._last + 1)
        return value


def snowflake_time(snowflake: int) -> datetime:
    """The UTC creation time encoded in ``snowflake``."""
    return datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, tz=UTC)


# --------------------------------------------------------------------------------------------
# Specs: the world the double serves.
# --------------------------------------------------------------------------------------------


@dataclass
class RoleSpec:
    """A guild role. The ``@everyone`` role has ``id == guild id``."""

    id: int
    name: str
    permissions: int = 0
    position: int = 1
    managed: bool = False
    bot_id: int | None = None


@dataclass
class MemberSpec:
    """A guild member; ``roles`` lists role ids (``@everyone`` is implicit)."""

    id: int
    name: str
    roles: list[int] = field(default_factory=list)
    bot: bool = False
    nick: str | None = None


@dataclass
class ChannelSpec:
    """A guild channel (type 0 = text). ``permission_overwrites`` uses Discord's JSON shape:
    ``{"id": "<role or member id>", "type": 0 (role) | 1 (member), "allow": "<bits>",
    "deny": "<bits>"}``."""

    id: int
    name: str
    type: int = 0
    permission_overwrites: list[dict[str, Any]] = field(default_factory=list)
    topic: str | None = None
    position: int = 0


@dataclass
class GuildSpec:
    """A guild the bot is in.

    ``filesize_limit`` is what the double enforces on uploads (413 above it) and what
    interactions report as ``attachment_size_limit``. discord.py's ``Guild.filesize_limit`` is
    derived from the premium tier only, so it equals this value just for 10, 50 or 100 MiB; the
    double sends the smallest tier whose limit is >= ``filesize_limit``.
    """

    id: int
    name: str
    owner_id: int
    channels: list[ChannelSpec]
    roles: list[RoleSpec]
    members: list[MemberSpec]
    filesize_limit: int = 10 * MIB
    bot_permissions: int = DEFAULT_BOT_PERMISSIONS
    locale: str = "en-US"

    def role(self, role_id: int) -> RoleSpec | None:
        """The role with ``role_id``, if any."""
        return next((r for r in self.roles if r.id == role_id), None)

    def member(self, user_id: int) -> MemberSpec | None:
        """The member with ``user_id``, if any."""
        return next((m for m in self.members if m.id == user_id), None)

    def channel(self, channel_id: int) -> ChannelSpec | None:
        """The channel with ``channel_id``, if any."""
        return next((c for c in self.channels if c.id == channel_id), None)

    @property
    def premium_tier(self) -> int:
        """The premium tier whose upload limit (per discord.py) covers ``filesize_limit``."""
        if self.filesize_limit <= 10 * MIB:
            return 0
        if self.filesize_limit <= 50 * MIB:
            return 2
        return 3


# --------------------------------------------------------------------------------------------
# Records: what the double observed.
# --------------------------------------------------------------------------------------------


@dataclass
class AttachmentRecord:
    """A file stored by the double (uploaded by the bot or given to a slash command)."""

    id: int
    filename: str
    data: bytes
    content_type: str | None
    description: str | None = None
    url: str = ""

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self.data)


class EditRecord(dict[str, Any]):
    """One edit of a message: the PATCH body (a dict) plus when and how it arrived.

    ``at`` is ``time.monotonic()`` on receipt, ``files`` the newly uploaded files and ``source``
    one of ``"channel"``, ``"webhook"`` (interaction original/follow-up) or ``"component"``
    (an interaction answered with UPDATE_MESSAGE, type 7).
    """

    def __init__(
        self, body: dict[str, Any], *, at: float, files: list[AttachmentRecord], source: str
    ) -> None:
        super().__init__(body)
        self.at = at
        self.files = files
        self.source = source


@dataclass(eq=False)
class MessageRecord:
    """A message as the double stores it; mutated in place by edits and deletes."""

    id: int
    channel_id: int
    guild_id: int | None
    author_id: int
    content: str | None
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[AttachmentRecord] = field(default_factory=list)
    allowed_mentions: dict[str, Any] | None = None
    flags: int = 0
    nonce: str | None = None
    deleted: bool = False
    edits: list[EditRecord] = field(default_factory=list)
    interaction_id: int | None = None
    webhook: bool = False
    created_at: float = field(default_factory=time.monotonic)
    type: int = 0
    tts: bool = False
    mentions: list[int] = field(default_factory=list)
    mention_roles: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    reactions: list[str] = field(default_factory=list)
    edited_at: float | None = None
    edited_timestamp: str | None = None
    deleted_at: float | None = None
    message_reference: dict[str, Any] | None = None

    @property
    def ephemeral(self) -> bool:
        """Whether only the invoking user can see this message (flag 64)."""
        return bool(self.flags & MessageFlag.EPHEMERAL)

    @property
    def loading(self) -> bool:
        """Whether this is a deferred "<bot> is thinking..." placeholder (flag 128)."""
        return bool(self.flags & MessageFlag.LOADING)

    @property
    def created_wall(self) -> datetime:
        """Creation time as Discord reports it (from the snowflake)."""
        return snowflake_time(self.id)

    def iter_components(self) -> Iterator[dict[str, Any]]:
        """Every component in the message, depth first (rows, containers, accessories ...)."""
        yield from iter_components(self.components)


def iter_components(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Walk a component tree depth first."""
    for component in components:
        yield component
        yield from iter_components(component.get("components", []))
        for key in ("accessory", "component"):
            child = component.get(key)
            if isinstance(child, dict):
                yield from iter_components([child])


@dataclass(eq=False)
class InteractionRecord:
    """An interaction the double dispatched, and everything the bot answered to it."""

    id: int
    token: str
    type: int
    user_id: int
    guild_id: int | None
    channel_id: int
    payload: dict[str, Any]
    received_at: float = 0.0
    responded_at: float | None = None
    responses: list[dict[str, Any]] = field(default_factory=list)
    original: MessageRecord | None = None
    followups: list[MessageRecord] = field(default_factory=list)
    modal: dict[str, Any] | None = None
    autocomplete_choices: list[dict[str, Any]] | None = None
    rejected_callbacks: list[dict[str, Any]] = field(default_factory=list)
    message_id: int | None = None
    _first_response: asyncio.Future[dict[str, Any]] | None = field(default=None, repr=False)
    _waiter: Callable[[asyncio.Future[Any], float, str], Awaitable[Any]] | None = field(
        default=None, repr=False
    )

    @property
    def ack_latency(self) -> float | None:
        """Seconds between dispatch and the first callback, or ``None`` while unanswered."""
        if self.responded_at is None:
            return None
        return self.responded_at - self.received_at

    @property
    def response_type(self) -> int | None:
        """The callback type of the first response (4 message, 5 defer, 6, 7, 8, 9 modal)."""
        return self.responses[0]["type"] if self.responses else None

    @property
    def ephemeral(self) -> bool:
        """Whether the first response was ephemeral (flag 64)."""
        if self.original is not None and self.original.interaction_id == self.id:
            return self.original.ephemeral
        if not self.responses:
            return False
        data = self.responses[0].get("data") or {}
        return bool(int(data.get("flags") or 0) & MessageFlag.EPHEMERAL)

    async def wait_for_response(
        self,
        timeout: float = 5,
    ) -> dict[str, Any]:
        """Wait for the first callback the bot sends and return its body (``type`` + ``data``)."""
        assert self._first_response is not None and self._waiter is not None
        return await self._waiter(
            self._first_response, timeout, f"a response to interaction {self.id}"
        )


@dataclass
class RequestLog:
    """One HTTP request the double received. ``path`` is relative to the API base for API routes
    (``/channels/1/messages``) and absolute otherwise (``/attachments/...``)."""

    method: str
    path: str
    query: dict[str, str]
    at: float
    status: int = 0
    body: Any = None
    api: bool = True

    @property
    def monotonic_time(self) -> float:
        """Alias of ``at``: ``time.monotonic()`` when the request arrived."""
        return self.at


EventKind = Literal[
    "message_create",
    "message_update",
    "message_delete",
    "interaction_create",
    "interaction_response",
    "request",
    "commands_synced",
    "gateway_ready",
    "gateway_resumed",
    "gateway_closed",
]


@dataclass
class Event:
    """Something that happened in the double; see :meth:`DiscordDouble.wait_for`."""

    kind: EventKind
    at: float
    message: MessageRecord | None = None
    interaction: InteractionRecord | None = None
    request: RequestLog | None = None
    data: Any = None


class BotCrashed(RuntimeError):
    """The bot's ``start()`` task ended (usually with an exception) while a test was waiting."""
