"""SQLite persistence: one connection, versioned schema, serialised transactions."""

from bot.storage.database import Database

__all__ = ["Database"]
