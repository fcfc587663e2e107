"""SQLite persistence: one connection, versioned schema, serialised transactions."""

from bot.storage.database import Connection, Database, DatabaseUnavailable

__all__ = ["Connection", "Database", "DatabaseUnavailable"]
