"""SQLite persistence: one connection, versioned schema, serialised transactions."""

from bot.storage.database import Database, DatabaseUnavailable

__all__ = ["Database", "DatabaseUnavailable"]
