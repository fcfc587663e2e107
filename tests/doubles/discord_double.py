"""A loopback Discord: REST API + gateway that the real discord.py client connects to.

Usage (in-process bot)::

    async with DiscordDouble(guilds=[guild]) as double:
        bot = commands.Bot(command_prefix=commands.when_mentioned,
                           intents=discord.Intents.default(), guild_ready_timeout=0.1)
        async with run_bot_against(double, bot):
            await bot.tree.sync(guild=discord.Object(guild.id))
            record = await double.slash("imagine", {"prompt": "a fox"}, user_id=...,
                                        guild_id=..., channel_id=...)
            first = await record.wait_for_response()

A bot running as a separate process only needs ``DISCORD_API_BASE=double.api_base``,
``DISCORD_GATEWAY_URL=double.gateway_url`` and ``double.token``: everything goes over HTTP and
the websocket, nothing is shortcut in-process.

Discord behaviour the double reproduces (so tests catch the bugs it causes):

* interactions must be answered within 3 s (``interaction_ack_timeout``; later callbacks get
  404 "Unknown interaction" 10062) and only once (400, 40060); their token works for 15 min;
* after a deferred "thinking" response the first follow-up *fills* that message (keeping its
  ephemerality) instead of creating a new one;
* message limits (content 2000, 10 embeds, title 256, description 4096, field value 1024,
  6000 embed characters, 10 attachments) answer 400 / 50035 with Discord's error body; a file
  above the guild's ``filesize_limit`` answers 413 / 40005;
* ``nonce`` + ``enforce_nonce`` deduplicate channel sends for ``nonce_ttl`` seconds (default
  forever); the nonce is echoed in the create answer and MESSAGE_CREATE only, never in
  history, as Discord does not keep it;
* ``allowed_mentions`` decides who is pinged (``MessageRecord.mentions`` & co.);
* bot permissions are checked for channel sends (403 / 50013), DMs to users in
  ``dms_closed`` fail (403 / 50007), users' messages reach sessions without the
  MESSAGE_CONTENT intent with empty content;
* ephemeral messages are invisible to channel routes and history;
* ``rate_limit`` buckets answer 429 with Discord's body and headers, optionally one bucket per
  top-level resource (channel, webhook id + token) and with Discord's fixed windows;
* ``drop_connections`` closes the connection of chosen requests without an answer, as a
  network outage would (logged with status 0);
* sharding: ``GET /gateway/bot`` recommends ``shards`` sessions; a session identified with
  ``shard: [id, count]`` is sent only the guilds where ``(guild_id >> 22) % count == id`` (in
  READY and GUILD_CREATE) and only their events and interactions, DMs going to shard 0.

What it does not model: threads, voice, reactions by users, presence, audit logs, and most
guild management endpoints (any route it lacks answers 404 and is listed in ``unhandled``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import mimetypes
import re
import secrets
import socket
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import BodyPartReader, web

from .discord_gateway import Gateway, GatewaySession
from .discord_interaction_data import (
    SELECT_TYPES,
    build_options,
    check_can_use,
    command_leaf,
    mirror_modal,
    nest_options,
    select_data,
)
from .discord_models import (
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    MIB,
    AttachmentRecord,
    BotCrashed,
    ChannelSpec,
    EditRecord,
    Event,
    EventKind,
    GuildSpec,
    InteractionRecord,
    MemberSpec,
    MessageFlag,
    MessageRecord,
    OptionType,
    Perm,
    RequestLog,
    RoleSpec,
    iter_components,
)
from .discord_validation import (
    ApiError,
    FormErrors,
    check_autocomplete,
    check_commands,
    check_message,
    check_modal,
    unknown,
)
from .discord_world import World

__all__ = [
    "DEFAULT_BOT_PERMISSIONS",
    "DEFAULT_EVERYONE_PERMISSIONS",
    "AttachmentRecord",
    "BotCrashed",
    "ChannelSpec",
    "DiscordDouble",
    "EditRecord",
    "Event",
    "GuildSpec",
    "InteractionRecord",
    "MemberSpec",
    "MessageFlag",
    "MessageRecord",
    "OptionType",
    "Perm",
    "RequestLog",
    "RoleSpec",
    "World",
    "run_bot_against",
]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
DEFAULT_APPLICATION_ID = 1_180_000_000_000_000_001
DEFAULT_BOT_USER_ID = 1_180_000_000_000_000_001
# Paths under the API that authenticate with the token in the URL, or not at all.
UNAUTHENTICATED_PREFIXES = ("/interactions/", "/webhooks/", "/gateway")

INTERACTION_APPLICATION_COMMAND = 2
INTERACTION_COMPONENT = 3
INTERACTION_AUTOCOMPLETE = 4
INTERACTION_MODAL_SUBMIT = 5

CALLBACK_MESSAGE = 4
CALLBACK_DEFERRED_MESSAGE = 5
CALLBACK_DEFERRED_UPDATE = 6
CALLBACK_UPDATE_MESSAGE = 7
CALLBACK_AUTOCOMPLETE = 8
CALLBACK_MODAL = 9
ALLOWED_CALLBACKS = {
    INTERACTION_APPLICATION_COMMAND: {CALLBACK_MESSAGE, CALLBACK_DEFERRED_MESSAGE, CALLBACK_MODAL},
    INTERACTION_COMPONENT: {
        CALLBACK_MESSAGE,
        CALLBACK_DEFERRED_MESSAGE,
        CALLBACK_DEFERRED_UPDATE,
        CALLBACK_UPDATE_MESSAGE,
        CALLBACK_MODAL,
    },
    INTERACTION_AUTOCOMPLETE: {CALLBACK_AUTOCOMPLETE},
    INTERACTION_MODAL_SUBMIT: {
        CALLBACK_MESSAGE,
        CALLBACK_DEFERRED_MESSAGE,
        CALLBACK_DEFERRED_UPDATE,
        CALLBACK_UPDATE_MESSAGE,
    },
}

MESSAGE_TYPE_DEFAULT = 0
MESSAGE_TYPE_CHAT_INPUT_COMMAND = 20
# Flags a bot may set on a message; everything else in `flags` is ignored, as Discord does.
SETTABLE_MESSAGE_FLAGS = (
    MessageFlag.SUPPRESS_EMBEDS
    | MessageFlag.SUPPRESS_NOTIFICATIONS
    | MessageFlag.IS_COMPONENTS_V2
    | MessageFlag.EPHEMERAL
)

MAX_NONCE_LENGTH = 25

INTENT_GUILDS = 1 << 0
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15

USER_MENTION_RE = re.compile(r"<@!?(\d+)>")
ROLE_MENTION_RE = re.compile(r"<@&(\d+)>")
EVERYONE_MENTION_RE = re.compile(r"@(?:everyone|here)")
FILE_FIELD_RE = re.compile(r"^(?:files\[(\d+)\]|file(\d*))$")

JSON_HEADERS = {"Content-Type": "application/json"}
LOG_KEY = web.RequestKey("log", RequestLog)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer with exactly ``Content-Type: application/json``.

    (aiohttp's ``json_response`` appends ``; charset=utf-8``; discord.py then treats the body as
    text and, e.g., 429 handling breaks.)
    """
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={**JSON_HEADERS, **(headers or {})}
    )


@dataclass
class _Upload:
    """A file part of a multipart request."""

    index: int
    filename: str
    data: bytes
    content_type: str


@dataclass
class _Window:
    """One bucket's requests for one key: accepted hit times (sliding), or the start and count
    of the current window (fixed)."""

    hits: deque[float] = field(default_factory=deque)
    started: float = 0.0
    count: int = 0


@dataclass
class _RateBucket:
    method: str
    pattern: re.Pattern[str]
    limit: int
    per: float
    send_headers: bool
    name: str
    kind: str
    per_match: bool = False
    fixed_window: bool = False
    scope: str = "user"
    windows: dict[str, _Window] = field(default_factory=dict)

    def key(self, method: str, path: str) -> str | None:
        """The bucket key a request counts under (its first group with ``per_match``, else
        ``""``), or None if the request is not in this bucket."""
        if self.method not in ("*", method):
            return None
        match = self.pattern.fullmatch(path)
        if match is None:
            return None
        return match.group(1) if self.per_match else ""

    def window(self, key: str, now: float, *, expire: bool = True) -> _Window:
        """``key``'s window with requests older than ``per`` forgotten. A fixed window is only
        closed by a request (``expire``): headers describe the window the request counted in,
        as Discord's do, even when it closed while the request was being handled."""
        window = self.windows.setdefault(key, _Window())
        if self.fixed_window:
            if expire and window.count and now - window.started >= self.per:
                window.count = 0
        else:
            while window.hits and now - window.hits[0] >= self.per:
                window.hits.popleft()
        return window

    def used(self, window: _Window) -> int:
        return window.count if self.fixed_window else len(window.hits)

    def reset_after(self, window: _Window, now: float) -> float:
        """Seconds until ``window`` has room again (the whole ``per`` if it is empty)."""
        if self.fixed_window:
            start = window.started if window.count else now
        else:
            start = window.hits[0] if window.hits else now
        return start + self.per - now

    def record(self, window: _Window, now: float) -> None:
        if not self.fixed_window:
            window.hits.append(now)
            return
        if window.count == 0:
            window.started = now
        window.count += 1


@dataclass
class _Drop:
    method: str
    pattern: re.Pattern[str]
    remaining: int
    with_files: bool = False
    answer: ApiError | None = None
    """Answer this error instead of dropping the connection."""


class _DroppedResponse(web.Response):
    """Returned after aborting the transport; never written."""


class DiscordDouble:
    """A Discord REST API + gateway on 127.0.0.1 serving the given guilds to one bot.

    Records every request, message and interaction for assertions; see the module docstring.
    The specs passed in are deep-copied: mutate ``double.guilds[id]`` to change the world (e.g. a
    member's roles) between interactions.
    """

    def __init__(
        self,
        *,
        guilds: list[GuildSpec],
        application_id: int = DEFAULT_APPLICATION_ID,
        bot_user_id: int = DEFAULT_BOT_USER_ID,
        bot_name: str = "PixelDojo",
        token: str | None = None,
        interaction_ack_timeout: float | None = 3.0,
        interaction_token_ttl: float = 15 * 60,
        heartbeat_interval_ms: int = 41250,
        clock: Callable[[], float] = time.monotonic,
        shards: int = 1,
    ) -> None:
        self.application_id = application_id
        #: The shard count ``GET /gateway/bot`` recommends (an AutoShardedClient uses it).
        self.shards = shards
        #: Shards Discord lets the bot IDENTIFY per 5 s (``session_start_limit.max_concurrency``).
        self.max_concurrency = 1
        #: The seconds rate-limit buckets count in, read once per request a bucket matches (and
        #: again for its headers with ``send_headers``); a test passes its own to make windows
        #: exact whatever the machine's speed.
        self.clock = clock
        self.bot_user_id = bot_user_id
        self.bot_name = bot_name
        self.token: str = token or f"double.{secrets.token_urlsafe(24)}"
        self.interaction_ack_timeout = interaction_ack_timeout
        self.interaction_token_ttl = interaction_token_ttl
        self.verify_key = secrets.token_hex(32)
        #: The served state; ``guilds``, ``messages``, ``interactions`` and ``attachments`` below
        #: are the world's own dicts.
        self.world = World(
            guilds=[copy.deepcopy(spec) for spec in guilds],
            application_id=application_id,
            bot_user_id=bot_user_id,
            bot_name=bot_name,
            base_url=lambda: self.base_url,
        )
        self.guilds: dict[int, GuildSpec] = self.world.guilds
        self.messages: dict[int, MessageRecord] = self.world.messages
        self.interactions: dict[int, InteractionRecord] = self.world.interactions
        self.attachments: dict[int, AttachmentRecord] = self.world.attachments
        self.requests: list[RequestLog] = []
        self.unhandled: list[RequestLog] = []
        self.rate_limited_count = 0
        #: 429s answered, by the ``kind`` each :meth:`rate_limit` bucket was given.
        self.rate_limited_by_kind: Counter[str] = Counter()
        self.events: list[Event] = []
        #: Users whose DMs are closed: sending them a DM answers 403 (50007).
        self.dms_closed: set[int] = set()
        self.typing_count = 0

        self._commands: dict[int | None, list[dict[str, Any]]] = {}
        self._last_sync: list[dict[str, Any]] | None = None
        self._nonces: dict[tuple[int, int, str], tuple[int, float]] = {}
        #: Seconds a nonce deduplicates sends (Discord: "the past few minutes"); None: forever.
        #: Set 0 to act as if every earlier nonce had expired.
        self.nonce_ttl: float | None = None
        self._buckets: list[_RateBucket] = []
        self._drops: list[_Drop] = []
        self._waiters: list[tuple[Callable[[Event], bool], asyncio.Future[Event]]] = []
        self._watched: list[asyncio.Task[Any]] = []
        self._gateway = Gateway(self, heartbeat_interval_ms=heartbeat_interval_ms)
        self._runner: web.AppRunner | None = None
        self._port = 0

    # ------------------------------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to a random 127.0.0.1 port and start serving."""
        app = web.Application(middlewares=[self._middleware], client_max_size=512 * MIB)
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        """Close gateway connections and stop the server."""
        await self._gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordDouble:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (attachments are served under it)."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base(self) -> str:
        """Value for ``discord.http.Route.BASE``."""
        return f"{self.base_url}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        """Value for ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` (also the resume URL)."""
        return f"ws://127.0.0.1:{self._port}/"

    @property
    def identify_count(self) -> int:
        """How many IDENTIFYs the gateway accepted (one per client start)."""
        return self._gateway.identify_count

    @property
    def resume_count(self) -> int:
        """How many RESUMEs the gateway accepted."""
        return self._gateway.resume_count

    @property
    def connected(self) -> bool:
        """Whether a client is connected and identified (or resumed)."""
        return self._gateway.active_session() is not None

    @property
    def identified_shards(self) -> list[list[int] | None]:
        """The ``shard`` of every IDENTIFY the gateway accepted, in order (None: unsharded)."""
        return [session.shard for session in self._gateway.sessions]

    @property
    def identified_intents(self) -> list[int]:
        """The ``intents`` of every IDENTIFY the gateway accepted, in order."""
        return [session.intents for session in self._gateway.sessions]

    def dispatched(self, shard: list[int] | None, event: str) -> list[dict[str, Any]]:
        """The data of every ``event`` dispatched to the latest session identified with
        ``shard`` (of its last 2,000 dispatches), oldest first."""
        session = next(s for s in reversed(self._gateway.sessions) if s.shard == shard)
        return [p["d"] for p in session.log if p["t"] == event]

    # ------------------------------------------------------------------------------------------
    # Waiting
    # ------------------------------------------------------------------------------------------

    def watch(self, task: asyncio.Task[Any]) -> None:
        """Fail every wait promptly with :class:`BotCrashed` if ``task`` (a ``bot.start()``)
        ends with an exception. :func:`run_bot_against` does this for you."""
        self._watched.append(task)

    def unwatch(self, task: asyncio.Task[Any]) -> None:
        """Stop watching ``task``."""
        if task in self._watched:
            self._watched.remove(task)

    async def _await(
        self, future: asyncio.Future[Any], within: float, what: str, *, cancel: bool = True
    ) -> Any:
        """Wait for ``future``, failing fast if a watched bot task crashes."""
        deadline = time.monotonic() + within
        try:
            while True:
                remaining = deadline - time.monotonic()
                watched = [t for t in self._watched if t is not future]
                done, _ = await asyncio.wait(
                    [future, *watched],
                    timeout=max(remaining, 0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if future in done:
                    return future.result()
                for task in watched:
                    if task in done:
                        self.unwatch(task)
                        if not task.cancelled() and task.exception() is not None:
                            raise BotCrashed(
                                f"the bot task ended with an exception while waiting for {what}"
                            ) from task.exception()
                if not done:
                    raise TimeoutError(f"timed out after {within}s waiting for {what}")
        finally:
            if cancel and not future.done():
                future.cancel()

    def emit(
        self,
        kind: EventKind,
        *,
        message: MessageRecord | None = None,
        interaction: InteractionRecord | None = None,
        request: RequestLog | None = None,
        data: Any = None,
    ) -> Event:
        """Record an event and wake matching :meth:`wait_for` callers."""
        event = Event(kind, time.monotonic(), message, interaction, request, data)
        self.events.append(event)
        for waiter in list(self._waiters):
            predicate, future = waiter
            if future.done():
                self._waiters.remove(waiter)
                continue
            try:
                matched = predicate(event)
            except Exception as exc:  # surface predicate bugs in the waiting test
                future.set_exception(exc)
                self._waiters.remove(waiter)
                continue
            if matched:
                future.set_result(event)
                self._waiters.remove(waiter)
        return event

    async def wait_for(
        self,
        predicate: Callable[[Event], bool],
        timeout: float = 10,
    ) -> Event:
        """Wait for a *future* event matching ``predicate`` (see :class:`Event` kinds)."""
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        waiter = (predicate, future)
        self._waiters.append(waiter)
        try:
            return await self._await(future, timeout, "an event")
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def wait_until(
        self,
        condition: Callable[[], bool],
        timeout: float = 10,
    ) -> None:
        """Return once ``condition()`` holds: checked now and again after every event (request,
        message, interaction ...), so a state reached before the call is not missed."""
        if condition():
            return
        await self.wait_for(lambda _event: condition(), timeout)

    async def wait_for_message(
        self,
        predicate: Callable[[MessageRecord], bool],
        timeout: float = 10,
    ) -> MessageRecord:
        """Return the first live message matching ``predicate``: existing ones first (in order),
        otherwise the next one created or edited into a matching state."""
        for message in sorted(self.messages.values(), key=lambda m: m.id):
            if not message.deleted and predicate(message):
                return message
        event = await self.wait_for(
            lambda e: (
                e.kind in ("message_create", "message_update")
                and e.message is not None
                and not e.message.deleted
                and predicate(e.message)
            ),
            timeout,
        )
        assert event.message is not None
        return event.message

    async def wait_until_ready(
        self,
        timeout: float = 10,
        *,
        min_identifies: int = 1,
        min_resumes: int = 0,
    ) -> None:
        """Wait until a client is connected and has been sent READY and every GUILD_CREATE.

        ``min_identifies`` counts IDENTIFYs over the double's lifetime: pass 2 to wait for a
        second client after the first one went away.
        """
        waiting = asyncio.ensure_future(
            self._gateway.wait_active(
                timeout + 1, min_identifies=min_identifies, min_resumes=min_resumes
            )
        )
        await self._await(waiting, timeout, "a gateway client to be ready")

    async def wait_for_commands(
        self,
        timeout: float = 10,
    ) -> list[dict[str, Any]]:
        """The commands of the latest bulk overwrite (``tree.sync``), waiting for one if none
        happened yet."""
        if self._last_sync is not None:
            return self._last_sync
        event = await self.wait_for(lambda e: e.kind == "commands_synced", timeout)
        return event.data

    # ------------------------------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------------------------------

    @property
    def registered_commands(self) -> dict[str, dict[str, Any]]:
        """name -> command JSON, over global and every guild's commands (guild ones win)."""
        merged: dict[str, dict[str, Any]] = {}
        for scope in sorted(self._commands, key=lambda s: s is not None):
            for command in sorted(self._commands[scope], key=lambda c: c.get("type", 1) == 1):
                merged[command["name"]] = command
        return merged

    def commands_for(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        """Registered commands of one scope (``None`` = global)."""
        return list(self._commands.get(guild_id, []))

    def channel_messages(
        self, channel_id: int, *, include_deleted: bool = False, include_ephemeral: bool = False
    ) -> list[MessageRecord]:
        """Messages in a channel, oldest first. Ephemeral interaction replies are left out unless
        asked for (nobody but the invoking user sees them in the channel)."""
        return [
            m
            for m in sorted(self.messages.values(), key=lambda m: m.id)
            if m.channel_id == channel_id
            and (include_deleted or not m.deleted)
            and (include_ephemeral or not m.ephemeral)
        ]

    def requests_to(self, method: str, path_regex: str) -> list[RequestLog]:
        """Logged API requests whose method and path (``re.fullmatch``) match."""
        pattern = re.compile(path_regex)
        return [
            r
            for r in self.requests
            if r.api and method in ("*", r.method) and pattern.fullmatch(r.path)
        ]

    # ------------------------------------------------------------------------------------------
    # Rate limits and gateway control
    # ------------------------------------------------------------------------------------------

    def rate_limit(
        self,
        method: str,
        path_regex: str,
        *,
        limit: int,
        per: float,
        send_headers: bool = False,
        per_match: bool = False,
        fixed_window: bool = False,
        kind: str | None = None,
        scope: str = "user",
    ) -> None:
        """Simulate a per-route bucket: more than ``limit`` requests within ``per`` seconds to
        ``method`` (or ``"*"``) + a path fully matching ``path_regex`` (relative to the API base,
        e.g. ``r"/channels/\\d+/messages/\\d+"``) answer 429 with ``Via`` and JSON
        ``retry_after``, which discord.py retries transparently. With ``send_headers`` accepted
        requests carry ``X-RateLimit-*`` headers too, so discord.py throttles pre-emptively.

        ``per_match`` counts requests separately per value of the regex's first group, as
        Discord does per top-level resource (``r"/channels/(\\d+)/messages"``: one bucket per
        channel; ``r"/webhooks/(\\d+/[^/]+)(?:/.*)?"``: one per webhook id + token). Every key
        reports the same ``X-RateLimit-Bucket``: Discord's hash names the route's limit, not the
        resource, and clients (discord.py too) key their state by hash + major parameters.

        By default the window slides (a request counts for ``per`` seconds after it arrived),
        which refuses some requests Discord would take. ``fixed_window`` models Discord's
        buckets instead: the first request opens a window of ``per`` seconds and the whole
        ``limit`` is available again once it closes, as ``X-RateLimit-Reset-After`` says.

        ``kind`` names the bucket in :attr:`rate_limited_by_kind` (default: method and regex);
        ``scope`` is the 429's ``X-RateLimit-Scope`` (``user``, ``shared`` or ``global``)."""
        pattern = re.compile(path_regex)
        if per_match and pattern.groups < 1:
            raise ValueError(f"per_match needs a group in {path_regex!r} to key buckets by")
        name = f"bucket{len(self._buckets)}"
        self._buckets.append(
            _RateBucket(
                method.upper(),
                pattern,
                limit,
                per,
                send_headers,
                name,
                kind or f"{method.upper()} {path_regex}",
                per_match=per_match,
                fixed_window=fixed_window,
                scope=scope,
            )
        )

    def clear_rate_limits(self) -> None:
        """Remove every simulated bucket."""
        self._buckets.clear()

    def drop_connections(
        self, method: str, path_regex: str, count: int = 1, *, with_files: bool = False
    ) -> None:
        """A network outage for the next ``count`` requests to ``method`` + a path fully
        matching ``path_regex`` (as for :meth:`rate_limit`), only those uploading files if
        ``with_files``: the connection is closed without an answer and the request has no
        effect, so the client sees an aiohttp connection error rather than an HTTP status."""
        self._drops.append(_Drop(method.upper(), re.compile(path_regex), count, with_files))

    def refuse_requests(
        self,
        method: str,
        path_regex: str,
        error: tuple[int, int, str],
        count: int = 1,
        *,
        with_files: bool = False,
    ) -> None:
        """Answer the next ``count`` matching requests (as for :meth:`drop_connections`) with
        Discord's error body for ``error`` = (status, code, message), e.g. ``(401, 50027,
        "Invalid Webhook Token")``; the request has no effect."""
        status, code, message = error
        self._drops.append(
            _Drop(
                method.upper(),
                re.compile(path_regex),
                count,
                with_files,
                answer=ApiError(status, code, message),
            )
        )

    async def drop_gateway(
        self,
        *,
        invalidate_session: bool = False,
        wait: bool = True,
        timeout: float = 10,
    ) -> None:
        """Disconnect the active gateway client (close code 4000). discord.py reconnects to
        ``resume_gateway_url`` and RESUMEs, receiving the events it missed. With
        ``invalidate_session`` the double sends INVALID_SESSION instead, forcing a fresh
        IDENTIFY. With ``wait`` this returns once the client is back."""
        identifies, resumes = self.identify_count, self.resume_count
        await self._gateway.drop(invalidate_session=invalidate_session)
        if wait:
            if invalidate_session:
                await self.wait_until_ready(timeout, min_identifies=identifies + 1)
            else:
                await self.wait_until_ready(timeout, min_resumes=resumes + 1)

    # ------------------------------------------------------------------------------------------
    # Simulated users
    # ------------------------------------------------------------------------------------------

    async def slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user_id: int,
        guild_id: int,
        channel_id: int,
        subcommand: str | None = None,
        group: str | None = None,
        attachments: dict[str, tuple[str, bytes, str]] | None = None,
        enforce_permissions: bool = True,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """Invoke a registered slash command as ``user_id`` and dispatch it to the bot.

        ``name`` may contain the group/subcommand (``"mod limits set"``). Option values are
        plain Python values; USER/ROLE/CHANNEL/MENTIONABLE take ids; ATTACHMENT options take a
        ``(filename, bytes, content_type)`` tuple (in ``options`` or ``attachments``) which the
        double serves over HTTP. Values are checked like Discord's client does (required
        options, choices, min/max); with ``enforce_permissions`` a member lacking the command's
        ``default_member_permissions`` cannot invoke it (set False to simulate a server admin
        overriding command permissions, to test the bot's own checks).
        """
        parts = name.split()
        if len(parts) == 3:
            name, group, subcommand = parts
        elif len(parts) == 2:
            name, subcommand = parts
        guild = self.world.guild(guild_id)
        command = self._find_command(name, guild_id)
        if enforce_permissions:
            check_can_use(self.world, guild, channel_id, user_id, command)
        given = {**(options or {}), **(attachments or {})}
        resolved: dict[str, Any] = {}
        schema, path = command_leaf(command, group, subcommand)
        leaf_options = build_options(
            self.world, schema, given, guild=guild, channel_id=channel_id, resolved=resolved
        )
        data = self._command_data(command, nest_options(path, leaf_options))
        if resolved:
            data["resolved"] = resolved
        return await self._dispatch_interaction(
            INTERACTION_APPLICATION_COMMAND, data, user_id, guild_id, channel_id, locale=locale
        )

    async def autocomplete(
        self,
        name: str,
        options: dict[str, Any],
        focused: str,
        *,
        user_id: int,
        guild_id: int,
        channel_id: int,
        subcommand: str | None = None,
        group: str | None = None,
    ) -> InteractionRecord:
        """Send an APPLICATION_COMMAND_AUTOCOMPLETE (type 4) while the user types into
        ``focused``; the bot's choices end up in ``record.autocomplete_choices``."""
        guild = self.world.guild(guild_id)
        command = self._find_command(name, guild_id)
        schema, path = command_leaf(command, group, subcommand)
        leaf_options = build_options(
            self.world,
            schema,
            dict(options),
            guild=guild,
            channel_id=channel_id,
            resolved={},
            focused=focused,
        )
        data = self._command_data(command, nest_options(path, leaf_options))
        return await self._dispatch_interaction(
            INTERACTION_AUTOCOMPLETE, data, user_id, guild_id, channel_id
        )

    async def click(
        self,
        message_id: int,
        custom_id: str,
        *,
        user_id: int,
        guild_id: int | None = None,
        channel_id: int | None = None,
        values: list[str] | None = None,
    ) -> InteractionRecord:
        """Click a button (or choose ``values`` in a select) on a message the double knows.

        The component type is taken from the message; disabled components cannot be used."""
        message = self.messages.get(message_id)
        if message is None or message.deleted:
            raise LookupError(f"no live message {message_id}")
        component = next(
            (c for c in message.iter_components() if c.get("custom_id") == custom_id), None
        )
        if component is None:
            ids = [c["custom_id"] for c in message.iter_components() if "custom_id" in c]
            raise LookupError(f"message {message_id} has no component {custom_id!r} (has {ids})")
        if component.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled; Discord would not send it")
        guild_id = guild_id if guild_id is not None else message.guild_id
        channel_id = channel_id if channel_id is not None else message.channel_id
        if guild_id is None:
            raise ValueError("component interactions in DMs are not supported by the double")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] in SELECT_TYPES:
            guild = self.world.guild(guild_id)
            data.update(
                select_data(self.world, component, values or [], guild=guild, channel_id=channel_id)
            )
        elif values:
            raise ValueError("values only apply to select menus")
        return await self._dispatch_interaction(
            INTERACTION_COMPONENT, data, user_id, guild_id, channel_id, message=message
        )

    async def submit_modal(
        self,
        custom_id: str,
        values: dict[str, Any],
        *,
        user_id: int,
        guild_id: int,
        channel_id: int,
        message_id: int | None = None,
    ) -> InteractionRecord:
        """Submit a modal the bot showed (type 9 response) with ``custom_id -> value``.

        The submitted components mirror the modal's layout (action rows or labels); text inputs
        take strings, selects lists. Required inputs must be given and length limits hold. When
        the modal was opened from a component, the submit carries that message (as Discord
        does) unless ``message_id`` says otherwise."""
        opener = next(
            (
                r
                for r in reversed(self.interactions.values())
                if r.modal is not None and r.modal.get("custom_id") == custom_id
            ),
            None,
        )
        if opener is None or opener.modal is None:
            raise LookupError(f"the bot never showed a modal with custom_id {custom_id!r}")
        remaining = dict(values)
        components = mirror_modal(opener.modal.get("components", []), remaining)
        if remaining:
            raise ValueError(f"modal {custom_id!r} has no inputs {sorted(remaining)}")
        data = {"custom_id": custom_id, "components": components}
        target_id = message_id if message_id is not None else opener.message_id
        message = self.messages.get(target_id) if target_id is not None else None
        return await self._dispatch_interaction(
            INTERACTION_MODAL_SUBMIT, data, user_id, guild_id, channel_id, message=message
        )

    async def user_message(
        self,
        channel_id: int,
        user_id: int,
        content: str,
        *,
        attachments: list[tuple[str, bytes, str]] | None = None,
    ) -> MessageRecord:
        """A (non-bot) user posts a message; dispatched as MESSAGE_CREATE. Sessions without the
        MESSAGE_CONTENT intent get empty content unless the bot is mentioned, as on Discord."""
        guild, _channel = self.world.channel(channel_id)
        stored = [
            self.world.store_attachment(channel_id, filename, data, ctype, None)
            for filename, data, ctype in attachments or []
        ]
        message = MessageRecord(
            id=self.world.snowflakes.next(),
            channel_id=channel_id,
            guild_id=guild.id if guild else None,
            author_id=user_id,
            content=content,
            attachments=stored,
        )
        self._apply_mentions(message, guild, user_id)
        self.messages[message.id] = message
        self.emit("message_create", message=message)
        await self._broadcast_message("MESSAGE_CREATE", message)
        return message

    async def delete_message(self, message_id: int) -> None:
        """Delete a message as a moderator would (dispatches MESSAGE_DELETE)."""
        message = self.messages.get(message_id)
        if message is None or message.deleted:
            raise LookupError(f"no live message {message_id}")
        await self._delete(message)

    async def delete_channel(self, channel_id: int) -> None:
        """Delete a guild channel as an admin would: its messages go with it, every later
        request to it answers 404 Unknown Channel (10003), and CHANNEL_DELETE is dispatched."""
        guild, channel = self.world.channel(channel_id)
        if guild is None:
            raise ValueError("only guild channels can be deleted")
        guild.channels.remove(channel)
        now = time.monotonic()
        for message in self.messages.values():
            if message.channel_id == channel_id and not message.deleted:
                message.deleted, message.deleted_at = True, now
        data = self.world.channel_json(guild, channel)
        await self._gateway.broadcast(
            "CHANNEL_DELETE",
            lambda s: data if s.intents & INTENT_GUILDS else None,
            guild_id=guild.id,
        )

    # ------------------------------------------------------------------------------------------
    # Gateway host hooks (called by discord_gateway.Gateway)
    # ------------------------------------------------------------------------------------------

    def ready_payload(self, session: GatewaySession) -> dict[str, Any]:
        """READY for a new session."""
        data: dict[str, Any] = {
            "v": 10,
            "user": self.world.bot_user_json(),
            "guilds": [
                {"id": str(g), "unavailable": True} for g in self.guilds if session.serves(g)
            ],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": [],
            "guild_join_requests": [],
            "user_settings": {},
            "_trace": ["double"],
        }
        if session.shard is not None:
            data["shard"] = session.shard
        return data

    def guild_create_payloads(self, session: GatewaySession) -> list[dict[str, Any]]:
        """GUILD_CREATE payloads following READY: the guilds of the session's shard."""
        return [
            self.world.guild_create_json(g) for g in self.guilds.values() if session.serves(g.id)
        ]

    def member_chunk_payloads(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """GUILD_MEMBERS_CHUNK answers to REQUEST_GUILD_MEMBERS."""
        raw_ids = request.get("guild_id")
        chunks = []
        for raw_id in raw_ids if isinstance(raw_ids, list) else [raw_ids]:
            guild = self.guilds.get(int(raw_id))
            if guild is None:
                continue
            wanted = {int(u) for u in request.get("user_ids") or []}
            query = (request.get("query") or "").lower()
            members = [
                m
                for m in guild.members
                if (not wanted or m.id in wanted) and m.name.lower().startswith(query)
            ]
            members = members[: int(request.get("limit") or 0) or None]
            chunk: dict[str, Any] = {
                "guild_id": str(guild.id),
                "members": [self.world.member_json(guild, m) for m in members],
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [str(u) for u in wanted - {m.id for m in guild.members}],
            }
            if request.get("nonce") is not None:
                chunk["nonce"] = request["nonce"]
            chunks.append(chunk)
        return chunks

    # ------------------------------------------------------------------------------------------
    # HTTP plumbing
    # ------------------------------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        api = API_PREFIX
        r = app.router
        r.add_get("/", self._gateway.handle)
        r.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._get_attachment)
        r.add_get(f"{api}/gateway", self._get_gateway)
        r.add_get(f"{api}/gateway/bot", self._get_gateway_bot)
        r.add_get(f"{api}/users/@me", self._get_me)
        r.add_post(f"{api}/users/@me/channels", self._create_dm)
        r.add_get(f"{api}/users/{{user_id}}", self._get_user)
        r.add_get(f"{api}/oauth2/applications/@me", self._get_application)
        r.add_get(f"{api}/applications/@me", self._get_application)
        for base in (
            f"{api}/applications/{{app_id}}/commands",
            f"{api}/applications/{{app_id}}/guilds/{{guild_id}}/commands",
        ):
            r.add_put(base, self._put_commands)
            r.add_get(base, self._get_commands)
        r.add_post(f"{api}/interactions/{{interaction_id}}/{{token}}/callback", self._callback)
        hook = f"{api}/webhooks/{{app_id}}/{{token}}"
        r.add_post(hook, self._post_followup)
        r.add_get(f"{hook}/messages/{{message_id}}", self._get_webhook_message)
        r.add_patch(f"{hook}/messages/{{message_id}}", self._patch_webhook_message)
        r.add_delete(f"{hook}/messages/{{message_id}}", self._delete_webhook_message)
        channel = f"{api}/channels/{{channel_id}}"
        r.add_get(channel, self._get_channel)
        r.add_post(f"{channel}/typing", self._typing)
        r.add_post(f"{channel}/messages", self._post_message)
        r.add_get(f"{channel}/messages", self._get_history)
        r.add_get(f"{channel}/messages/{{message_id}}", self._get_message)
        r.add_patch(f"{channel}/messages/{{message_id}}", self._patch_message)
        r.add_delete(f"{channel}/messages/{{message_id}}", self._delete_message)
        reaction = f"{channel}/messages/{{message_id}}/reactions/{{emoji}}/@me"
        r.add_put(reaction, self._add_reaction)
        r.add_delete(reaction, self._remove_reaction)
        guild = f"{api}/guilds/{{guild_id}}"
        r.add_get(guild, self._get_guild)
        r.add_get(f"{guild}/channels", self._get_guild_channels)
        r.add_get(f"{guild}/roles", self._get_roles)
        r.add_get(f"{guild}/members", self._get_members)
        r.add_get(f"{guild}/members/{{user_id}}", self._get_member)

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        is_api = request.path.startswith(API_PREFIX)
        path = request.path[len(API_PREFIX) :] if is_api else request.path
        entry = RequestLog(request.method, path, dict(request.query), time.monotonic(), api=is_api)
        request[LOG_KEY] = entry
        self.requests.append(entry)
        response = await self._handle(request, handler, entry)
        entry.status = 0 if isinstance(response, _DroppedResponse) else response.status
        self.emit("request", request=entry)
        return response

    async def _handle(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        entry: RequestLog,
    ) -> web.StreamResponse:
        if request.match_info.http_exception is not None:
            self.unhandled.append(entry)
            log.warning("discord double: unhandled %s %s", request.method, request.path)
            return json_response(
                {"message": f"Unknown route: {request.method} {entry.path}", "code": 10000},
                status=404,
            )
        if (
            entry.api
            and not entry.path.startswith(UNAUTHENTICATED_PREFIXES)
            and request.headers.get("Authorization") != f"Bot {self.token}"
        ):
            return json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        drop = next(
            (
                d
                for d in self._drops
                if d.method in ("*", entry.method)
                and d.pattern.fullmatch(entry.path)
                and (not d.with_files or request.content_type.startswith("multipart/"))
            ),
            None,
        )
        if entry.api and drop is not None:
            drop.remaining -= 1
            if drop.remaining <= 0:
                self._drops.remove(drop)
            if drop.answer is not None:
                await request.read()
                return json_response(drop.answer.body, status=drop.answer.status)
            if request.transport is not None:
                request.transport.abort()
            return _DroppedResponse(status=204)
        limited = self._check_rate_limit(entry) if entry.api else None
        if limited is not None:
            return limited
        try:
            response = await handler(request)
        except ApiError as exc:
            response = json_response(exc.body, status=exc.status)
        for bucket in self._buckets:
            key = bucket.key(entry.method, entry.path) if bucket.send_headers else None
            if key is not None:
                response.headers.update(self._rate_headers(bucket, key))
        return response

    def _check_rate_limit(self, entry: RequestLog) -> web.Response | None:
        now: float | None = None
        for bucket in self._buckets:
            key = bucket.key(entry.method, entry.path)
            if key is None:
                continue
            if now is None:
                now = self.clock()
            window = bucket.window(key, now)
            if bucket.used(window) >= bucket.limit:
                # limit 0: every request is over, and a full `per` away from room
                retry_after = max(round(bucket.reset_after(window, now), 3), 0.001)
                self.rate_limited_count += 1
                self.rate_limited_by_kind[bucket.kind] += 1
                headers = {
                    "Via": "1.1 google",
                    "Retry-After": str(max(1, int(retry_after + 0.999))),
                    "X-RateLimit-Scope": bucket.scope,
                }
                if bucket.send_headers:
                    headers.update(self._rate_headers(bucket, key))
                return json_response(
                    {
                        "message": "You are being rate limited.",
                        "retry_after": retry_after,
                        "global": False,
                    },
                    status=429,
                    headers=headers,
                )
            bucket.record(window, now)
        return None

    def _rate_headers(self, bucket: _RateBucket, key: str) -> dict[str, str]:
        now = self.clock()
        window = bucket.window(key, now, expire=False)
        reset_after = max(bucket.reset_after(window, now), 0.001)
        return {
            "X-RateLimit-Limit": str(bucket.limit),
            "X-RateLimit-Remaining": str(max(bucket.limit - bucket.used(window), 0)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket.name,
        }

    async def _read_body(self, request: web.Request) -> tuple[dict[str, Any], list[_Upload]]:
        """JSON body, or multipart ``payload_json`` + ``files[n]`` parts."""
        uploads: list[_Upload] = []
        payload: dict[str, Any] = {}
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                name = part.name or ""
                if name == "payload_json":
                    payload = json.loads(await part.text())
                    continue
                match = FILE_FIELD_RE.match(name)
                if match is None:
                    continue
                index = int(match.group(1) or match.group(2) or len(uploads))
                filename = part.filename or f"file{index}"
                data = bytes(await part.read())
                declared = part.headers.get("Content-Type", "application/octet-stream")
                guessed = mimetypes.guess_type(filename)[0]
                uploads.append(_Upload(index, filename, data, guessed or declared))
        elif request.can_read_body:
            text = await request.text()
            if text:
                try:
                    payload = json.loads(text)
                except ValueError:
                    raise ApiError(400, 50109, "The request body contains invalid JSON.") from None
        request[LOG_KEY].body = payload
        return payload, uploads

    # ------------------------------------------------------------------------------------------
    # Messages (shared by channel, webhook and interaction routes)
    # ------------------------------------------------------------------------------------------

    def _check_file_sizes(self, uploads: list[_Upload], guild: GuildSpec | None) -> None:
        limit = self.world.filesize_limit(guild)
        if any(len(u.data) > limit for u in uploads):
            raise ApiError(413, 40005, "Request entity too large")

    def _resolve_attachments(
        self,
        payload: dict[str, Any],
        uploads: list[_Upload],
        existing: list[AttachmentRecord],
        channel_id: int,
    ) -> tuple[list[AttachmentRecord], list[AttachmentRecord]]:
        """(final attachments, newly uploaded ones) following Discord's ``attachments`` rules:
        listed existing ids are kept, listed upload indexes are added, unlisted existing ones
        are removed; without an ``attachments`` key uploads are appended."""
        by_index = {u.index: u for u in uploads}
        new: list[AttachmentRecord] = []
        if "attachments" not in payload or payload["attachments"] is None:
            for upload in uploads:
                new.append(
                    self.world.store_attachment(
                        channel_id, upload.filename, upload.data, upload.content_type, None
                    )
                )
            return [*existing, *new], new
        kept = {a.id: a for a in existing}
        final: list[AttachmentRecord] = []
        errors = FormErrors()
        for position, item in enumerate(payload["attachments"]):
            raw_id = int(item.get("id", -1))
            if raw_id in kept:
                final.append(kept[raw_id])
            elif raw_id in by_index:
                upload = by_index[raw_id]
                record = self.world.store_attachment(
                    channel_id,
                    item.get("filename") or upload.filename,
                    upload.data,
                    upload.content_type,
                    item.get("description"),
                )
                final.append(record)
                new.append(record)
            else:
                errors.add(
                    ["attachments", position, "id"],
                    "ATTACHMENT_NOT_FOUND",
                    f"Attachment {raw_id} was not found in the request or message",
                )
        errors.raise_if_any()
        return final, new

    def _apply_mentions(self, message: MessageRecord, guild: GuildSpec | None, author: int) -> None:
        content = message.content or ""
        allowed = message.allowed_mentions
        parse = {"users", "roles", "everyone"} if allowed is None else set(allowed.get("parse", []))
        users_listed = set() if allowed is None else {int(u) for u in allowed.get("users", [])}
        roles_listed = set() if allowed is None else {int(r) for r in allowed.get("roles", [])}
        message.mentions = [
            uid
            for uid in dict.fromkeys(int(x) for x in USER_MENTION_RE.findall(content))
            if self.world.user(uid) is not None and ("users" in parse or uid in users_listed)
        ]
        message.mention_roles = [
            rid
            for rid in dict.fromkeys(int(x) for x in ROLE_MENTION_RE.findall(content))
            if guild is not None
            and guild.role(rid) is not None
            and ("roles" in parse or rid in roles_listed)
        ]
        can_ping_everyone = guild is None or bool(
            self.world.base_permissions(guild, author) & Perm.MENTION_EVERYONE
        )
        message.mention_everyone = (
            "everyone" in parse
            and can_ping_everyone
            and EVERYONE_MENTION_RE.search(content) is not None
        )

    @staticmethod
    def _number_components(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
        result = copy.deepcopy(components)
        used = {c["id"] for c in iter_components(result) if isinstance(c.get("id"), int)}
        counter = 1
        for component in iter_components(result):
            if not isinstance(component.get("id"), int):
                while counter in used:
                    counter += 1
                component["id"] = counter
                used.add(counter)
        return result

    async def _create_message(
        self,
        payload: dict[str, Any],
        uploads: list[_Upload],
        *,
        channel_id: int,
        guild: GuildSpec | None,
        webhook: bool = False,
        interaction: InteractionRecord | None = None,
        message_type: int = MESSAGE_TYPE_DEFAULT,
        extra_flags: int = 0,
    ) -> MessageRecord:
        self._check_file_sizes(uploads, guild)
        content = payload.get("content")
        content = None if content is None else str(content)
        embeds = list(payload.get("embeds") or [])
        if payload.get("embed"):
            embeds.append(payload["embed"])
        embeds = [{"type": "rich", **e} for e in embeds]
        components = self._number_components(payload.get("components") or [])
        flags = (int(payload.get("flags") or 0) & SETTABLE_MESSAGE_FLAGS) | extra_flags
        if not webhook:
            flags &= ~MessageFlag.EPHEMERAL
        attachments, _ = self._resolve_attachments(payload, uploads, [], channel_id)
        if not flags & MessageFlag.LOADING:
            check_message(
                content=content,
                embeds=embeds,
                components=components,
                attachment_count=len(attachments),
                flags=flags,
                has_poll="poll" in payload,
                sticker_count=len(payload.get("sticker_ids") or []),
            )
        message = MessageRecord(
            id=self.world.snowflakes.next(),
            channel_id=channel_id,
            guild_id=guild.id if guild else None,
            author_id=self.bot_user_id,
            content=content,
            embeds=embeds,
            components=components,
            attachments=attachments,
            allowed_mentions=payload.get("allowed_mentions"),
            flags=flags,
            nonce=None if payload.get("nonce") is None else str(payload["nonce"]),
            interaction_id=interaction.id if interaction else None,
            webhook=webhook,
            type=message_type,
            tts=bool(payload.get("tts")),
            message_reference=payload.get("message_reference"),
        )
        self._apply_mentions(message, guild, self.bot_user_id)
        self.messages[message.id] = message
        self.emit("message_create", message=message, interaction=interaction)
        await self._broadcast_message("MESSAGE_CREATE", message)
        return message

    async def _edit_message(
        self,
        message: MessageRecord,
        payload: dict[str, Any],
        uploads: list[_Upload],
        *,
        source: str,
    ) -> MessageRecord:
        guild = self.guilds.get(message.guild_id or 0)
        self._check_file_sizes(uploads, guild)
        content = message.content
        if "content" in payload:
            content = None if payload["content"] is None else str(payload["content"])
        embeds = message.embeds
        if "embeds" in payload:
            embeds = [{"type": "rich", **e} for e in payload["embeds"] or []]
        components = message.components
        if "components" in payload:
            components = self._number_components(payload["components"] or [])
        flags = message.flags & ~MessageFlag.LOADING
        if payload.get("flags") is not None:
            changeable = MessageFlag.SUPPRESS_EMBEDS | MessageFlag.IS_COMPONENTS_V2
            flags = (flags & ~changeable) | (int(payload["flags"]) & changeable)
        attachments, new = self._resolve_attachments(
            payload, uploads, message.attachments, message.channel_id
        )
        check_message(
            content=content,
            embeds=embeds,
            components=components,
            attachment_count=len(attachments),
            flags=flags,
        )
        was_loading = message.loading
        message.content, message.embeds, message.components = content, embeds, components
        message.attachments, message.flags = attachments, flags
        if "allowed_mentions" in payload:
            message.allowed_mentions = payload["allowed_mentions"]
        self._apply_mentions(message, guild, message.author_id)
        now = time.monotonic()
        if not was_loading:
            message.edited_at = now
            message.edited_timestamp = datetime.now(UTC).isoformat()
        message.edits.append(EditRecord(payload, at=now, files=new, source=source))
        self.emit("message_update", message=message, data=payload)
        await self._broadcast_message("MESSAGE_UPDATE", message)
        return message

    async def _delete(self, message: MessageRecord) -> None:
        message.deleted = True
        message.deleted_at = time.monotonic()
        self.emit("message_delete", message=message)
        if message.ephemeral:
            return
        data: dict[str, Any] = {"id": str(message.id), "channel_id": str(message.channel_id)}
        if message.guild_id is not None:
            data["guild_id"] = str(message.guild_id)
        intent = INTENT_GUILD_MESSAGES if message.guild_id else INTENT_DIRECT_MESSAGES
        await self._gateway.broadcast(
            "MESSAGE_DELETE",
            lambda s: data if s.intents & intent else None,
            guild_id=message.guild_id,
        )

    async def _broadcast_message(self, event: str, message: MessageRecord) -> None:
        if message.ephemeral:
            return
        guild = self.guilds.get(message.guild_id or 0)
        base = self.world.message_json(message, with_nonce=event == "MESSAGE_CREATE")
        if guild is not None:
            member = guild.member(message.author_id)
            if member is not None:
                member_data = self.world.member_json(guild, member)
                member_data.pop("user")
                base["member"] = member_data
        intent = INTENT_GUILD_MESSAGES if guild is not None else INTENT_DIRECT_MESSAGES
        mentions_bot = self.bot_user_id in message.mentions

        def build(session: GatewaySession) -> dict[str, Any] | None:
            if not session.intents & intent:
                return None
            if (
                message.author_id != self.bot_user_id
                and guild is not None
                and not session.intents & INTENT_MESSAGE_CONTENT
                and not mentions_bot
            ):
                return {**base, "content": "", "embeds": [], "attachments": [], "components": []}
            return base

        await self._gateway.broadcast(event, build, guild_id=message.guild_id)

    # ------------------------------------------------------------------------------------------
    # Basic REST routes
    # ------------------------------------------------------------------------------------------

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "url": self.gateway_url,
                "shards": self.shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000,
                    "reset_after": 0,
                    "max_concurrency": self.max_concurrency,
                },
            }
        )

    async def _get_me(self, request: web.Request) -> web.Response:
        return json_response(self.world.bot_user_json())

    async def _get_user(self, request: web.Request) -> web.Response:
        user_id = int(request.match_info["user_id"])
        if self.world.user(user_id) is None:
            raise unknown("User", 10013)
        return json_response(self.world.user_json(user_id))

    async def _get_application(self, request: web.Request) -> web.Response:
        owner_id = next(iter(self.guilds.values())).owner_id if self.guilds else 1
        return json_response(
            {
                "id": str(self.application_id),
                "name": self.bot_name,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "hook": True,
                "bot_public": True,
                "bot_require_code_grant": False,
                "bot": self.world.user_json(self.bot_user_id),
                "owner": self.world.user_json(owner_id),
                "team": None,
                "verify_key": self.verify_key,
                "flags": 0,
                "rpc_origins": [],
                "redirect_uris": [],
                "tags": [],
                "approximate_guild_count": len(self.guilds),
                "integration_types_config": {"0": {}},
                "interactions_endpoint_url": None,
            }
        )

    async def _create_dm(self, request: web.Request) -> web.Response:
        payload, _ = await self._read_body(request)
        recipient = int(payload.get("recipient_id", 0))
        if self.world.user(recipient) is None:
            raise unknown("User", 10013)
        channel_id = self.world.dm_channel_for(recipient)
        return json_response(self.world.channel_json(None, ChannelSpec(channel_id, "", type=1)))

    async def _get_attachment(self, request: web.Request) -> web.Response:
        attachment = self.attachments.get(int(request.match_info["attachment_id"]))
        if attachment is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(
            body=attachment.data,
            content_type=attachment.content_type or "application/octet-stream",
        )

    # -- commands -------------------------------------------------------------------------------

    def _commands_scope(self, request: web.Request) -> int | None:
        if int(request.match_info["app_id"]) != self.application_id:
            raise ApiError(403, 50001, "Missing Access")
        guild_id = request.match_info.get("guild_id")
        if guild_id is None:
            return None
        if int(guild_id) not in self.guilds:
            raise ApiError(403, 50001, "Missing Access")
        return int(guild_id)

    async def _put_commands(self, request: web.Request) -> web.Response:
        scope = self._commands_scope(request)
        payload = json.loads(await request.text() or "[]")
        request[LOG_KEY].body = payload
        if not isinstance(payload, list):
            raise ApiError(400, 50035, "Invalid Form Body")
        check_commands(payload, is_global=scope is None)
        previous = {(c["name"], c.get("type", 1)): c for c in self._commands.get(scope, [])}
        stored = []
        for command in payload:
            kind = int(command.get("type", 1))
            old = previous.get((command["name"], kind))
            permissions = command.get("default_member_permissions")
            entry = {
                "description": "",
                "options": [],
                "nsfw": False,
                "contexts": None,
                "integration_types": [0],
                "name_localizations": None,
                "description_localizations": None,
                "dm_permission": True,
                **command,
                "id": old["id"] if old else str(self.world.snowflakes.next()),
                "application_id": str(self.application_id),
                "type": kind,
                "version": str(self.world.snowflakes.next()),
                "default_member_permissions": None if permissions is None else str(permissions),
            }
            if scope is not None:
                entry["guild_id"] = str(scope)
            stored.append(entry)
        self._commands[scope] = stored
        self._last_sync = stored
        self.emit("commands_synced", data=stored)
        return json_response(stored)

    async def _get_commands(self, request: web.Request) -> web.Response:
        return json_response(self._commands.get(self._commands_scope(request), []))

    @staticmethod
    def _command_data(command: dict[str, Any], options: list[dict[str, Any]]) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command["name"],
            "type": command.get("type", 1),
            "options": options,
        }
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return data

    def _find_command(self, name: str, guild_id: int) -> dict[str, Any]:
        for scope in (guild_id, None):
            for command in self._commands.get(scope, []):
                if command["name"] == name and command.get("type", 1) == 1:
                    return command
        raise LookupError(
            f"no slash command {name!r} registered for guild {guild_id} or globally "
            f"(registered: {sorted(self.registered_commands)}); did the bot run tree.sync()?"
        )

    # -- guilds and channels ---------------------------------------------------------------------

    def _requested_guild(self, request: web.Request) -> GuildSpec:
        guild = self.guilds.get(int(request.match_info["guild_id"]))
        if guild is None:
            raise unknown("Guild", 10004)
        return guild

    async def _get_guild(self, request: web.Request) -> web.Response:
        return json_response(self.world.guild_json(self._requested_guild(request)))

    async def _get_guild_channels(self, request: web.Request) -> web.Response:
        guild = self._requested_guild(request)
        return json_response([self.world.channel_json(guild, c) for c in guild.channels])

    async def _get_roles(self, request: web.Request) -> web.Response:
        guild = self._requested_guild(request)
        return json_response([self.world.role_json(r) for r in guild.roles])

    async def _get_members(self, request: web.Request) -> web.Response:
        guild = self._requested_guild(request)
        limit = int(request.query.get("limit", 1))
        after = int(request.query.get("after", 0))
        members = sorted((m for m in guild.members if m.id > after), key=lambda m: m.id)
        return json_response([self.world.member_json(guild, m) for m in members[:limit]])

    async def _get_member(self, request: web.Request) -> web.Response:
        guild = self._requested_guild(request)
        member = guild.member(int(request.match_info["user_id"]))
        if member is None:
            raise unknown("Member", 10007)
        return json_response(self.world.member_json(guild, member))

    async def _get_channel(self, request: web.Request) -> web.Response:
        guild, channel = self.world.channel(int(request.match_info["channel_id"]))
        if guild is not None and not self.world.bot_permissions(guild, channel):
            raise ApiError(403, 50001, "Missing Access")
        return json_response(self.world.channel_json(guild, channel))

    async def _typing(self, request: web.Request) -> web.Response:
        self.world.channel(int(request.match_info["channel_id"]))
        self.typing_count += 1
        return web.Response(status=204)

    # -- channel messages -----------------------------------------------------------------------

    def _channel_message(self, request: web.Request) -> MessageRecord:
        channel_id = int(request.match_info["channel_id"])
        self.world.channel(channel_id)
        message = self.messages.get(int(request.match_info["message_id"]))
        if (
            message is None
            or message.deleted
            or message.ephemeral
            or message.channel_id != channel_id
        ):
            raise unknown("Message", 10008)
        return message

    async def _post_message(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel_id"])
        guild, channel = self.world.channel(channel_id)
        payload, uploads = await self._read_body(request)
        permissions = self.world.bot_permissions(guild, channel)
        if not permissions & Perm.VIEW_CHANNEL:
            raise ApiError(403, 50001, "Missing Access")
        if not permissions & Perm.SEND_MESSAGES or (
            uploads and not permissions & Perm.ATTACH_FILES
        ):
            raise ApiError(403, 50013, "Missing Permissions")
        if guild is None and self.world.dm_channels.get(channel_id) in self.dms_closed:
            raise ApiError(403, 50007, "Cannot send messages to this user")
        nonce = payload.get("nonce")
        if isinstance(nonce, str) and len(nonce) > MAX_NONCE_LENGTH:
            errors = FormErrors()
            errors.max_length(["nonce"], MAX_NONCE_LENGTH)
            errors.raise_if_any()
        key = (channel_id, self.bot_user_id, str(nonce))
        enforced = nonce is not None and payload.get("enforce_nonce")
        seen = self._nonces.get(key)
        if enforced and seen is not None and not self._nonce_expired(seen[1]):
            existing = self.messages[seen[0]]
            return json_response(self.world.message_json(existing, with_nonce=True))
        message = await self._create_message(payload, uploads, channel_id=channel_id, guild=guild)
        if enforced:
            self._nonces[key] = (message.id, time.monotonic())
        return json_response(self.world.message_json(message, with_nonce=True))

    def _nonce_expired(self, sent_at: float) -> bool:
        ttl = self.nonce_ttl
        return ttl is not None and time.monotonic() - sent_at >= ttl

    async def _get_message(self, request: web.Request) -> web.Response:
        return json_response(self.world.message_json(self._channel_message(request)))

    async def _patch_message(self, request: web.Request) -> web.Response:
        message = self._channel_message(request)
        payload, uploads = await self._read_body(request)
        if message.author_id != self.bot_user_id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        await self._edit_message(message, payload, uploads, source="channel")
        return json_response(self.world.message_json(message))

    async def _delete_message(self, request: web.Request) -> web.Response:
        message = self._channel_message(request)
        guild, channel = self.world.channel(message.channel_id)
        if message.author_id != self.bot_user_id and not (
            self.world.bot_permissions(guild, channel) & Perm.MANAGE_MESSAGES
        ):
            raise ApiError(403, 50013, "Missing Permissions")
        await self._delete(message)
        return web.Response(status=204)

    async def _get_history(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel_id"])
        guild, channel = self.world.channel(channel_id)
        permissions = self.world.bot_permissions(guild, channel)
        if not permissions & Perm.VIEW_CHANNEL:
            raise ApiError(403, 50001, "Missing Access")
        if not permissions & Perm.READ_MESSAGE_HISTORY:
            return json_response([])
        limit = int(request.query.get("limit", 50))
        if not 1 <= limit <= 100:
            errors = FormErrors()
            errors.add(["limit"], "NUMBER_TYPE_MAX", "int value should be between 1 and 100.")
            errors.raise_if_any()
        visible = self.channel_messages(channel_id)
        if "before" in request.query:
            before = int(request.query["before"])
            page = [m for m in visible if m.id < before][-limit:]
        elif "after" in request.query:
            after = int(request.query["after"])
            page = [m for m in visible if m.id > after][:limit]
        elif "around" in request.query:
            around = int(request.query["around"])
            older = [m for m in visible if m.id < around][-(limit // 2) :] if limit > 1 else []
            newer = [m for m in visible if m.id >= around][: limit - len(older)]
            page = older + newer
        else:
            page = visible[-limit:]
        return json_response([self.world.message_json(m) for m in reversed(page)])

    async def _add_reaction(self, request: web.Request) -> web.Response:
        message = self._channel_message(request)
        emoji = urllib.parse.unquote(request.match_info["emoji"])
        if emoji not in message.reactions:
            message.reactions.append(emoji)
        return web.Response(status=204)

    async def _remove_reaction(self, request: web.Request) -> web.Response:
        message = self._channel_message(request)
        emoji = urllib.parse.unquote(request.match_info["emoji"])
        if emoji in message.reactions:
            message.reactions.remove(emoji)
        return web.Response(status=204)

    # ------------------------------------------------------------------------------------------
    # Interactions
    # ------------------------------------------------------------------------------------------

    async def _dispatch_interaction(
        self,
        kind: int,
        data: dict[str, Any],
        user_id: int,
        guild_id: int,
        channel_id: int,
        *,
        message: MessageRecord | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        guild = self.world.guild(guild_id)
        payload = self.world.interaction_payload(
            kind, data, user_id=user_id, guild=guild, channel_id=channel_id, locale=locale
        )
        if message is not None:
            payload["message"] = self.world.message_json(message)
        # Delivered on the session of the guild's shard, as Discord does.
        waiting = asyncio.ensure_future(self._gateway.wait_active(5, guild_id=guild_id))
        session: GatewaySession = await self._await(waiting, 5, "a connected gateway client")
        loop = asyncio.get_running_loop()
        record = InteractionRecord(
            id=int(payload["id"]),
            token=payload["token"],
            type=kind,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            payload=payload,
            message_id=message.id if message is not None else None,
            _first_response=loop.create_future(),
            _waiter=lambda fut, timeout, what: self._await(fut, timeout, what, cancel=False),
        )
        self.interactions[record.id] = record
        record.received_at = time.monotonic()
        await session.dispatch("INTERACTION_CREATE", payload)
        self.emit("interaction_create", interaction=record)
        return record

    def _interaction_by_token(self, app_id: str, token: str) -> InteractionRecord:
        record = next((r for r in self.interactions.values() if r.token == token), None)
        if int(app_id) != self.application_id or record is None:
            raise unknown("Webhook", 10015)
        if time.monotonic() - record.received_at > self.interaction_token_ttl:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        return record

    async def _callback(self, request: web.Request) -> web.Response:
        payload, uploads = await self._read_body(request)
        record = self.interactions.get(int(request.match_info["interaction_id"]))
        if record is None or record.token != request.match_info["token"]:
            raise ApiError(404, 10062, "Unknown interaction")
        late = (
            self.interaction_ack_timeout is not None
            and time.monotonic() - record.received_at > self.interaction_ack_timeout
        )
        reason = None
        if record.responses:
            reason = ApiError(400, 40060, "Interaction has already been acknowledged.")
        elif late:
            reason = ApiError(404, 10062, "Unknown interaction")
        callback_type = int(payload.get("type", 0))
        if reason is None and callback_type not in ALLOWED_CALLBACKS[record.type]:
            errors = FormErrors()
            errors.add(["type"], "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid response type")
            reason = ApiError(400, 50035, "Invalid Form Body", errors.errors)
        if reason is not None:
            record.rejected_callbacks.append({**payload, "_error": reason.body})
            raise reason
        # Acknowledge before awaiting anything, so a concurrent second callback is refused.
        record.responses.append(payload)
        record.responded_at = time.monotonic()
        try:
            resource = await self._apply_callback(record, callback_type, payload, uploads)
        except ApiError as exc:
            record.responses.remove(payload)
            record.responded_at = None
            record.rejected_callbacks.append({**payload, "_error": exc.body})
            raise
        assert record._first_response is not None
        if not record._first_response.done():
            record._first_response.set_result(payload)
        self.emit("interaction_response", interaction=record, data=payload)
        if "with_response" not in request.query:
            return web.Response(status=204)
        original = record.original
        body: dict[str, Any] = {
            "interaction": {
                "id": str(record.id),
                "type": record.type,
                "response_message_loading": callback_type == CALLBACK_DEFERRED_MESSAGE,
                "response_message_ephemeral": bool(original and original.ephemeral),
            }
        }
        if resource is not None:
            body["interaction"]["response_message_id"] = str(resource.id)
            body["resource"] = {"type": callback_type, "message": self.world.message_json(resource)}
        return json_response(body)

    async def _apply_callback(
        self,
        record: InteractionRecord,
        callback_type: int,
        payload: dict[str, Any],
        uploads: list[_Upload],
    ) -> MessageRecord | None:
        """Carry out a callback; return the message resource it produced, if any."""
        data = payload.get("data") or {}
        guild = self.guilds.get(record.guild_id or 0)
        component_message = self.messages.get(record.message_id or 0)
        message_type = (
            MESSAGE_TYPE_CHAT_INPUT_COMMAND
            if record.type == INTERACTION_APPLICATION_COMMAND
            else MESSAGE_TYPE_DEFAULT
        )
        if callback_type == CALLBACK_MESSAGE:
            record.original = await self._create_message(
                data,
                uploads,
                channel_id=record.channel_id,
                guild=guild,
                webhook=True,
                interaction=record,
                message_type=message_type,
            )
            return record.original
        if callback_type == CALLBACK_DEFERRED_MESSAGE:
            ephemeral = int(data.get("flags") or 0) & MessageFlag.EPHEMERAL
            record.original = await self._create_message(
                {},
                [],
                channel_id=record.channel_id,
                guild=guild,
                webhook=True,
                interaction=record,
                message_type=message_type,
                extra_flags=MessageFlag.LOADING | ephemeral,
            )
            return record.original
        if callback_type in (CALLBACK_DEFERRED_UPDATE, CALLBACK_UPDATE_MESSAGE):
            if component_message is None or component_message.deleted:
                raise unknown("Message", 10008)
            record.original = component_message
            if callback_type == CALLBACK_UPDATE_MESSAGE:
                await self._edit_message(component_message, data, uploads, source="component")
                return component_message
            return None
        if callback_type == CALLBACK_MODAL:
            check_modal(data)
            record.modal = data
            return None
        check_autocomplete(data)
        record.autocomplete_choices = list(data.get("choices") or [])
        return None

    # -- webhook (follow-up) routes ----------------------------------------------------------------

    def _webhook_message(self, request: web.Request) -> tuple[InteractionRecord, MessageRecord]:
        record = self._interaction_by_token(
            request.match_info["app_id"], request.match_info["token"]
        )
        raw_id = request.match_info["message_id"]
        if raw_id == "@original":
            message = record.original
        else:
            message = next(
                (
                    m
                    for m in [record.original, *record.followups]
                    if m is not None and m.id == int(raw_id)
                ),
                None,
            )
        if message is None or message.deleted:
            raise unknown("Message", 10008)
        return record, message

    async def _post_followup(self, request: web.Request) -> web.Response:
        record = self._interaction_by_token(
            request.match_info["app_id"], request.match_info["token"]
        )
        payload, uploads = await self._read_body(request)
        if not record.responses:
            raise unknown("Webhook", 10015)
        original = record.original
        if (
            original is not None
            and original.loading
            and not original.deleted
            and original.interaction_id == record.id
            and not record.followups
        ):
            # Discord fills the deferred "thinking" message with the first follow-up (once it
            # was deleted, a follow-up is a message of its own, ephemeral if flagged so).
            message = await self._edit_message(original, payload, uploads, source="webhook")
        else:
            message = await self._create_message(
                payload,
                uploads,
                channel_id=record.channel_id,
                guild=self.guilds.get(record.guild_id or 0),
                webhook=True,
                interaction=record,
                message_type=(
                    MESSAGE_TYPE_CHAT_INPUT_COMMAND
                    if record.type == INTERACTION_APPLICATION_COMMAND
                    else MESSAGE_TYPE_DEFAULT
                ),
            )
        record.followups.append(message)
        if request.query.get("wait", "").lower() in ("1", "true"):
            return json_response(self.world.message_json(message))
        return web.Response(status=204)

    async def _get_webhook_message(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        return json_response(self.world.message_json(message))

    async def _patch_webhook_message(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        payload, uploads = await self._read_body(request)
        await self._edit_message(message, payload, uploads, source="webhook")
        return json_response(self.world.message_json(message))

    async def _delete_webhook_message(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        await self._delete(message)
        return web.Response(status=204)


@asynccontextmanager
async def run_bot_against(
    double: DiscordDouble,
    bot: Any,
    token: str | None = None,
    *,
    ready_timeout: float = 10,
) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``bot`` (a ``discord.Client``/``commands.Bot``) against ``double`` for a block.

    Points ``discord.http.Route.BASE`` and ``DiscordWebSocket.DEFAULT_GATEWAY`` at the double
    (restored afterwards), starts ``bot.start()`` as a task, waits until the bot's ``on_ready``
    and yields the task. While the block runs, the double's waits raise :class:`BotCrashed` if
    the task dies; on exit the bot is closed and a crash is re-raised. Build the bot with
    ``guild_ready_timeout=0.1`` or on_ready waits 2 s for more guilds.
    """
    import discord.gateway
    import discord.http
    import yarl

    saved_base = discord.http.Route.BASE
    saved_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = double.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(double.gateway_url)
    identifies = double.identify_count
    task = asyncio.create_task(bot.start(token or double.token), name="bot.start")
    double.watch(task)
    body_error: BaseException | None = None
    try:
        # IDENTIFY comes after login(), so wait_until_ready() is usable once it happened.
        await double.wait_until_ready(ready_timeout, min_identifies=identifies + 1)
        ready = asyncio.ensure_future(bot.wait_until_ready())
        await double._await(ready, ready_timeout, "the bot's on_ready")
        yield task
    except BaseException as exc:
        body_error = exc
        raise
    finally:
        double.unwatch(task)
        crash: BaseException | None = None
        try:
            if not bot.is_closed():
                await bot.close()
            await asyncio.wait_for(task, 10)
        except asyncio.CancelledError:
            if body_error is None:
                raise
        except BaseException as exc:
            crash = exc
        finally:
            discord.http.Route.BASE = saved_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved_gateway
        if crash is not None:
            if body_error is not None:
                body_error.add_note(f"the bot task also failed: {crash!r}")
            else:
                raise BotCrashed("the bot task failed") from crash
