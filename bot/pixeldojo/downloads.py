"""Safe result image downloads: public addresses only, byte budgets, every image verified.

Every redirect hop's address is checked, each image and each job has a byte budget, and every
image must decode (``bot.images.verify_image``) before anyone sees it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence

import httpx

from bot import images
from bot.pixeldojo.errors import ImageTooLarge, MalformedResponse, NotAnImage, UnsafeLink
from bot.pixeldojo.transport import BodyRefused, Transport, origin, read_body

log = logging.getLogger(__name__)

DEFAULT_MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
# What one job's images may hold in memory together, and how many download at once.
DEFAULT_MAX_JOB_DOWNLOAD_BYTES = 100 * 1024 * 1024
DEFAULT_DOWNLOAD_CONCURRENCY = 4
# Images checked (decoded) at once across all jobs: each may take ~160 MB while it decodes.
_DECODE_CONCURRENCY = 2
DEFAULT_DOWNLOAD_DEADLINE = 60.0
# Redirects followed per download; each hop's address is checked.
MAX_REDIRECTS = 5

# (host, port) -> the IP addresses it resolves to.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


class DownloadBudget:
    """Bytes a job's downloads may hold together; :meth:`take` raises past the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        """Count ``size`` more bytes, or raise :class:`ImageTooLarge` if they do not fit."""
        if self.used + size > self.limit:
            raise ImageTooLarge(
                "The generated images together are larger than the bot will download "
                f"({self.limit / (1024 * 1024):.1f} MiB)."
            )
        self.used += size

    def give_back(self, size: int) -> None:
        """Return bytes of an attempt that failed (and will be retried or dropped)."""
        self.used = max(0, self.used - size)


# Fetches one image within a job's budget (the client's own ``download``).
Download = Callable[[str, DownloadBudget], Awaitable[tuple[bytes, str | None]]]


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for a globally routable unicast address: not loopback, private, link-local,
    shared, reserved or multicast, also when an IPv4 address hides inside an IPv6 one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
        if embedded is not None and not is_public_address(embedded):
            return False
        if address.is_site_local or address.scope_id:
            return False
    return address.is_global and not (address.is_multicast or address.is_reserved)


async def resolve(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for ``host`` (the default :data:`Resolver`)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class ResultDownloader:
    """Downloads result images for one client, over its connection pool and retry policy.

    Image downloads go only to public addresses (every redirect hop is resolved with
    ``resolve`` and checked), except on the API origin and ``trusted_origins``
    (``scheme://host[:port]``): origins the operator configured, such as a sandbox or test
    server on loopback. :meth:`download_all` downloads at most ``concurrency`` images of a job
    at once, within ``max_job_bytes`` together; ``deadline`` bounds each download.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        transport: Transport,
        *,
        api_base: httpx.URL,
        trusted_origins: Iterable[str],
        resolve: Resolver,
        deadline: float,
        max_job_bytes: int,
        concurrency: int,
    ) -> None:
        self._http = http
        self._transport = transport
        self._api_origin = origin(api_base)
        self._trusted = {self._api_origin} | {origin(httpx.URL(o)) for o in trusted_origins}
        self._resolve = resolve
        self._deadline = deadline
        self._max_job_bytes = max_job_bytes
        self._concurrency = max(1, concurrency)
        self._decoding = asyncio.Semaphore(_DECODE_CONCURRENCY)

    async def download(
        self,
        url: str,
        *,
        max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        budget: DownloadBudget | None = None,
    ) -> tuple[bytes, str | None]:
        """Download a result image and return ``(bytes, content_type)``, bytes unchecked.

        Redirects are followed by hand, at most :data:`MAX_REDIRECTS`, and every hop outside
        the trusted origins must resolve to public addresses only (:class:`UnsafeLink`); the
        connection then goes to the address that was checked. The Authorization header is sent
        only with a first request to the API origin; a redirect that lands on the API origin is
        refused (:class:`MalformedResponse`). Raises :class:`ImageExpired` when the link is gone
        and :class:`ImageTooLarge` past ``max_bytes`` or past what is left of ``budget``.
        """
        unusable = MalformedResponse("PixelDojo returned an image link the bot cannot use.")
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL:
            raise unusable from None
        if target.scheme not in ("http", "https") or not target.host:
            raise unusable

        async def consume(response: httpx.Response) -> tuple[bytes, str | None]:
            taken = 0

            def count(size: int) -> None:
                nonlocal taken
                if budget is not None:
                    budget.take(size)
                taken += size

            try:
                data = await read_body(response, max_bytes, on_chunk=count)
            except BaseException as exc:
                if budget is not None:
                    budget.give_back(taken)
                if isinstance(exc, BodyRefused):
                    raise self._too_large(max_bytes) from None
                raise
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            return data, content_type or None

        return await self._transport.execute(
            lambda: self._image_request(target),
            idempotent=True,
            gated=origin(target) == self._api_origin,
            target="image",
            consume=consume,
            send=self._send_following_redirects,
            deadline=self._deadline,
        )

    async def download_all(
        self, urls: Sequence[str], *, limit: int | None, download: Download
    ) -> list[tuple[bytes, str]]:
        """Download a finished job's images, each checked to decode as PNG, JPEG or WebP.

        Takes at most ``limit`` URLs (the outputs paid for), fetches each with ``download``, at
        most ``concurrency`` at once and within ``max_job_bytes`` together.
        Returns ``(bytes, mime_type)`` in order; raises :class:`NotAnImage` for a file that is
        not an image, :class:`ImageTooLarge` for too many pixels or bytes. The first failure
        cancels the other downloads.
        """
        wanted = list(urls if limit is None else urls[: max(0, limit)])
        if len(wanted) < len(urls):
            log.warning(
                "PixelDojo listed %d images for a job of %d; taking the first %d",
                len(urls),
                limit,
                len(wanted),
            )
        budget = DownloadBudget(self._max_job_bytes)
        slots = asyncio.Semaphore(self._concurrency)

        async def one(url: str) -> tuple[bytes, str]:
            async with slots:
                data, _ = await download(url, budget)
            try:
                async with self._decoding:
                    return data, await asyncio.to_thread(images.verify_image, data)
            except images.TooManyPixels as exc:
                log.warning("PixelDojo result %s refused: %s", _for_log(url), exc.detail)
                raise ImageTooLarge(str(exc)) from None
            except images.UnusableImage as exc:
                log.warning("PixelDojo result %s is not usable: %s", _for_log(url), exc.detail)
                raise NotAnImage(str(exc)) from None

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(url)) for url in wanted]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return [task.result() for task in tasks]

    def _image_request(
        self, url: httpx.URL, address: str | None = None, *, redirected: bool = False
    ) -> httpx.Request:
        """A GET for ``url``; with ``address``, connected to that IP under the URL's name.

        The key goes only to the API origin, and never on a redirect hop (as browsers do once
        a chain has left the origin)."""
        if address is None:
            request = self._http.build_request("GET", url, headers={"Accept": "image/*"})
        else:
            request = self._http.build_request(
                "GET",
                url.copy_with(host=address),
                headers={"Accept": "image/*", "Host": url.netloc.decode("ascii")},
                extensions={"sni_hostname": url.raw_host.decode("ascii")},
            )
        if redirected or origin(url) != self._api_origin:
            del request.headers["Authorization"]
        return request

    async def _send_following_redirects(self, request: httpx.Request) -> httpx.Response:
        unusable = MalformedResponse("PixelDojo's image link redirects somewhere unusable.")
        url = request.url
        for hop in range(MAX_REDIRECTS + 1):
            if hop and origin(url) == self._api_origin:
                # Result images never redirect to the API itself. Followed, such a hop would be
                # an API request the budget never counted (that was decided from the first
                # URL), aimed at whatever API path a hostile result host chose.
                log.warning("PixelDojo image link redirects to the API origin; not followed")
                raise unusable
            address = await self._checked_address(url)
            try:
                request = self._image_request(url, address, redirected=hop > 0)
                # httpx parses Location even when not following it, and may raise doing so.
                response = await self._http.send(request, stream=True)
            except httpx.InvalidURL:
                raise unusable from None
            location = response.headers.get("Location") if response.is_redirect else None
            if location is None:
                return response
            await response.aclose()
            try:
                url = url.join(location.strip())
            except httpx.InvalidURL:
                raise unusable from None
            if url.scheme not in ("http", "https") or not url.host:
                raise unusable
        raise MalformedResponse("PixelDojo's image link redirects too many times.")

    async def _checked_address(self, url: httpx.URL) -> str | None:
        """The address to connect to for ``url``, checked to be public; None to let httpx
        connect as usual (a trusted origin, or a literal address already checked)."""
        if origin(url) in self._trusted:
            return None
        try:
            literal = ipaddress.ip_address(url.host)
        except ValueError:
            literal = None
        if literal is not None:
            self._refuse_unless_public(url, [literal])
            return None
        try:
            port = origin(url)[2] or 0
            found = [ipaddress.ip_address(a) for a in await self._resolve(url.host, port)]
        except (OSError, ValueError) as exc:
            raise httpx.ConnectError(f"cannot resolve {url.host}") from exc
        if not found:
            raise httpx.ConnectError(f"{url.host} has no address")
        self._refuse_unless_public(url, found)
        # IPv4 first: without happy eyeballs, an unreachable IPv6 route would fail outright.
        return str(min(found, key=lambda a: a.version))

    @staticmethod
    def _refuse_unless_public(
        url: httpx.URL, addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address]
    ) -> None:
        refused = [a for a in addresses if not is_public_address(a)]
        if refused:
            log.warning(
                "PixelDojo image link leads to %s (%s): not a public address, not followed",
                url.host,
                ", ".join(map(str, refused)),
            )
            raise UnsafeLink(api_message=f"{url.host} resolves to {refused[0]}")

    @staticmethod
    def _too_large(max_bytes: int) -> ImageTooLarge:
        return ImageTooLarge(
            "The generated image is larger than the bot will download "
            f"({max_bytes / (1024 * 1024):.1f} MiB)."
        )


def _for_log(url: str) -> str:
    """A result URL without its query string (signed links carry credentials there)."""
    return url.split("?", 1)[0][:200]
