"""The bot's single SQLite connection, its schema migrations and its transaction lock."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import aiosqlite

from bot.storage.migrations import MIGRATIONS

log = logging.getLogger(__name__)

Connection: TypeAlias = aiosqlite.Connection
"""The connection `Database.read()` and `transaction()` yield: code outside `bot.storage` only
passes it on to storage functions."""

SyncConnection: TypeAlias = sqlite3.Connection
"""The connection `Database.run()` and `call()` hand their function, on the database thread:
code outside `bot.storage` only passes it on to storage functions."""

T = TypeVar("T")


_memos: dict[int, dict[Any, Any]] = {}
"""By connection id: what storage functions worked out inside the current `in_transaction` or
`in_one_transaction` (see `transaction_memo`)."""


def transaction_memo(conn: sqlite3.Connection) -> dict[Any, Any] | None:
    """A dict storage functions may keep derived facts in (a sum and the last row it read)
    while the write transaction of `Database.run` is open on `conn`, or None outside one.
    Emptied whenever a write may have been undone (a savepoint rolled back) and at the end."""
    return _memos.get(id(conn))


def in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """`fn` inside `BEGIN IMMEDIATE` … `COMMIT`, rolled back on any exception (database thread)."""
    conn.execute("BEGIN IMMEDIATE")
    _memos[id(conn)] = {}
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # a failed COMMIT (disk full) leaves it open too
            conn.rollback()
        raise
    finally:
        _memos.pop(id(conn), None)
    return result


Outcome: TypeAlias = tuple[bool, Any]
"""(True, what a function returned) or (False, the exception it raised)."""


def in_one_transaction(
    conn: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]]
) -> list[Outcome]:
    """Each of `fns` in turn inside one `BEGIN IMMEDIATE` … `COMMIT` (database thread): group
    commit. Each runs in a savepoint of its own, so one that raises is rolled back alone and
    the others still commit; they run one after another, each seeing the writes of those
    before it, exactly as if each had its own transaction, but they share one COMMIT (one
    fsync under `synchronous=FULL`). Raises, for all of them, when BEGIN or COMMIT fails."""
    if len(fns) == 1:
        try:
            return [(True, in_transaction(conn, fns[0]))]
        except Exception as exc:
            return [(False, exc)]
    outcomes: list[Outcome] = []
    conn.execute("BEGIN IMMEDIATE")
    memo = _memos[id(conn)] = {}
    try:
        for fn in fns:
            conn.execute("SAVEPOINT one")
            changes = conn.total_changes
            try:
                outcomes.append((True, fn(conn)))
            except Exception as exc:
                conn.execute("ROLLBACK TO one")
                if conn.total_changes != changes:
                    memo.clear()  # it may have seen the writes just undone
                outcomes.append((False, exc))
            conn.execute("RELEASE one")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    finally:
        _memos.pop(id(conn), None)
    return outcomes


async def _on_worker(conn: Connection, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(sqlite3 connection, *args, **kwargs)` on aiosqlite's worker thread, the only thread
    the connection may be used on, through aiosqlite's own queue (so in order with everything
    else sent to it)."""
    execute = conn._execute
    result: T = await execute(fn, conn._conn, *args, **kwargs)  # type: ignore[no-untyped-call]
    return result


class DatabaseUnavailable(Exception):
    """The database cannot be opened or migrated; `cause` says why in one line."""

    def __init__(self, path: Path, cause: str) -> None:
        super().__init__(f"{path}: {cause}")
        self.path = path
        self.cause = cause


TRANSIENT_ERRORS = (sqlite3.OperationalError, OSError)
"""What SQLite raises while another process holds the write lock, the disk is full or read-only,
or I/O fails: conditions an operator can clear, so the write is worth trying again."""


def _cause(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _probe(path: Path) -> None:
    """Open `path` and read its header: raises if it cannot be opened or is not SQLite."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA schema_version").fetchone()
    finally:
        conn.close()


class Database:
    """Owns one aiosqlite connection for the life of the process.

    aiosqlite runs every statement on one worker thread, but two coroutines sharing the
    connection could still interleave statements inside each other's transactions. Every
    access therefore goes through `run()`, `call()`, `transaction()` or `read()`, which hold one
    asyncio lock.

    The bot uses only `run()` and `call()`: a plain function of a `sqlite3.Connection` runs on
    aiosqlite's worker thread in one trip, with no await between its statements, so holding
    the lock costs one thread hop instead of one per statement. They use aiosqlite's thread
    (not one of our own) so every statement still goes through one connection and one queue.
    `transaction()` and `read()`, which await statement by statement, remain for the schema
    migrations at start-up, tests and tools.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._waiting: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        """`run()` calls not yet taken to the database thread."""
        self._flusher: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Open the file (creating its folder), enable WAL and apply pending migrations.

        Raises `DatabaseUnavailable` when the file cannot be created, read or migrated, or
        was written by a newer version of the bot.
        """
        if str(self.path) != ":memory:":
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseUnavailable(
                    self.path, f"cannot create the folder {self.path.parent} ({_cause(exc)})"
                ) from exc
        try:
            # Opened and read once on a thread of our own first: when aiosqlite's own open
            # fails, its worker thread outlives the error and can print a traceback at exit.
            await asyncio.to_thread(_probe, self.path)
            conn = await aiosqlite.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseUnavailable(self.path, _cause(exc)) from exc
        try:
            conn.row_factory = aiosqlite.Row
            await conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed credit movement survives a power cut, not just a process crash
            # (NORMAL in WAL mode may lose the last commits); the ledger bench shows no cost.
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA busy_timeout=5000")
            self._conn = conn
            await self._migrate()
        except BaseException as exc:
            # aiosqlite's worker thread is not a daemon: an unclosed connection would keep
            # the process alive after the error, forever.
            self._conn = None
            await conn.close()
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise DatabaseUnavailable(self.path, _cause(exc)) from exc
            raise

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("Database.connect() has not been awaited")
        return self._conn

    async def _migrate(self) -> None:
        async with self.transaction() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            row = await (await conn.execute("SELECT MAX(version) FROM schema_version")).fetchone()
            assert row is not None  # an aggregate without GROUP BY always returns one row
            current = row[0] or 0
            if current > len(MIGRATIONS):
                raise DatabaseUnavailable(
                    self.path,
                    f"it has schema version {current} but this version of the bot knows only "
                    f"up to {len(MIGRATIONS)} (upgrade the bot, or restore a backup made by "
                    "this version)",
                )
            for version, statements in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                log.info("database migrated to schema version %d", version)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(conn)` inside `BEGIN IMMEDIATE` … `COMMIT`, its writes rolled back when it
        raises, in one trip to the database thread. `fn` must not block on anything but SQLite.

        IMMEDIATE takes SQLite's write lock up front, so a check-then-write (a credit
        reservation against a limit) cannot race another writer, even another process.

        Group commit: calls that arrive while a trip is in flight go together in the next
        trip, each in its own savepoint inside one transaction (`in_one_transaction`). Each
        still returns or raises only after its COMMIT, so nothing is reported done before it is
        on disk, while a burst costs one fsync per trip instead of one per call.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append((fn, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        """Take the waiting `run()` calls to the database thread, a batch per trip, until none
        are left. A task of its own, so a caller cancelled mid-trip strands no one else."""
        try:
            while self._waiting:
                async with self._lock:
                    # Let callers just answered queue their next call into this same trip.
                    await asyncio.sleep(0)
                    # A caller cancelled before its trip is left out (nothing of it is written);
                    # one cancelled during its trip is committed all the same, like a COMMIT
                    # already sent: a job reserved that way is refunded when the bot restarts.
                    batch = [(fn, future) for fn, future in self._waiting if not future.done()]
                    self._waiting = []
                    if not batch:
                        continue
                    try:
                        conn = self.conn
                        outcomes = await _on_worker(
                            conn, in_one_transaction, [fn for fn, _ in batch]
                        )
                    except Exception as exc:
                        outcomes = [(False, exc)] * len(batch)
                for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue  # its caller was cancelled
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._flusher = None

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(conn)` in one trip to the database thread, outside a transaction: for reads and
        single statements (each atomic on its own).

        Never overtakes a `run()` called before it: while any are waiting or in flight it joins
        their queue (inside their transaction, which costs nothing more), so a read sees every
        write asked for before it, as when every access queued on the lock in turn.
        """
        if self._waiting or self._flusher is not None:
            return await self.run(fn)
        async with self._lock:
            conn = self.conn
            return await _on_worker(conn, fn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """`BEGIN IMMEDIATE` … `COMMIT`, rolled back on any exception.

        IMMEDIATE takes SQLite's write lock up front, so a check-then-write (a credit
        reservation against a limit) cannot race another writer, even another process.
        """
        async with self._lock:
            conn = self.conn
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            try:
                await conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (a deferred constraint, disk full) leaves the transaction
                # open: every later BEGIN would fail on this connection.
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        """Serialised access for reads that need no transaction."""
        async with self._lock:
            yield self.conn

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> aiosqlite.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        values = tuple(params)
        rows: list[aiosqlite.Row] = await self.call(
            lambda conn: conn.execute(sql, values).fetchall()
        )
        return rows

    async def get_meta(self, key: str) -> str | None:
        row = await self.fetchone("SELECT value FROM meta WHERE key = ?", (key,))
        return row[0] if row is not None else None

    async def set_meta(self, key: str, value: str) -> None:
        await self.run(
            lambda conn: conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )
