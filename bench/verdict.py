"""How every bench ends: one FAIL line per missed check, or OK; the exit status says which."""

from __future__ import annotations

from collections.abc import Iterable


def verdict(failures: Iterable[str]) -> int:
    """Print each failure (or OK) and return the process exit status: 1 on any failure."""
    failed = list(failures)
    for failure in failed:
        print(f"FAIL: {failure}", flush=True)
    if failed:
        return 1
    print("OK", flush=True)
    return 0
