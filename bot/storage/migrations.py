"""Schema migrations, applied in order. Append new ones; never edit a released one."""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    # 1: durable jobs and the append-only credit ledger.
    [
        """
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            guild_id INTEGER,
            channel_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            prompt TEXT NOT NULL,
            aspect_ratio TEXT NOT NULL,
            num_outputs INTEGER NOT NULL,
            seed INTEGER,
            parent_job_id INTEGER REFERENCES jobs(id),
            state TEXT NOT NULL,
            status_message_id INTEGER,
            api_job_id TEXT,
            status_url TEXT,
            api_expires_at REAL,
            credits_reserved INTEGER NOT NULL,
            credits_charged INTEGER,
            error TEXT,
            result_message_id INTEGER,
            polls INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            submitted_at REAL,
            completed_at REAL,
            finished_at REAL
        )
        """,
        "CREATE INDEX jobs_by_state ON jobs (state)",
        "CREATE INDEX jobs_by_user ON jobs (guild_id, user_id, created_at)",
        """
        CREATE TABLE ledger (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            guild_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            job_id INTEGER REFERENCES jobs(id),
            kind TEXT NOT NULL CHECK (kind IN ('reserve', 'settle', 'refund', 'grant', 'reset')),
            amount INTEGER NOT NULL,
            period_start REAL NOT NULL,
            actor_id INTEGER,
            note TEXT,
            created_at REAL NOT NULL
        )
        """,
        # A job can be reserved, settled and refunded at most once each: a retried
        # settle or refund hits this index instead of moving credits twice.
        "CREATE UNIQUE INDEX ledger_once_per_job ON ledger (job_id, kind) WHERE job_id IS NOT NULL",
        "CREATE INDEX ledger_by_user_period ON ledger (guild_id, user_id, period_start)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
    # 2: per-guild credit rules, moderation state and the audit log. Every row is keyed by
    # guild_id and every query filters by it, so one guild never sees another's data.
    [
        """
        CREATE TABLE guild_settings (
            guild_id INTEGER PRIMARY KEY,
            period TEXT NOT NULL DEFAULT 'day'
                CHECK (period IN ('day', 'week', 'month', 'none')),
            reset_hour INTEGER NOT NULL DEFAULT 0 CHECK (reset_hour BETWEEN 0 AND 23),
            default_allowance INTEGER DEFAULT 10,
            spend_cap INTEGER,
            max_concurrent INTEGER NOT NULL DEFAULT 2,
            cooldown_seconds INTEGER NOT NULL DEFAULT 0,
            max_outputs INTEGER NOT NULL DEFAULT 4,
            moderator_role_id INTEGER,
            log_channel_id INTEGER,
            cap_warned_period REAL,
            cap_paused_period REAL
        )
        """,
        """
        CREATE TABLE role_allowances (
            guild_id INTEGER NOT NULL,
            role_id INTEGER NOT NULL,
            allowance INTEGER,
            PRIMARY KEY (guild_id, role_id)
        )
        """,
        """
        CREATE TABLE user_allowances (
            guild_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            allowance INTEGER,
            PRIMARY KEY (guild_id, user_id)
        )
        """,
        """
        CREATE TABLE allowed_channels (
            guild_id INTEGER NOT NULL,
            channel_id INTEGER NOT NULL,
            PRIMARY KEY (guild_id, channel_id)
        )
        """,
        """
        CREATE TABLE blocked_terms (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            guild_id INTEGER NOT NULL,
            pattern TEXT NOT NULL,
            is_regex INTEGER NOT NULL DEFAULT 0,
            actor_id INTEGER,
            created_at REAL NOT NULL,
            UNIQUE (guild_id, pattern)
        )
        """,
        """
        CREATE TABLE bans (
            guild_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            until REAL,
            reason TEXT,
            actor_id INTEGER,
            created_at REAL NOT NULL,
            PRIMARY KEY (guild_id, user_id)
        )
        """,
        """
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            guild_id INTEGER NOT NULL,
            actor_id INTEGER,
            action TEXT NOT NULL,
            target_id INTEGER,
            details TEXT NOT NULL DEFAULT '{}',
            summary TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL
        )
        """,
        "CREATE INDEX audit_log_by_guild ON audit_log (guild_id, id)",
        # The server-wide spend cap sums one guild's ledger for a period.
        "CREATE INDEX ledger_by_guild_period ON ledger (guild_id, period_start)",
    ],
    # 3: the input image an /imagine edit sends to PixelDojo (NULL for plain generations):
    # the attachment URL, or a data URI / base64 when the model's schema takes inline images.
    ["ALTER TABLE jobs ADD COLUMN input_image_url TEXT"],
    # 4: guild settings without SQL DEFAULTs: NULL means "the code's default" (see
    # bot/storage/guild_settings.py), so a changed default reaches every guild that never set
    # that setting. A stored value becomes NULL only where that is certain: it equals the old
    # DEFAULT (so nothing changes today) and no moderator ever set it (every settings change
    # is audited in the same transaction, so with no audit entry the value came from the
    # DEFAULT). A moderator's explicit choice stays, even one equal to the default; an explicit
    # "unlimited" default allowance or "no cap" is stored as -1 (NONE_CHOSEN).
    [
        """
        CREATE TABLE guild_settings_v4 (
            guild_id INTEGER PRIMARY KEY,
            period TEXT CHECK (period IN ('day', 'week', 'month', 'none')),
            reset_hour INTEGER CHECK (reset_hour BETWEEN 0 AND 23),
            default_allowance INTEGER CHECK (default_allowance >= -1),
            spend_cap INTEGER CHECK (spend_cap >= -1),
            max_concurrent INTEGER,
            cooldown_seconds INTEGER,
            max_outputs INTEGER,
            moderator_role_id INTEGER,
            log_channel_id INTEGER,
            cap_warned_period REAL,
            cap_paused_period REAL
        )
        """,
        """
        INSERT INTO guild_settings_v4
        SELECT g.guild_id,
            CASE WHEN g.period != 'day' OR c.period THEN g.period END,
            CASE WHEN g.reset_hour != 0 OR c.period THEN g.reset_hour END,
            CASE WHEN g.default_allowance IS NULL THEN -1
                 WHEN g.default_allowance != 10 OR c.allowance THEN g.default_allowance END,
            CASE WHEN g.spend_cap IS NOT NULL THEN g.spend_cap WHEN c.cap THEN -1 END,
            CASE WHEN g.max_concurrent != 2 OR c.concurrent THEN g.max_concurrent END,
            CASE WHEN g.cooldown_seconds != 0 OR c.cooldown THEN g.cooldown_seconds END,
            CASE WHEN g.max_outputs != 4 OR c.outputs THEN g.max_outputs END,
            g.moderator_role_id, g.log_channel_id, g.cap_warned_period, g.cap_paused_period
        FROM guild_settings g LEFT JOIN (
            SELECT guild_id,
                MAX(action = 'settings.period') AS period,
                MAX(action = 'settings.default_allowance') AS allowance,
                MAX(action = 'settings.spend_cap') AS cap,
                MAX(action = 'settings.max_concurrent') AS concurrent,
                MAX(action = 'settings.cooldown_seconds') AS cooldown,
                MAX(action = 'settings.max_outputs') AS outputs
            FROM audit_log WHERE action LIKE 'settings.%' GROUP BY guild_id
        ) c ON c.guild_id = g.guild_id
        """,
        "DROP TABLE guild_settings",
        "ALTER TABLE guild_settings_v4 RENAME TO guild_settings",
    ],
    # 5: what PixelDojo charged for a job, kept when the member is refunded afterwards (the
    # images could not be saved or posted), so the spend cap and /mod report count real spend.
    # Jobs that finished at PixelDojo before this column existed get it back from their row or,
    # if they were refunded since, from their reserve and settle rows.
    [
        "ALTER TABLE jobs ADD COLUMN provider_charged INTEGER",
        """
        UPDATE jobs SET provider_charged = credits_charged
        WHERE state IN ('completed', 'posted') AND credits_charged IS NOT NULL
        """,
        """
        UPDATE jobs SET provider_charged = (
            SELECT COALESCE(SUM(amount), 0) FROM ledger
            WHERE job_id = jobs.id AND kind IN ('reserve', 'settle')
        )
        WHERE state = 'failed' AND completed_at IS NOT NULL
        """,
    ],
    # 6: the queue. A member may have `max_queued` prompts waiting beyond those running (NULL:
    # the default, like every guild setting); waiting jobs are in state 'queued', which needs no
    # schema change.
    ["ALTER TABLE guild_settings ADD COLUMN max_queued INTEGER"],
]
