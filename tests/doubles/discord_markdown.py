"""What a Discord client would make of message or embed markdown, for assertions.

A deliberately strict reading of Discord's rules (simple-markdown plus Discord's additions):
anything that *could* render as a link, a mention or formatting is reported. Text inside code
blocks and inline code is literal, as on Discord::

    active_markup("[x](https://evil.example) <@1>")
    # [("link", "https://evil.example"), ("mention", "<@1>")]
"""

from __future__ import annotations

import re

# Discord drops a backslash before any character that is not alphanumeric or whitespace.
ESCAPE_RE = re.compile(r"\\([^0-9A-Za-z\s])")
CODE_BLOCK_RE = re.compile(r"```(?:[a-z0-9_+\-.#]+?\n)?\n*([^\n][\s\S]*?)\n*```", re.IGNORECASE)
INLINE_CODE_RE = re.compile(r"(`+)([\s\S]*?[^`])\1(?!`)")
MASKED_LINK_RE = re.compile(r"\[((?:\\.|[^\]\\])*)\]\(\s*<?([^\s)>]*)>?\s*\)", re.DOTALL)
URL_RE = re.compile(r"(?:https?|steam)://[^\s<]+[^<.,:;\"'\]\s]", re.IGNORECASE)
ANGLE_URL_RE = re.compile(r"<([a-z][a-z0-9+.-]*:/[^\s>]+)>", re.IGNORECASE)
MENTION_RE = re.compile(
    r"<@!?\d+>|<@&\d+>|<#\d+>|</[^\s:>]+:\d+>|<t:-?\d+(?::[tTdDfFRS])?>|<a?:\w+:\d+>"
    r"|@everyone|@here"
)
FORMAT_RE = re.compile(r"\*\*|__|~~|\|\||\*|_")
LINE_MARKUP_RE = re.compile(r"^(?:#{1,3}\s|-#\s|>{1,3}\s|\s*[-*+]\s|\s*\d+\.\s)", re.MULTILINE)


def rendered(text: str) -> str:
    """The characters a reader sees (escapes resolved, zero-width spaces dropped)."""
    return ESCAPE_RE.sub(r"\1", text).replace("\u200b", "")


def active_markup(text: str) -> list[tuple[str, str]]:
    """Every ``(kind, token)`` that would render as markup: kinds "link", "mention", "format"
    and "line" (headings, quotes, lists). Escaped characters and code spans are inert."""
    found: list[tuple[str, str]] = []
    text = CODE_BLOCK_RE.sub(lambda _m: "\0", text)
    position = 0
    formatting: dict[str, int] = {}
    line_start = True
    while position < len(text):
        char = text[position]
        if char == "\\" and ESCAPE_RE.match(text, position):
            position += 2
            line_start = False
            continue
        if line_start and (line := LINE_MARKUP_RE.match(text, position)):
            found.append(("line", line.group(0).strip()))
        if char == "`" and (code := INLINE_CODE_RE.match(text, position)):
            position = code.end()
            line_start = False
            continue
        if char == "[" and (link := MASKED_LINK_RE.match(text, position)):
            target = link.group(2)
            if URL_RE.fullmatch(target) or ANGLE_URL_RE.fullmatch(f"<{target}>"):
                found.append(("link", target))
                found.extend(active_markup(link.group(1)))
                position = link.end()
                line_start = False
                continue
        if char == "<" and (angle := ANGLE_URL_RE.match(text, position)):
            found.append(("link", angle.group(1)))
            position = angle.end()
            line_start = False
            continue
        if url := URL_RE.match(text, position):
            found.append(("link", url.group(0)))
            position = url.end()
            line_start = False
            continue
        if mention := MENTION_RE.match(text, position):
            found.append(("mention", mention.group(0)))
            position = mention.end()
            line_start = False
            continue
        if marker := FORMAT_RE.match(text, position):
            formatting[marker.group(0)] = formatting.get(marker.group(0), 0) + 1
            position = marker.end()
            line_start = False
            continue
        line_start = char == "\n"
        position += 1
    found.extend(("format", marker) for marker, count in formatting.items() if count >= 2)
    return found
