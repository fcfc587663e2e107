"""The PixelDojo integration: client, errors and models, request schema, sandbox."""

from bot.pixeldojo.client import (
    AuthenticationError,
    JobState,
    NotFound,
    PixelDojoClient,
    PixelDojoError,
    SubmittedJob,
)

__all__ = [
    "AuthenticationError",
    "JobState",
    "NotFound",
    "PixelDojoClient",
    "PixelDojoError",
    "SubmittedJob",
]
