"""Blocked terms: normalising prompts, validating terms and matching them.

A prompt is NFKC-normalised, case-folded, stripped of invisible characters and its whitespace
collapsed before matching, so "ＢＡＤ", "B\u200bad" and "bad" are the same word. Plain terms match
whole words only ("ass" does not match "class").

Matching runs on RE2 (`google-re2`), which matches in time linear in the prompt whatever the
pattern, so no term a moderator adds can stall the bot. Regular expressions therefore use RE2
syntax: no backreferences and no lookaround, and `\\w`, `\\d` and `\\b` are ASCII-only (use
`\\pL` for any letter). They are validated with RE2 itself before they are stored, and searched
case-insensitively in the normalised prompt.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import re2

TERM_MAX_LENGTH = 200
REGEX_PROGRAM_MAX = 2000
"""The largest compiled RE2 program one pattern may have (`\\pL+` is about 1,200)."""
REGEX_BUDGET = 20_000
"""What a server's patterns may cost together, in RE2 program size plus `REGEX_OVERHEAD` each:
matching time grows with it, so it bounds the time one prompt's check can take."""
REGEX_OVERHEAD = 50
PLAIN_TERMS_PER_REGEX = 200
"""Plain terms are compiled in alternations of at most this many, each kept small enough for
RE2's fast automaton."""

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
_WORD = r"\pL\pM\pN_"
"""What a word is made of, for whole-word matching (Unicode letters, marks, digits and `_`)."""
_PROBE = "The quick brown fox jumps over the lazy dog. 0123456789 !? ünïcödé"


class InvalidTerm(ValueError):
    """A blocked term cannot be stored; the message says why, for the moderator."""


# -- normalisation ---------------------------------------------------------------------------


def normalize(text: str) -> str:
    """The form prompts and plain terms are compared in."""
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).casefold()
    return _SPACES.sub(" ", text).strip()


# -- validation ------------------------------------------------------------------------------


def clean_plain_term(term: str) -> str:
    """Normalise a plain term for storage, or raise `InvalidTerm`."""
    cleaned = normalize(term)
    if not cleaned:
        raise InvalidTerm("The term is empty. Type the word or phrase to block.")
    if len(cleaned) > TERM_MAX_LENGTH:
        raise InvalidTerm(f"The term is too long; keep it under {TERM_MAX_LENGTH} characters.")
    return cleaned


def _options(*, case_sensitive: bool, max_mem: int) -> re2.Options:
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.never_capture = True
    options.log_errors = False
    options.max_mem = max_mem
    return options


# A pattern's memory is its program and its automaton's cache: past the cache RE2 slows down,
# never stops. 1 MiB holds a program of REGEX_PROGRAM_MAX many times over.
_PATTERN_OPTIONS = _options(case_sensitive=False, max_mem=1 << 20)
_PLAIN_OPTIONS = _options(case_sensitive=True, max_mem=8 << 20)


def _explain(error: str) -> str:
    """A moderator-facing reason for an RE2 compile error."""
    lookaround = ("(?=", "(?!", "(?<=", "(?<!")
    if error.startswith(tuple(f"invalid perl operator: {op}" for op in lookaround)):
        return (
            "Lookahead and lookbehind like `(?=…)` or `(?<!…)` aren't supported: patterns run "
            "on RE2, which matches in linear time. Rewrite it without them."
        )
    if re.fullmatch(r"invalid escape sequence: \\[1-9]", error):
        return (
            "Backreferences like `\\1` aren't supported: patterns run on RE2, which matches "
            "in linear time. Rewrite it without them."
        )
    if "pattern too large" in error:
        return "That pattern is too complex. Simplify it."
    return f"That is not a valid regular expression: {error}."


@dataclass(frozen=True)
class CompiledPattern:
    """One regex term compiled for matching."""

    regexes: tuple[re2._Regexp, ...]

    @property
    def cost(self) -> int:
        """What the pattern counts against `REGEX_BUDGET`."""
        return sum(regex.programsize + REGEX_OVERHEAD for regex in self.regexes)


@functools.lru_cache(maxsize=2048)
def compile_pattern(pattern: str) -> CompiledPattern:
    """Compile a stored (or candidate) regex term with RE2, or raise `InvalidTerm`."""
    try:
        regex = re2.compile(pattern, _PATTERN_OPTIONS)
    except re2.error as exc:
        message = exc.args[0] if exc.args else "unknown error"
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        raise InvalidTerm(_explain(str(message))) from None
    if regex.programsize > REGEX_PROGRAM_MAX:
        raise InvalidTerm(
            f"That pattern is too complex (RE2 program size {regex.programsize}, the "
            f"limit is {REGEX_PROGRAM_MAX}). Simplify it, or use plain terms."
        )
    return CompiledPattern((regex,))


def clean_regex_term(pattern: str) -> str:
    """Validate a regular expression for storage, or raise `InvalidTerm`."""
    pattern = unicodedata.normalize("NFKC", pattern).strip()
    if not pattern:
        raise InvalidTerm("The pattern is empty. Type the regular expression to block.")
    if len(pattern) > TERM_MAX_LENGTH:
        raise InvalidTerm(f"The pattern is too long; keep it under {TERM_MAX_LENGTH} characters.")
    for regex in compile_pattern(pattern).regexes:
        if regex.search("") is not None or any(
            match.end() == match.start() for match in regex.finditer(_PROBE)
        ):
            raise InvalidTerm(
                "That pattern can match empty text, so it would block every prompt. "
                "Make it require at least one character."
            )
    return pattern


def check_regex_budget(pattern: str, existing: Iterable[str]) -> None:
    """Raise `InvalidTerm` when adding `pattern` would take a server's patterns over
    `REGEX_BUDGET`. Stored patterns RE2 can't compile cost nothing (they are skipped)."""
    total = compile_pattern(pattern).cost
    for other in existing:
        if other == pattern:
            continue  # Already stored: adding it again is refused as a duplicate.
        try:
            total += compile_pattern(other).cost
        except InvalidTerm:
            continue
    if total > REGEX_BUDGET:
        raise InvalidTerm(
            "This server's patterns together are as complex as they may be. Remove one, "
            "simplify them, or block plain terms instead."
        )


# -- matching --------------------------------------------------------------------------------


def _plain_regex(terms: Sequence[str]) -> str:
    words = "|".join(re2.escape(term) for term in terms)
    return f"(?:^|[^{_WORD}])(?:{words})(?:[^{_WORD}]|$)"


@dataclass(frozen=True)
class SkippedTerm:
    """A stored term that can't be matched (a regex RE2 rejects), with the reason."""

    index: int
    """Its position in the terms given to `TermMatcher.build`."""
    pattern: str
    reason: str


@dataclass(frozen=True)
class TermMatcher:
    """Every blocked term of one guild, compiled once with RE2: plain terms in a few
    alternations, each regex on its own (so its flags stay its own)."""

    regexes: tuple[re2._Regexp, ...]
    skipped: tuple[SkippedTerm, ...] = ()

    @classmethod
    def build(cls, terms: Iterable[tuple[str, bool]]) -> TermMatcher:
        """Compile `(term, is_regex)` pairs as stored. A stored regex RE2 can't compile (stored
        before patterns ran on RE2) is left out and reported in `skipped`, never raised."""
        plain: list[str] = []
        regexes: list[re2._Regexp] = []
        skipped: list[SkippedTerm] = []
        for index, (term, is_regex) in enumerate(terms):
            if is_regex:
                try:
                    regexes.extend(compile_pattern(term).regexes)
                except InvalidTerm as exc:
                    skipped.append(SkippedTerm(index, term, str(exc)))
                continue
            plain.append(term)
        plain = list(dict.fromkeys(plain))
        plain_regexes = [
            re2.compile(_plain_regex(plain[start : start + PLAIN_TERMS_PER_REGEX]), _PLAIN_OPTIONS)
            for start in range(0, len(plain), PLAIN_TERMS_PER_REGEX)
        ]
        return cls(tuple(plain_regexes + regexes), tuple(skipped))

    def matches(self, prompt: str) -> bool:
        """True when the prompt contains any blocked term."""
        if not self.regexes:
            return False
        text = normalize(prompt)
        return any(regex.search(text) is not None for regex in self.regexes)
