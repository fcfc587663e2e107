"""The websocket gateway half of the Discord test double.

Speaks enough of the v10 gateway protocol for discord.py: HELLO, heartbeats, IDENTIFY -> READY +
GUILD_CREATE, RESUME -> replay + RESUMED, REQUEST_GUILD_MEMBERS -> GUILD_MEMBERS_CHUNK, and
DISPATCH of whatever the double broadcasts. Frames are plain text JSON (discord.py asks for
zlib-stream but only inflates binary frames).

Sharding as Discord does it: an IDENTIFY with ``shard: [id, count]`` opens a session for the
guilds where ``(guild_id >> 22) % count == id``; events about a guild go only to the sessions
of its shard, and DMs to shard 0. A session identified without ``shard`` receives everything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from .discord_models import EventKind

log = logging.getLogger(__name__)

OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

CLOSE_UNKNOWN_ERROR = 4000
CLOSE_DECODE_ERROR = 4002
CLOSE_NOT_AUTHENTICATED = 4003
CLOSE_AUTHENTICATION_FAILED = 4004
CLOSE_ALREADY_AUTHENTICATED = 4005
CLOSE_INVALID_SHARD = 4010
# A client closing with one of these ends its session (it cannot be resumed).
SESSION_ENDING_CLOSE_CODES = {1000, 1001}


class GatewayHost(Protocol):
    """What the gateway needs from the double."""

    token: str

    def ready_payload(self, session: GatewaySession) -> dict[str, Any]: ...

    def guild_create_payloads(self, session: GatewaySession) -> list[dict[str, Any]]: ...

    def member_chunk_payloads(self, request: dict[str, Any]) -> list[dict[str, Any]]: ...

    def emit(self, kind: EventKind, *, data: Any = None) -> None: ...


class GatewayConnection:
    """One websocket connection from a client."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.session: GatewaySession | None = None
        self.opened_at = time.monotonic()
        self.heartbeats = 0
        self.closed_by_server = False

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send(self, payload: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        try:
            await self.ws.send_str(json.dumps(payload, separators=(",", ":")))
        except ConnectionError:
            log.debug("gateway send failed; the connection is gone")


class GatewaySession:
    """A gateway session: survives reconnects via RESUME, keeps the events it dispatched."""

    def __init__(self, intents: int, shard: list[int] | None) -> None:
        self.session_id = secrets.token_hex(16)
        self.intents = intents
        self.shard = shard
        self.seq = 0
        self.log: deque[dict[str, Any]] = deque(maxlen=2000)
        self.connection: GatewayConnection | None = None
        self.invalid = False
        self.attached_at = 0.0
        self.lock = asyncio.Lock()

    @property
    def live(self) -> bool:
        """Attached to an open connection."""
        return self.connection is not None and not self.connection.closed and not self.invalid

    def serves(self, guild_id: int | None) -> bool:
        """Whether events about ``guild_id`` (None: a DM) belong to this session's shard."""
        if self.shard is None:
            return True
        shard_id, count = self.shard
        if guild_id is None:
            return shard_id == 0
        return (guild_id >> 22) % count == shard_id

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Number, remember and (if connected) send a DISPATCH."""
        async with self.lock:
            await self._dispatch_locked(event, data)

    async def _dispatch_locked(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        payload = {"op": OP_DISPATCH, "t": event, "s": self.seq, "d": data}
        self.log.append(payload)
        if self.connection is not None:
            await self.connection.send(payload)


class Gateway:
    """Accepts websocket clients and routes dispatches to their sessions."""

    def __init__(self, host: GatewayHost, *, heartbeat_interval_ms: int = 41250) -> None:
        self.host = host
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.sessions: list[GatewaySession] = []
        self.connections: list[GatewayConnection] = []
        self.identify_count = 0
        self.resume_count = 0
        self.changed = asyncio.Condition()

    # -- queries -------------------------------------------------------------------------------

    def active_session(self, guild_id: int | None = None) -> GatewaySession | None:
        """The most recently identified or resumed live session, of the shard ``guild_id``'s
        events go to when given (None: any shard)."""
        live = [s for s in self.sessions if s.live and (guild_id is None or s.serves(guild_id))]
        return max(live, key=lambda s: s.attached_at) if live else None

    async def wait_active(
        self,
        within: float,
        *,
        min_identifies: int = 0,
        min_resumes: int = 0,
        guild_id: int | None = None,
    ) -> GatewaySession:
        """Wait until there is a live session (of ``guild_id``'s shard when given) and enough
        IDENTIFYs/RESUMEs happened."""

        def ready() -> bool:
            return (
                self.active_session(guild_id) is not None
                and self.identify_count >= min_identifies
                and self.resume_count >= min_resumes
            )

        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(ready), within)
        session = self.active_session(guild_id)
        assert session is not None
        return session

    # -- dispatching ---------------------------------------------------------------------------

    async def broadcast(
        self,
        event: str,
        build: Callable[[GatewaySession], dict[str, Any] | None],
        *,
        guild_id: int | None,
    ) -> None:
        """Dispatch ``event`` about ``guild_id`` (None: a DM) to every resumable session of
        that guild's shard; ``build`` may return None to skip one (e.g. when the session lacks
        the needed intent)."""
        for session in list(self.sessions):
            if session.invalid or not session.serves(guild_id):
                continue
            data = build(session)
            if data is not None:
                await session.dispatch(event, data)

    async def drop(self, *, invalidate_session: bool = False) -> None:
        """Disconnect the active client so it reconnects (RESUME unless invalidated)."""
        session = self.active_session()
        if session is None or session.connection is None:
            raise RuntimeError("no live gateway connection to drop")
        connection = session.connection
        if invalidate_session:
            session.invalid = True
            await connection.send({"op": OP_INVALID_SESSION, "d": False})
        else:
            connection.closed_by_server = True
            await connection.ws.close(code=CLOSE_UNKNOWN_ERROR, message=b"dropped by test double")
        await self._notify()

    async def close_all(self) -> None:
        """Close every connection (used when the double stops)."""
        for connection in list(self.connections):
            if not connection.closed:
                await connection.ws.close(code=1001, message=b"test double stopping")

    # -- protocol ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """aiohttp handler for ``GET /`` websocket upgrades."""
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        connection = GatewayConnection(ws)
        self.connections.append(connection)
        await connection.send(
            {
                "op": OP_HELLO,
                "d": {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["double"]},
            }
        )
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    try:
                        payload = json.loads(message.data)
                    except ValueError:
                        await ws.close(code=CLOSE_DECODE_ERROR, message=b"Error while decoding")
                        break
                    await self._on_payload(connection, payload)
                elif message.type is WSMsgType.BINARY:
                    await ws.close(code=CLOSE_DECODE_ERROR, message=b"binary frames unsupported")
                    break
        finally:
            await self._on_closed(connection)
        return ws

    async def _on_payload(self, connection: GatewayConnection, payload: dict[str, Any]) -> None:
        op = payload.get("op")
        data = payload.get("d")
        if op == OP_HEARTBEAT:
            connection.heartbeats += 1
            await connection.send({"op": OP_HEARTBEAT_ACK})
        elif op == OP_IDENTIFY:
            await self._identify(connection, data or {})
        elif op == OP_RESUME:
            await self._resume(connection, data or {})
        elif op == OP_REQUEST_MEMBERS:
            if connection.session is None:
                await connection.ws.close(
                    code=CLOSE_NOT_AUTHENTICATED, message=b"Not authenticated"
                )
                return
            session = connection.session
            for chunk in self.host.member_chunk_payloads(data or {}):
                if session.serves(int(chunk["guild_id"])):
                    await session.dispatch("GUILD_MEMBERS_CHUNK", chunk)
        # PRESENCE_UPDATE (3), VOICE_STATE_UPDATE (4) and others are accepted and ignored.

    async def _identify(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        if connection.session is not None:
            await connection.ws.close(
                code=CLOSE_ALREADY_AUTHENTICATED, message=b"Already authenticated"
            )
            return
        if data.get("token") != self.host.token:
            await connection.ws.close(
                code=CLOSE_AUTHENTICATION_FAILED, message=b"Authentication failed"
            )
            return
        shard = data.get("shard")
        if shard is not None and not _valid_shard(shard):
            await connection.ws.close(code=CLOSE_INVALID_SHARD, message=b"Invalid shard")
            return
        session = GatewaySession(int(data.get("intents") or 0), shard)
        self.sessions.append(session)
        async with session.lock:
            session.connection = connection
            connection.session = session
            await session._dispatch_locked("READY", self.host.ready_payload(session))
            for guild in self.host.guild_create_payloads(session):
                await session._dispatch_locked("GUILD_CREATE", guild)
            session.attached_at = time.monotonic()
        self.identify_count += 1
        self.host.emit("gateway_ready", data={"session_id": session.session_id})
        await self._notify()

    async def _resume(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        session = next((s for s in self.sessions if s.session_id == data.get("session_id")), None)
        if session is None or session.invalid or data.get("token") != self.host.token:
            await connection.send({"op": OP_INVALID_SESSION, "d": False})
            return
        async with session.lock:
            previous = session.connection
            if previous is not None and previous is not connection and not previous.closed:
                previous.closed_by_server = True
                await previous.ws.close(code=CLOSE_UNKNOWN_ERROR, message=b"session resumed")
            session.connection = connection
            connection.session = session
            last_seen = int(data.get("seq") or 0)
            for payload in list(session.log):
                if payload["s"] > last_seen:
                    await connection.send(payload)
            await session._dispatch_locked("RESUMED", {"_trace": ["double"]})
            session.attached_at = time.monotonic()
        self.resume_count += 1
        self.host.emit("gateway_resumed", data={"session_id": session.session_id})
        await self._notify()

    async def _on_closed(self, connection: GatewayConnection) -> None:
        session = connection.session
        code = connection.ws.close_code
        if session is not None and session.connection is connection:
            session.connection = None
            if code in SESSION_ENDING_CLOSE_CODES and not connection.closed_by_server:
                session.invalid = True
        self.host.emit("gateway_closed", data={"code": code})
        await self._notify()

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()


def _valid_shard(shard: Any) -> bool:
    """``[shard_id, shard_count]`` with ``0 <= shard_id < shard_count``, as Discord requires."""
    return (
        isinstance(shard, list)
        and len(shard) == 2
        and all(type(n) is int for n in shard)
        and 0 <= shard[0] < shard[1]
    )
