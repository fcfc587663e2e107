"""Blocked terms: normalising prompts, validating terms and matching them.

A prompt is NFKC-normalised, case-folded, stripped of invisible characters and its whitespace
collapsed before matching, so "ＢＡＤ", "B\u200bad" and "bad" are the same word. Plain terms match
whole words only ("ass" does not match "class"); regex terms are validated before they are stored.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

TERM_MAX_LENGTH = 200

# Characters that render as nothing and could split a word to slip past the list.
_INVISIBLE = dict.fromkeys(
    map(
        ord,
        "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e\u200f"
        "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069"
        "\u3164\ufeff\uffa0",
    ),
    None,
)
_SPACES = re.compile(r"\s+")
# A quantified group that itself contains a quantifier, e.g. (a+)+ : catastrophic backtracking.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)\s*(?:[+*]|\{\d)")
_PROBE = "The quick brown fox jumps over the lazy dog. 0123456789 !? ünïcödé"


class InvalidTerm(ValueError):
    """A blocked term cannot be stored; the message says why, for the moderator."""


def normalize(text: str) -> str:
    """The form prompts and plain terms are compared in."""
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).casefold()
    return _SPACES.sub(" ", text).strip()


def clean_plain_term(term: str) -> str:
    """Normalise a plain term for storage, or raise `InvalidTerm`."""
    cleaned = normalize(term)
    if not cleaned:
        raise InvalidTerm("The term is empty. Type the word or phrase to block.")
    if len(cleaned) > TERM_MAX_LENGTH:
        raise InvalidTerm(f"The term is too long; keep it under {TERM_MAX_LENGTH} characters.")
    return cleaned


def clean_regex_term(pattern: str) -> str:
    """Validate a regular expression for storage, or raise `InvalidTerm`."""
    pattern = unicodedata.normalize("NFKC", pattern).strip()
    if not pattern:
        raise InvalidTerm("The pattern is empty. Type the regular expression to block.")
    if len(pattern) > TERM_MAX_LENGTH:
        raise InvalidTerm(f"The pattern is too long; keep it under {TERM_MAX_LENGTH} characters.")
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise InvalidTerm(f"That is not a valid regular expression: {exc}.") from None
    if any(match.end() == match.start() for match in compiled.finditer(_PROBE)) or (
        compiled.search("") is not None
    ):
        raise InvalidTerm(
            "That pattern can match empty text, so it would block every prompt. "
            "Make it require at least one character."
        )
    if _NESTED_QUANTIFIER.search(pattern):
        raise InvalidTerm(
            "That pattern nests repetitions (like `(a+)+`), which can be very slow. Simplify it."
        )
    return pattern


def _plain_regex(term: str) -> str:
    words = (re.escape(word) for word in term.split(" "))
    return r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)"


@dataclass(frozen=True)
class TermMatcher:
    """Every blocked term of one guild, compiled once: plain terms as one alternation, each
    regex on its own (so its groups and flags stay its own)."""

    patterns: tuple[re.Pattern[str], ...]

    @classmethod
    def build(cls, terms: Iterable[tuple[str, bool]]) -> TermMatcher:
        """Compile `(term, is_regex)` pairs as stored (already cleaned) into one matcher."""
        plain: list[str] = []
        patterns: list[re.Pattern[str]] = []
        for term, is_regex in terms:
            if is_regex:
                patterns.append(re.compile(term, re.IGNORECASE))
            else:
                plain.append(_plain_regex(term))
        if plain:
            patterns.insert(0, re.compile("|".join(plain)))
        return cls(tuple(patterns))

    def matches(self, prompt: str) -> bool:
        """True when the prompt contains any blocked term."""
        if not self.patterns:
            return False
        text = normalize(prompt)
        return any(pattern.search(text) is not None for pattern in self.patterns)
