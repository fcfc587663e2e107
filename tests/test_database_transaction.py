"""Database.transaction(): a COMMIT that fails leaves the connection usable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.storage import Database


async def test_a_commit_refused_by_a_deferred_foreign_key_is_rolled_back(tmp_path: Path) -> None:
    db = Database(tmp_path / "bot.sqlite3")
    await db.connect()
    try:
        async with db.transaction() as conn:
            await conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
            await conn.execute(
                "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id)"
                " DEFERRABLE INITIALLY DEFERRED)"
            )
        with pytest.raises(sqlite3.IntegrityError):
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO child (parent_id) VALUES (42)")  # no parent 42

        # The next transaction begins (no "cannot start a transaction within a transaction"),
        # and the refused row was not kept.
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO parent (id) VALUES (1)")
            await conn.execute("INSERT INTO child (parent_id) VALUES (1)")
        rows = await db.fetchall("SELECT parent_id FROM child")
        assert [row[0] for row in rows] == [1]
    finally:
        await db.close()
