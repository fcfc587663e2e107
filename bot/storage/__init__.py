"""SQLite persistence: one connection, versioned schema, serialised transactions."""

from bot.storage.database import (
    Connection,
    Database,
    DatabaseUnavailable,
    SyncConnection,
)

__all__ = ["Connection", "Database", "DatabaseUnavailable", "SyncConnection"]
