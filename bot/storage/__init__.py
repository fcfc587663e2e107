"""SQLite persistence: one connection, versioned schema, serialised transactions."""

from bot.storage.database import (
    TRANSIENT_ERRORS,
    Connection,
    Database,
    DatabaseUnavailable,
    SyncConnection,
)

__all__ = ["TRANSIENT_ERRORS", "Connection", "Database", "DatabaseUnavailable", "SyncConnection"]
