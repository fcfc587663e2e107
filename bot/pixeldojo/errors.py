"""Every way a PixelDojo call can fail, as typed errors whose message is safe to show."""

from __future__ import annotations

from typing import Any, ClassVar


class PixelDojoError(Exception):
    """Base class for every PixelDojo failure.

    ``message`` is plain English, safe to show to users and never contains the API key.
    ``retryable`` is True when repeating the same call later is both safe and may succeed; for a
    submit it is False whenever the server may already have created (and charged) the job.
    ``api_message`` is the server's own wording (scrubbed of the key), for logs.
    """

    default_message: ClassVar[str] = "PixelDojo returned an unexpected error."
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        code: str | None = None,
        retryable: bool | None = None,
        api_message: str | None = None,
    ) -> None:
        self.message: str = message or self.default_message
        self.status: int | None = status
        self.code: str | None = code
        self.retryable: bool = self.default_retryable if retryable is None else retryable
        self.api_message: str | None = api_message
        super().__init__(self.message)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, status={self.status!r}, "
            f"code={self.code!r}, retryable={self.retryable!r})"
        )


class BadRequest(PixelDojoError):
    """The API rejected the request body (HTTP 400 or 422); ``details`` holds any field errors."""

    default_message = "PixelDojo rejected the request."

    def __init__(self, message: str | None = None, *, details: Any = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.details: Any = details


class AuthenticationError(PixelDojoError):
    """The API key was missing or refused (HTTP 401)."""

    default_message = "PixelDojo rejected the bot's API key. An operator needs to check it."


class InsufficientCredits(PixelDojoError):
    """The PixelDojo account cannot pay for the request (HTTP 402 or 403)."""

    default_message = "PixelDojo says the account is out of credits."


class NotFound(PixelDojoError):
    """The job, model or file does not exist (HTTP 404 or 410)."""

    default_message = "PixelDojo could not find what the bot asked for."


class ImageExpired(NotFound):
    """A result image could no longer be downloaded (HTTP 403, 404 or 410 on its URL)."""

    default_message = "The image link has expired."


class ImageTooLarge(PixelDojoError):
    """A result image was larger than the download cap."""

    default_message = "The generated image is too large for the bot to download."


class RateLimited(PixelDojoError):
    """Too many requests (HTTP 429); ``retry_after`` is the server's hint in seconds, if any."""

    default_message = "PixelDojo is busy with too many requests. Please try again in a moment."
    default_retryable = True

    def __init__(
        self, message: str | None = None, *, retry_after: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.retry_after: float | None = retry_after


class ServerError(PixelDojoError):
    """PixelDojo failed on its side (HTTP 5xx)."""

    default_message = "PixelDojo is having trouble right now. Please try again later."
    default_retryable = True


class NetworkError(PixelDojoError):
    """The request could not be completed: connection failure, reset or timeout."""

    default_message = "The bot could not reach PixelDojo. Please try again later."
    default_retryable = True


class MalformedResponse(PixelDojoError):
    """The API answered with something that is not the JSON shape it documents."""

    default_message = "PixelDojo sent a response the bot could not understand."


class NotAnImage(MalformedResponse):
    """A result file did not decode as a PNG, JPEG or WebP image."""

    default_message = "PixelDojo sent a file that is not a PNG, JPEG or WebP image."


class UnsafeLink(PixelDojoError):
    """A result link (or a redirect on the way) led to a loopback, private or link-local host."""

    default_message = (
        "PixelDojo's image link led to a private network address, so the bot did not follow it."
    )
