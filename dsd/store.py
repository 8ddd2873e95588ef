"""The chat history store: committed entries in seq order, bounded by retention, and who is present.

The protocol core (``dsd.core.chat``) calls a :class:`Store` synchronously from the event
loop with each turn's batch of committed entries, so an append is one cheap transaction.
:class:`SqliteStore` keeps the history across restarts; :class:`MemoryStore` behaves the
same (retention included) for tests and for a daemon without a state_dir.

Presence is kept apart from the entries, so ``users()`` stays right after retention has
trimmed the join entry that made someone present.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from operator import itemgetter
from typing import Any, Protocol

Entry = dict[str, Any]

FIELDS = ("seq", "term", "kind", "user", "text", "id", "server", "session", "time")
KINDS = ("message", "join", "leave", "timeout")
FILENAME = "chat.sqlite3"
SCHEMA_VERSION = 1
APPLICATION_ID = 0x44534443  # "DSDC" in the file header: this file is a dsd chat store
MAX_SLACK = 1000

_KEYS = frozenset(FIELDS)
_COLUMNS = ", ".join(FIELDS)
_PLACEHOLDERS = ", ".join("?" * len(FIELDS))
_INSERT = f"INSERT INTO entries ({_COLUMNS}) VALUES ({_PLACEHOLDERS})"
_SET_PRESENCE = f"INSERT OR REPLACE INTO presence ({_COLUMNS}) VALUES ({_PLACEHOLDERS})"
_READ = f"SELECT {_COLUMNS} FROM entries WHERE seq > ? ORDER BY seq LIMIT ?"
_ENTRY_COLUMNS = """
    term INTEGER NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL, id TEXT NOT NULL,
    server TEXT NOT NULL, session TEXT NOT NULL, time REAL NOT NULL"""
_SCHEMA = (
    f"CREATE TABLE entries (seq INTEGER PRIMARY KEY, user TEXT NOT NULL, {_ENTRY_COLUMNS})",
    "CREATE INDEX entries_user_id ON entries (user, id)",
    f"CREATE TABLE presence (user TEXT PRIMARY KEY, seq INTEGER NOT NULL, {_ENTRY_COLUMNS})",
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_row = itemgetter(*FIELDS)


class StoreError(Exception):
    """The store's file cannot be used; ``str(e)`` is one line naming the path."""


class Store(Protocol):
    """The chat history as the protocol core uses it."""

    def append(self, entries: list[Entry]) -> None:
        """Add committed entries, continuing the log: seq = last_seq()+1, +2, ...

        Raises ValueError, storing none of `entries`, on a gap, a repeat or a malformed
        entry: each is a bug upstream, never a client's doing.
        """

    def read(self, after: int, limit: int) -> list[Entry]:
        """Retained entries with seq > `after`, oldest first, at most `limit`."""

    def latest(self, limit: int) -> list[Entry]:
        """The newest `limit` retained entries, oldest first."""

    def last_seq(self) -> int:
        """The seq of the last entry appended, 0 when there is none."""

    def first_seq(self) -> int:
        """The oldest retained seq, or last_seq() + 1 when nothing is retained."""

    def find(self, user: str, id: str) -> int | None:
        """The seq of the newest retained entry with this (user, id): dedupes retried sends."""

    def users(self) -> dict[str, Entry]:
        """Who is present: user -> the join entry that made them present, in seq order."""

    def close(self) -> None:
        """Release the store; it is not used afterwards."""


def retention_slack(retention: int) -> int:
    """How far past `retention` a store grows before trimming: 10%, at most MAX_SLACK.

    Trimming in batches keeps most appends free of a delete.
    """
    return min(MAX_SLACK, retention // 10)


def open_store(state_dir: str | None, retention: int) -> Store:
    """The daemon's store: ``<state_dir>/chat.sqlite3``, or in memory without a state_dir."""
    if state_dir is None:
        return MemoryStore(retention)
    return SqliteStore(os.path.join(state_dir, FILENAME), retention)


def _check_retention(retention: int) -> int:
    if type(retention) is not int or retention < 1:
        raise ValueError(f"retention must be an integer >= 1, not {retention!r}")
    return retention


def _check_batch(entries: list[Entry], last_seq: int) -> None:
    for expected, entry in enumerate(entries, last_seq + 1):
        if entry.keys() != _KEYS:
            raise ValueError(f"entry keys {sorted(entry)} != {sorted(_KEYS)}")
        if type(entry["seq"]) is not int or entry["seq"] != expected:
            raise ValueError(f"entry seq {entry['seq']!r} where {expected} is due (a gap or a repeat)")
        if entry["kind"] not in KINDS:
            raise ValueError(f"entry {expected}: unknown kind {entry['kind']!r}")


def _entries(rows: Iterable[tuple[Any, ...]]) -> list[Entry]:
    return [dict(zip(FIELDS, row)) for row in rows]


def _kept_from(first: int, last: int, retention: int, slack: int) -> int:
    """The new first seq: back to `retention` entries once there are more than retention + slack."""
    if last - first + 1 > retention + slack:
        return last - retention + 1
    return first


class MemoryStore:
    """The store in memory: lost on exit."""

    def __init__(self, retention: int) -> None:
        self._retention = _check_retention(retention)
        self._slack = retention_slack(retention)
        self._entries: list[Entry] = []  # contiguous: _entries[i]["seq"] == _first + i
        self._first = 1
        self._ids: dict[tuple[str, str], int] = {}
        self._users: dict[str, Entry] = {}

    def append(self, entries: list[Entry]) -> None:
        _check_batch(entries, self.last_seq())
        for entry in map(dict, entries):
            self._entries.append(entry)
            self._ids[entry["user"], entry["id"]] = entry["seq"]
            if entry["kind"] == "join":
                self._users.pop(entry["user"], None)  # re-insert: users() is in seq order
                self._users[entry["user"]] = entry
            elif entry["kind"] != "message":
                self._users.pop(entry["user"], None)
        first = _kept_from(self._first, self.last_seq(), self._retention, self._slack)
        trimmed = first - self._first
        for entry in self._entries[:trimmed]:
            key = entry["user"], entry["id"]
            if self._ids.get(key) == entry["seq"]:
                del self._ids[key]
        del self._entries[:trimmed]
        self._first = first

    def read(self, after: int, limit: int) -> list[Entry]:
        if limit <= 0:
            return []
        start = max(after + 1 - self._first, 0)
        return [dict(entry) for entry in self._entries[start:start + limit]]

    def latest(self, limit: int) -> list[Entry]:
        if limit <= 0:
            return []
        return [dict(entry) for entry in self._entries[-limit:]]

    def last_seq(self) -> int:
        return self._first + len(self._entries) - 1

    def first_seq(self) -> int:
        return self._first

    def find(self, user: str, id: str) -> int | None:
        return self._ids.get((user, id))

    def users(self) -> dict[str, Entry]:
        return {user: dict(join) for user, join in self._users.items()}

    def close(self) -> None:
        pass


class SqliteStore:
    """The store in an SQLite file (WAL, synchronous=NORMAL): survives restarts.

    synchronous=NORMAL may lose the last transactions to a power cut, never to a crash of
    the daemon, and a lost tail is replicated on the other daemons anyway.
    """

    def __init__(self, path: str, retention: int) -> None:
        self.path = path
        self._retention = _check_retention(retention)
        self._slack = retention_slack(retention)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
            try:
                self._load()
            except BaseException:
                self._db.close()
                raise
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"{path}: cannot open the chat store: {error}") from None

    def _load(self) -> None:
        # A write transaction, even when nothing needs writing, so that a read-only file
        # fails here rather than at the first append.
        with self._transaction():
            application_id = self._db.execute("PRAGMA application_id").fetchone()[0]
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            empty = self._db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
            if application_id == 0 and version == 0 and empty:
                for statement in _SCHEMA:
                    self._db.execute(statement)
            elif application_id != APPLICATION_ID:
                raise StoreError(f"{self.path}: not a dsd chat store")
            elif version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: chat store schema version {version} is newer than this dsd's "
                    f"({SCHEMA_VERSION}); upgrade dsd or move the file away"
                )
            first, last = self._db.execute("SELECT MIN(seq), MAX(seq) FROM entries").fetchone()
            self._last = last or 0
            self._first = first or 1
            self._trim()
        # Only now: never switch the journal of a file that turned out not to be ours.
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _trim(self) -> None:
        """Delete what retention no longer keeps; inside a transaction."""
        first = _kept_from(self._first, self._last, self._retention, self._slack)
        if first != self._first:
            self._db.execute("DELETE FROM entries WHERE seq < ?", (first,))
            self._first = first

    def append(self, entries: list[Entry]) -> None:
        _check_batch(entries, self._last)
        if not entries:
            return
        present: dict[str, Entry | None] = {}  # user -> their join, or None if now absent
        for entry in entries:
            if entry["kind"] == "join":
                present[entry["user"]] = entry
            elif entry["kind"] != "message":
                present[entry["user"]] = None
        first, last = self._first, self._last
        try:
            with self._transaction():
                self._db.executemany(_INSERT, map(_row, entries))
                gone = [(user,) for user, join in present.items() if join is None]
                self._db.executemany("DELETE FROM presence WHERE user = ?", gone)
                joined = [_row(join) for join in present.values() if join is not None]
                self._db.executemany(_SET_PRESENCE, joined)
                self._last = entries[-1]["seq"]
                self._trim()
        except BaseException:
            self._first, self._last = first, last
            raise

    def read(self, after: int, limit: int) -> list[Entry]:
        if limit <= 0:  # SQLite reads a negative LIMIT as none
            return []
        return _entries(self._db.execute(_READ, (after, limit)))

    def latest(self, limit: int) -> list[Entry]:
        if limit <= 0:
            return []
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY seq DESC LIMIT ?", (limit,))
        return _entries(reversed(rows.fetchall()))

    def last_seq(self) -> int:
        return self._last

    def first_seq(self) -> int:
        return self._first

    def find(self, user: str, id: str) -> int | None:
        row = self._db.execute(
            "SELECT seq FROM entries WHERE user = ? AND id = ? ORDER BY seq DESC LIMIT 1", (user, id)
        ).fetchone()
        return None if row is None else row[0]

    def users(self) -> dict[str, Entry]:
        joins = _entries(self._db.execute(f"SELECT {_COLUMNS} FROM presence ORDER BY seq"))
        return {join["user"]: join for join in joins}

    def close(self) -> None:
        self._db.close()
