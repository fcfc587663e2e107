"""Proof that moderator patterns never reach Python's backtracking `re`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pytest

_FUNCTIONS = ("compile", "search", "match", "fullmatch", "finditer", "findall", "sub", "split")


def forbid_python_re(monkeypatch: pytest.MonkeyPatch, patterns: Iterable[str]) -> None:
    """Make Python's `re` raise when given one of `patterns` (others, the bot's own and its
    libraries', pass through), so a test fails at once instead of backtracking for hours."""
    forbidden = set(patterns)
    for name in _FUNCTIONS:
        original = getattr(re, name)

        def guarded(pattern: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if getattr(pattern, "pattern", pattern) in forbidden:
                raise AssertionError(f"Python's re was given a moderator's pattern: {pattern!r}")
            return _original(pattern, *args, **kwargs)

        monkeypatch.setattr(re, name, guarded)
