"""The blocklist: words, phrases and regular expressions prompts may not contain."""

from __future__ import annotations

from bot.credits.blocklist import (
    InvalidTerm,
    check_regex_budget,
    clean_plain_term,
    clean_regex_term,
    normalize,
)
from bot.credits.moderation._base import InvalidSetting, ModerationBase
from bot.storage import SyncConnection, rules
from bot.storage.audit import AuditEntry
from bot.storage.rules import BlockedTerm


class BlocklistActions(ModerationBase):
    """Blocking and unblocking terms, and the blocklist itself."""

    async def blocked_terms(self, guild_id: int) -> list[BlockedTerm]:
        """The guild's blocklist, oldest first."""
        return await self.db.call(lambda conn: rules.blocked_terms(conn, guild_id))

    async def add_blocked_term(
        self, *, guild_id: int, actor_id: int, term: str, is_regex: bool = False
    ) -> AuditEntry:
        """Block a word or phrase (whole words, any case), or a validated regular expression."""
        try:
            pattern = clean_regex_term(term) if is_regex else clean_plain_term(term)
        except InvalidTerm as exc:
            raise InvalidSetting(str(exc)) from None
        kind = "pattern" if is_regex else "term"

        def write(conn: SyncConnection) -> AuditEntry:
            if is_regex:
                try:
                    check_regex_budget(pattern, rules.blocked_regexes(conn, guild_id))
                except InvalidTerm as exc:
                    raise InvalidSetting(str(exc)) from None
            term_id = rules.add_blocked_term(
                conn, guild_id, pattern, is_regex=is_regex, actor_id=actor_id, now=self.clock()
            )
            if term_id is None:
                raise InvalidSetting(f"That {kind} is already blocked.")
            self.limits.invalidate_terms(guild_id)
            # The summary goes to a channel: it names the entry, not the term itself.
            return self._audit(
                conn,
                guild_id,
                actor_id,
                "blocklist.add",
                term_id,
                {"term_id": term_id, "pattern": pattern, "is_regex": is_regex},
                f"added blocked {kind} #{term_id}",
            )

        return await self.db.run(write)

    async def remove_blocked_term(
        self, *, guild_id: int, actor_id: int, term: str | int
    ) -> AuditEntry:
        """Unblock a term given its id (int or "#12") or its text as it was added."""

        def write(conn: SyncConnection) -> AuditEntry:
            found = self._find_term(conn, guild_id, term)
            if found is None:
                raise InvalidSetting("That term isn't on this server's blocklist.")
            rules.remove_blocked_term(conn, guild_id, found.id)
            self.limits.invalidate_terms(guild_id)
            kind = "pattern" if found.is_regex else "term"
            return self._audit(
                conn,
                guild_id,
                actor_id,
                "blocklist.remove",
                found.id,
                {"term_id": found.id, "pattern": found.pattern, "is_regex": found.is_regex},
                f"removed blocked {kind} #{found.id}",
            )

        return await self.db.run(write)

    @staticmethod
    def _find_term(conn: SyncConnection, guild_id: int, term: str | int) -> BlockedTerm | None:
        text = str(term).strip()
        if isinstance(term, int) or text.lstrip("#").isdigit():
            found = rules.blocked_term_by_id(conn, guild_id, int(text.lstrip("#")))
            if found is not None or isinstance(term, int):
                return found
        return rules.blocked_term_by_pattern(conn, guild_id, [text, normalize(text)])
