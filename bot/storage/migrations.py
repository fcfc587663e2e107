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
]
