"""The operator's reverse proxy in front of the bot's webhook receiver, on loopback.

It listens on a port known before the bot starts (so ``PIXELDOJO_WEBHOOK_URL`` can name it) and
forwards each request to wherever the bot's receiver bound (``WEBHOOK_PORT=0``: any free port,
no port picked in advance that another process could take meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

import aiohttp
from aiohttp import web


class ReverseProxy:
    """Forwards every request to ``http://127.0.0.1:{target_port()}`` and relays the answer."""

    def __init__(self) -> None:
        self.target_port: Callable[[], int | None] = lambda: None
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _forward(self, request: web.Request) -> web.Response:
        port = self.target_port()
        if port is None or self._session is None:
            return web.Response(status=502, text="no upstream")
        try:
            async with self._session.request(
                request.method,
                f"http://127.0.0.1:{port}{request.path_qs}",
                data=await request.read(),
                headers={"Content-Type": request.headers.get("Content-Type", "")},
            ) as upstream:
                return web.Response(status=upstream.status, body=await upstream.read())
        except aiohttp.ClientError:
            return web.Response(status=502, text="upstream unreachable")
