"""The blocked-term matcher on its own: normalisation, the confusables skeleton, RE2 programs
and what a guild's terms compile to."""

from __future__ import annotations

import unicodedata

import pytest

from bot.credits.blocklist import TermMatcher, clean_regex_term, normalize, prompt_forms, skeleton
from bot.credits.confusables import FOLD, FOLD_CAPITALS


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("bad\ufe0fword", "badword"),  # variation selectors
        ("bad\ufe00word", "badword"),
        ("bad\U000e0041\U000e007fword", "badword"),  # tag characters
        ("bad\u180bword", "badword"),  # Mongolian free variation selector
        ("bad\u115f\u3164\u2064word", "badword"),  # fillers, invisible plus
        ("b\u0301a\u0308d\u0489", "bad"),  # combining marks, even on nothing
        ("Bádwörd Ǆ", "badword dz"),  # NFKC splits the ligature, its caron goes
        ("ｶﾞｷﾞ", "ガギ"),  # a dakuten is part of the letter: kept, and composed
        ("ばか", "ばか"),
        ("नमस्ते", "नमस्ते"),  # Devanagari vowel signs and virama are kept
        ("حِمَار", "حمار"),  # Arabic vowel points are optional: removed
        ("שָׁלוֹם", "שלום"),
        ("👍🏽 ❤️ 🏳️\u200d🌈", "👍🏽 ❤ 🏳🌈"),  # skin tones stay; the joiner is invisible
    ],
)
def test_normalize_removes_what_is_invisible_and_keeps_what_spells(text: str, normal: str) -> None:
    assert normalize(text) == unicodedata.normalize("NFC", normal)


def test_skeleton_folds_look_alikes_to_what_they_imitate() -> None:
    assert skeleton("bаdwоrd") == "badword"  # Cyrillic а and о
    assert skeleton("ѕех") == "sex"  # all-Cyrillic
    assert skeleton("ραураl") == "paypal"  # Greek and Cyrillic
    assert "bad" in prompt_forms("ВАD")  # Cyrillic capitals: В is a B
    assert skeleton("вот") != "bot"  # ... but the small в is not a b
    # ASCII is its own prototype: TR39's m → rn and 0 → O would make "burn" block "bum".
    assert skeleton("bum burn b0b 1l") == "bum burn b0b 1l"
    assert skeleton("ｍ") == "m"


def test_the_confusables_table_is_consistent_with_normalize() -> None:
    def is_word(char: str) -> bool:
        return char == "_" or unicodedata.category(char)[0] in "LMN"

    for table in (FOLD, FOLD_CAPITALS):
        for code, value in table.items():
            source = chr(code)
            assert not source.isascii()
            assert value and normalize(value) == value and value.translate(FOLD) == value
            assert skeleton(skeleton(source)) == skeleton(source)
            if is_word(source):
                assert all(is_word(char) for char in value), source
    for code in FOLD:
        assert normalize(chr(code)) == chr(code)


def test_regex_terms_fold_their_non_ascii_letters() -> None:
    matcher = TermMatcher.build([(r"д[уu]р[аa]к", True), ("[а-я]+ша", True)])
    assert matcher.matches("ты дyрак")  # Latin y and Cyrillic у both match [уu]
    assert matcher.matches("ты ДУРАК")
    assert matcher.matches("каша")  # a range of Cyrillic letters is matched as written
    assert not matcher.matches("ты друг")


def test_patterns_lose_invisible_characters_like_prompts_do() -> None:
    assert clean_regex_term(" gr\u200b[iy]ffin\ufe0f ") == "gr[iy]ffin"
    # A stored pattern that is nothing but invisible characters matches nothing, not everything.
    assert not TermMatcher.build([("\u200b", True)]).matches("a lighthouse")


def test_many_plain_terms_compile_into_a_few_alternations() -> None:
    matcher = TermMatcher.build([(f"word{i}", False) for i in range(1000)])
    assert len(matcher.regexes) == 5
    assert matcher.matches("a WORD999 here")
    assert matcher.matches("word0")
    assert matcher.matches("«word7»")
    assert not matcher.matches("word1000")
    assert not matcher.matches("sword1")
    assert not matcher.matches("word1ñ")  # whole words in any script


def test_a_stored_pattern_re2_rejects_is_skipped_not_raised() -> None:
    matcher = TermMatcher.build([("dragon", False), (r"(?=x)x", True), ("gr[iy]ffin", True)])
    assert [(s.index, s.pattern) for s in matcher.skipped] == [(1, r"(?=x)x")]
    assert matcher.skipped[0].reason.startswith("Lookahead and lookbehind")
    assert matcher.matches("a GRYFFIN")
    assert matcher.matches("a dragon")
    assert not matcher.matches("an x")
