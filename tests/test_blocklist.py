"""The blocked-term matcher on its own: RE2 programs, and what a guild's terms compile to."""

from __future__ import annotations

from bot.blocklist import TermMatcher


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
