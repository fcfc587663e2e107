"""The PixelDojo integration: client, errors, models, transport, downloads, schema, sandbox."""

from bot.pixeldojo.client import PixelDojoClient
from bot.pixeldojo.errors import (
    AuthenticationError,
    BadRequest,
    ImageExpired,
    ImageTooLarge,
    InsufficientCredits,
    MalformedResponse,
    NetworkError,
    NotAnImage,
    NotFound,
    PixelDojoError,
    RateLimited,
    ServerError,
    UnsafeLink,
)
from bot.pixeldojo.models import ASPECT_RATIOS, MODEL_ID, JobStatus, SubmittedJob

__all__ = [
    "ASPECT_RATIOS",
    "MODEL_ID",
    "AuthenticationError",
    "BadRequest",
    "ImageExpired",
    "ImageTooLarge",
    "InsufficientCredits",
    "JobStatus",
    "MalformedResponse",
    "NetworkError",
    "NotAnImage",
    "NotFound",
    "PixelDojoClient",
    "PixelDojoError",
    "RateLimited",
    "ServerError",
    "SubmittedJob",
    "UnsafeLink",
]
