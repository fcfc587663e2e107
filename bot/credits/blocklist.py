"""Blocked terms: normalising prompts, validating terms and matching them.

Prompts and terms go through the same steps (`normalize`):

1. NFKC and case folding, so "ＢＡＤ" and "bad" are the same word;
2. every Default_Ignorable_Code_Point is removed (zero-width spaces and joiners, soft hyphens,
   variation selectors like U+FE0F, tag characters, Mongolian variation selectors...), so
   "b\u200bad" is "bad";
3. combining marks are removed, so "b\u0301ad", "bád" and "bad" are the same word, except where
   a script spells with them: after a letter of a script other than Latin, Greek, Cyrillic,
   Armenian, Arabic or Hebrew, a mark outside the generic combining blocks stays (Japanese
   "ば" is not "は", Devanagari vowel signs stay);
4. whitespace is collapsed.

That is the form plain terms are stored and shown in. Matching then also compares the
confusables *skeleton* (`skeleton`): each look-alike character is replaced by the one it
imitates, after Unicode TR39's confusables data (`bot.credits.confusables`), so "bаdword" with a
Cyrillic "а" is "badword". A second skeleton folds before case folding, because some capitals
imitate Latin ones that their small letters do not (Cyrillic "В" is "B", its "в" is not "b").

Plain terms match whole words, in any of these forms, and only whole words ("ass" does not match
"class"). Regular expressions use RE2 syntax (`google-re2`): RE2 matches in time linear in the
prompt whatever the pattern, so no pattern can stall the bot; it has no backreferences and no
lookaround, and its `\\w`, `\\d` and `\\b` are ASCII-only (use `\\pL` for any letter). A pattern
is searched, case-insensitively, in the normalised prompt and in its skeletons; its own
non-ASCII letters are folded the same way, so a Cyrillic pattern still matches Cyrillic text
with Latin look-alikes in it.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import re2

from bot.credits.confusables import FOLD, FOLD_CAPITALS

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

# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties.txt): they render as nothing.
_DEFAULT_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_IGNORABLE: dict[int, None] = {
    cp: None for low, high in _DEFAULT_IGNORABLE_RANGES for cp in range(low, high + 1)
}
# Marks from these blocks combine with any script and spell nothing on their own.
_GENERIC_MARK_RANGES = (
    (0x0300, 0x036F),
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x20D0, 0x20FF),
    (0xFE20, 0xFE2F),
)
# Scripts whose marks are accents or optional vowel points, not part of the letters.
_SCRIPTS_WITH_OPTIONAL_MARKS = ("LATIN ", "GREEK ", "CYRILLIC ", "ARMENIAN ", "ARABIC ", "HEBREW ")
_SPACES = re.compile(r"\s+")
_WORD = r"\pL\pM\pN_"
"""What a word is made of, for whole-word matching (Unicode letters, marks, digits and `_`)."""
_PROBE = "The quick brown fox jumps over the lazy dog. 0123456789 !? ünïcödé"


class InvalidTerm(ValueError):
    """A blocked term cannot be stored; the message says why, for the moderator."""


# -- normalisation ---------------------------------------------------------------------------


def _is_generic_mark(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _GENERIC_MARK_RANGES)


@functools.lru_cache(maxsize=4096)
def _spells_with_marks(char: str) -> bool:
    """Whether marks after this (non-mark) character are part of how its script spells."""
    if not unicodedata.category(char).startswith("L"):
        return False
    name = unicodedata.name(char, "")
    return bool(name) and not name.startswith(_SCRIPTS_WITH_OPTIONAL_MARKS)


def _strip_marks(text: str) -> str:
    kept: list[str] = []
    keep_marks = False
    for char in text:
        if unicodedata.category(char).startswith("M"):
            if keep_marks and not _is_generic_mark(char):
                kept.append(char)
            continue
        keep_marks = _spells_with_marks(char)
        kept.append(char)
    return "".join(kept)


def normalize(text: str) -> str:
    """The form prompts are read in and plain terms are stored in (see the module docstring)."""
    text = unicodedata.normalize("NFKD", text)
    text = unicodedata.normalize("NFKD", text.casefold()).translate(_IGNORABLE)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", _strip_marks(text))
    return _SPACES.sub(" ", text).strip()


def skeleton(text: str) -> str:
    """`normalize`, then every look-alike replaced by the character it imitates."""
    return normalize(text).translate(FOLD)


def _capitals_skeleton(text: str) -> str:
    """Like `skeleton`, but capitals are folded before case folding (Cyrillic "В" is "B")."""
    return skeleton(unicodedata.normalize("NFKC", text).translate(FOLD_CAPITALS))


def prompt_forms(prompt: str) -> tuple[str, ...]:
    """Every form of the prompt that terms are searched in, without repeats."""
    forms = [normalize(prompt)]
    for form in (forms[0].translate(FOLD), _capitals_skeleton(prompt)):
        if form not in forms:
            forms.append(form)
    return tuple(forms)


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
    """One regex term compiled for matching: the pattern as written and, when it has
    non-ASCII letters, the same pattern with them folded to their skeleton."""

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
    regexes = [regex]
    folded = _fold_pattern(pattern)
    if folded is not None and folded != pattern:
        try:
            variant = re2.compile(folded, _PATTERN_OPTIONS)
        except re2.error:
            variant = None  # Folding is only an addition: the pattern as written still matches.
        # A pattern of only invisible characters folds to nothing, which would match everything.
        if variant is not None and variant.search("") is None:
            regexes.append(variant)
    for candidate in regexes:
        if candidate.programsize > REGEX_PROGRAM_MAX:
            raise InvalidTerm(
                f"That pattern is too complex (RE2 program size {candidate.programsize}, the "
                f"limit is {REGEX_PROGRAM_MAX}). Simplify it, or use plain terms."
            )
    return CompiledPattern(tuple(regexes))


def clean_regex_term(pattern: str) -> str:
    """Validate a regular expression for storage, or raise `InvalidTerm`."""
    # Prompts are matched without invisible characters, so a pattern can't contain any either.
    pattern = unicodedata.normalize("NFKC", pattern).translate(_IGNORABLE).strip()
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


def is_enforced(term: str, is_regex: bool) -> bool:
    """Whether a stored term is matched: every plain term, and a pattern RE2 compiles (one it
    can't, stored before patterns ran on RE2, is what `TermMatcher.build` skips)."""
    if not is_regex:
        return True
    try:
        compile_pattern(term)
    except InvalidTerm:
        return False
    return True


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


def _fold_char(char: str) -> str:
    return skeleton(char) if not char.isspace() else char


def _fold_pattern(pattern: str) -> str | None:
    """The pattern with its non-ASCII literals replaced by their skeleton, or None where that
    can't be done safely (a non-ASCII range end, a multi-character fold inside `[...]`, `\\Q`).

    RE2's syntax is all ASCII, so a non-ASCII character is always a literal: outside a class it
    becomes a group of its escaped fold, inside a class its fold is added next to it.
    """
    if pattern.isascii():
        return pattern
    if "\\Q" in pattern:
        return None
    out: list[str] = []
    index = 0
    in_class = class_start = False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index : index + 2])
            index += 2
            class_start = False
            continue
        index += 1
        if not in_class:
            if char == "[":
                in_class = class_start = True
                out.append(char)
                if pattern.startswith("^", index):
                    out.append("^")
                    index += 1
            elif char.isascii():
                out.append(char)
            else:
                folded = _fold_char(char)
                out.append(char if folded == char else f"(?:{re2.escape(folded)})")
            continue
        if char == "]" and not class_start:
            in_class = False
            out.append(char)
        elif char == "[" and pattern.startswith(":", index):
            end = pattern.find(":]", index)
            if end < 0:
                return None
            out.append(pattern[index - 1 : end + 2])
            index = end + 2
        elif char.isascii():
            out.append(char)
        else:
            folded = _fold_char(char)
            if "-" in (pattern[index - 2 : index - 1], pattern[index : index + 1]):
                return None  # A range: its folded ends would not span the same letters.
            if len(folded) != 1:
                return None
            out.append(char if folded == char else char + re2.escape(folded))
        class_start = False
    return "".join(out)


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
            for form in dict.fromkeys((normalize(term), skeleton(term))):
                if form:
                    plain.append(form)
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
        forms = prompt_forms(prompt)
        return any(regex.search(form) is not None for regex in self.regexes for form in forms)
