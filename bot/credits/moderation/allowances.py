"""What members may spend: the credit period, allowances, grants and usage resets."""

from __future__ import annotations

from bot.credits.moderation._base import (
    InvalidSetting,
    ModerationBase,
    check_id,
    check_range,
    check_reason,
    per_period,
    plural,
)
from bot.credits.periods import Period, period_start
from bot.storage import SyncConnection, guild_settings, ledger, rules
from bot.storage.audit import AuditEntry
from bot.storage.ledger import LedgerKind

ALLOWANCE_MAX = 1_000_000
GRANT_MAX = 10_000


def check_allowance(allowance: int | None) -> None:
    if allowance is not None:
        check_range(allowance, 0, ALLOWANCE_MAX, "An allowance")


class AllowanceActions(ModerationBase):
    """The period, allowances, grants and resets: what a member may spend."""

    async def role_allowances(self, guild_id: int) -> dict[int, int | None]:
        """Role id → allowance per period (None = unlimited)."""

        def read(conn: SyncConnection) -> dict[int, int | None]:
            return rules.role_allowances(conn, guild_id)

        return await self.db.call(read)

    async def user_allowances(self, guild_id: int) -> dict[int, int | None]:
        """Member id → allowance override per period (None = unlimited)."""

        def read(conn: SyncConnection) -> dict[int, int | None]:
            return rules.user_allowances(conn, guild_id)

        return await self.db.call(read)

    async def set_period(
        self, *, guild_id: int, actor_id: int, period: str, reset_hour: int | None = None
    ) -> AuditEntry:
        """How often allowances reset, and at which hour (UTC); `reset_hour` None keeps it."""
        try:
            new_period = Period(period)
        except ValueError:
            choices = ", ".join(p.value for p in Period)
            raise InvalidSetting(f"The period must be one of: {choices}.") from None
        if reset_hour is not None:
            check_range(reset_hour, 0, 23, "The reset hour (UTC)")

        def write(conn: SyncConnection) -> AuditEntry:
            settings = guild_settings.load(conn, guild_id)
            hour = settings.reset_hour if reset_hour is None else reset_hour
            # Only what the moderator chose: an hour left out stays at its default.
            chosen = {} if reset_hour is None else {"reset_hour": reset_hour}
            guild_settings.save(conn, guild_id, period=new_period, **chosen)
            if new_period is Period.NONE:
                summary = "set credits to never reset (one allowance in total)"
            else:
                summary = (
                    f"set the credit period to {new_period.per}, resetting at {hour:02d}:00 UTC"
                )
            return self._audit(
                conn,
                guild_id,
                actor_id,
                "settings.period",
                None,
                {
                    "period": new_period.value,
                    "reset_hour": hour,
                    "previous": {
                        "period": settings.period.value,
                        "reset_hour": settings.reset_hour,
                    },
                },
                summary,
            )

        return await self.db.run(write)

    async def set_default_allowance(
        self, *, guild_id: int, actor_id: int, allowance: int | None
    ) -> AuditEntry:
        """Credits per period for members without a role or member override (None = unlimited)."""
        check_allowance(allowance)

        def write(conn: SyncConnection) -> AuditEntry:
            settings = guild_settings.load(conn, guild_id)
            guild_settings.save(conn, guild_id, default_allowance=allowance)
            return self._audit(
                conn,
                guild_id,
                actor_id,
                "settings.default_allowance",
                None,
                {"allowance": allowance, "previous": settings.default_allowance},
                f"set the default allowance to {per_period(allowance, settings)}",
            )

        return await self.db.run(write)

    async def set_role_allowance(
        self, *, guild_id: int, actor_id: int, role_id: int, allowance: int | None
    ) -> AuditEntry:
        """Allowance for members with this role (the most generous of a member's roles wins)."""
        check_id(role_id, "role")
        check_allowance(allowance)

        def write(conn: SyncConnection) -> AuditEntry:
            settings = guild_settings.load(conn, guild_id)
            rules.set_role_allowance(conn, guild_id, role_id, allowance)
            return self._audit(
                conn,
                guild_id,
                actor_id,
                "allowance.role.set",
                role_id,
                {"role_id": role_id, "allowance": allowance},
                f"set <@&{role_id}>'s allowance to {per_period(allowance, settings)}",
            )

        return await self.db.run(write)

    async def clear_role_allowance(
        self, *, guild_id: int, actor_id: int, role_id: int
    ) -> AuditEntry:
        """Remove a role's allowance; its members fall back to other roles or the default."""

        def write(conn: SyncConnection) -> AuditEntry:
            if not rules.clear_role_allowance(conn, guild_id, role_id):
                raise InvalidSetting(f"<@&{role_id}> has no allowance of its own to clear.")
            return self._audit(
                conn,
                guild_id,
                actor_id,
                "allowance.role.clear",
                role_id,
                {"role_id": role_id},
                f"cleared <@&{role_id}>'s allowance",
            )

        return await self.db.run(write)

    async def set_user_allowance(
        self, *, guild_id: int, actor_id: int, user_id: int, allowance: int | None
    ) -> AuditEntry:
        """A member's own allowance, overriding their roles and the default."""
        check_id(user_id, "member")
        check_allowance(allowance)

        def write(conn: SyncConnection) -> AuditEntry:
            settings = guild_settings.load(conn, guild_id)
            rules.set_user_allowance(conn, guild_id, user_id, allowance)
            return self._audit(
                conn,
                guild_id,
                actor_id,
                "allowance.user.set",
                user_id,
                {"user_id": user_id, "allowance": allowance},
                f"set <@{user_id}>'s allowance to {per_period(allowance, settings)}",
            )

        return await self.db.run(write)

    async def clear_user_allowance(
        self, *, guild_id: int, actor_id: int, user_id: int
    ) -> AuditEntry:
        """Remove a member's override; their roles or the default apply again."""

        def write(conn: SyncConnection) -> AuditEntry:
            if not rules.clear_user_allowance(conn, guild_id, user_id):
                raise InvalidSetting(f"<@{user_id}> has no allowance of their own to clear.")
            return self._audit(
                conn,
                guild_id,
                actor_id,
                "allowance.user.clear",
                user_id,
                {"user_id": user_id},
                f"removed <@{user_id}>'s own allowance",
            )

        return await self.db.run(write)

    async def grant_credits(
        self, *, guild_id: int, actor_id: int, user_id: int, amount: int, note: str | None = None
    ) -> AuditEntry:
        """Extra credits for a member in the current period, on top of their allowance."""
        check_id(user_id, "member")
        check_range(amount, 1, GRANT_MAX, "A grant")
        note = check_reason(note)

        def write(conn: SyncConnection) -> AuditEntry:
            settings = guild_settings.load(conn, guild_id)
            now = self.clock()
            start = period_start(settings.period, settings.reset_hour, now)
            ledger.append(
                conn,
                guild_id=guild_id,
                user_id=user_id,
                kind=LedgerKind.GRANT,
                amount=amount,
                period_start=start,
                now=now,
                actor_id=actor_id,
                note=note,
            )
            return self._audit(
                conn,
                guild_id,
                actor_id,
                "credits.grant",
                user_id,
                {"user_id": user_id, "amount": amount, "period_start": start, "note": note},
                f"granted <@{user_id}> {plural(amount, 'extra credit')} {settings.period.phrase}",
            )

        return await self.db.run(write)

    async def reset_usage(self, *, guild_id: int, actor_id: int, user_id: int) -> AuditEntry:
        """Forgive what a member used this period.

        Credits still held by the member's running jobs are left in place, so when such a job
        is refunded the member gets back exactly what it held and no more.
        """
        check_id(user_id, "member")

        def write(conn: SyncConnection) -> AuditEntry:
            settings = guild_settings.load(conn, guild_id)
            now = self.clock()
            start = period_start(settings.period, settings.reset_hour, now)
            usage = ledger.usage_between(conn, guild_id, user_id, start)
            held = ledger.held_by_active_jobs(conn, guild_id, user_id, start)
            forgiven = usage.used - held
            if forgiven > 0:
                ledger.append(
                    conn,
                    guild_id=guild_id,
                    user_id=user_id,
                    kind=LedgerKind.RESET,
                    amount=-forgiven,
                    period_start=start,
                    now=now,
                    actor_id=actor_id,
                )
            return self._audit(
                conn,
                guild_id,
                actor_id,
                "credits.reset",
                user_id,
                {"user_id": user_id, "forgiven": max(forgiven, 0), "period_start": start},
                f"reset <@{user_id}>'s usage {settings.period.phrase} "
                f"({plural(max(forgiven, 0), 'credit')} given back)",
            )

        return await self.db.run(write)
