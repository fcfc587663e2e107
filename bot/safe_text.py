"""Member-supplied text made inert before the bot shows it in Discord.

Prompts, ban reasons and PixelDojo's error text end up inside the bot's own embeds and
log-channel lines, where Discord would render their markdown: `[Claim free Nitro](https://…)`
becomes a masked link in an official-looking post. Everything such text passes through
`escape_member_text` first, so it renders exactly as typed and never as a link, mention or
formatting.
"""

from __future__ import annotations

import re

# Every ASCII character Discord's markdown gives a meaning to. Discord drops a backslash before
# any non-alphanumeric character, so escaping one that is harmless in context costs nothing.
# (discord.utils.escape_markdown is not enough on its own: it escapes a masked link only by
# its first `[`, leaves formatting inside it active, and leaves `<@id>`, `<#id>`, `<t:…>` and
# `<https://…>` alone.)
_MARKUP = re.compile(r"[\\*_~|`>#\-+\[\]()<]")
# "1. item" starts a numbered list.
_NUMBERED_LIST = re.compile(r"^(\s*\d+)\.(?=\s)", re.MULTILINE)
# "https://" and other scheme separators: a zero-width space after the colon stops Discord's
# autolinking (which would accept one after the slashes, and browsers then drop it).
_SCHEME = re.compile(r":(?=//)")
_EVERYONE = re.compile(r"@(everyone|here)")

ZERO_WIDTH_SPACE = "\u200b"


def escape_member_text(text: str) -> str:
    """`text` as Discord should show it literally: markdown escaped, no links, no mentions."""
    text = _NUMBERED_LIST.sub(r"\1\\.", _MARKUP.sub(r"\\\g<0>", text))
    text = _SCHEME.sub(":" + ZERO_WIDTH_SPACE, text)
    return _EVERYONE.sub("@" + ZERO_WIDTH_SPACE + r"\1", text)
