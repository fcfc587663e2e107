"""Exceptions shared by services and cogs."""

from __future__ import annotations


class RequestRefused(Exception):
    """A member's request cannot run. The message is shown to them as is, so it must say
    exactly why and what to do, and must not echo anything that should stay private."""
