"""The chat history store: committed entries in seq order, bounded by retention, and who is present.

The protocol core (``dsd.core.chat``) calls a :class:`Store` synchronously from the event
loop with each turn's batch of committed entries, so an append is one cheap transaction.
:class:`SqliteStore` keeps the history across restarts; :class:`MemoryStore` behaves the
same (retention included) for tests and for a daemon without a state_dir.

Presence is kept apart from the entries, so ``users()`` stays right after retention has
trimmed the join entry that made someone present.

The log need not start at seq 1: its *base* is the last entry before the first retained one
(seq, term, and who was present after it). Retention moves the base forward as it trims;
`install` sets it from a snapshot when a daemon must catch up on entries the others no
longer keep, and the log then continues at base + 1.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Protocol

log = logging.getLogger("dsd.store")

Entry = dict[str, Any]

FIELDS = ("seq", "term", "kind", "user", "text", "id", "server", "session", "time")
KINDS = ("message", "join", "leave", "timeout")
FILENAME = "chat.sqlite3"
SCHEMA_VERSION = 2  # 2: the base table and the presence at the base
APPLICATION_ID = 0x44534443  # "DSDC" in the file header: this file is a dsd chat store
MAX_SLACK = 1000
CHECKPOINT_EVERY = 256  # transactions between two checkpoints of the write-ahead log

_KEYS = frozenset(FIELDS)
_COLUMNS = ", ".join(FIELDS)
_PLACEHOLDERS = ", ".join("?" * len(FIELDS))
_INSERT = f"INSERT INTO entries ({_COLUMNS}) VALUES ({_PLACEHOLDERS})"
_READ = f"SELECT {_COLUMNS} FROM entries WHERE seq > ? ORDER BY seq LIMIT ?"
_ENTRY_COLUMNS = """
    term INTEGER NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL, id TEXT NOT NULL,
    server TEXT NOT NULL, session TEXT NOT NULL, time REAL NOT NULL"""
_SCHEMA_1 = (
    f"CREATE TABLE entries (seq INTEGER PRIMARY KEY, user TEXT NOT NULL, {_ENTRY_COLUMNS})",
    "CREATE INDEX entries_user_id ON entries (user, id)",
    f"CREATE TABLE presence (user TEXT PRIMARY KEY, seq INTEGER NOT NULL, {_ENTRY_COLUMNS})",
    f"PRAGMA application_id = {APPLICATION_ID}",
)
# One row; term is NULL when the presence at the base is unknown (a version 1 file that had
# trimmed already: it cannot serve snapshots until it installs one itself).
_SCHEMA_2 = (
    "CREATE TABLE base (seq INTEGER NOT NULL, term INTEGER)",
    f"CREATE TABLE base_presence (user TEXT PRIMARY KEY, seq INTEGER NOT NULL, {_ENTRY_COLUMNS})",
)
_row = itemgetter(*FIELDS)


@dataclass(frozen=True)
class Base:
    """Where the retained log starts from: the entry before the first retained one.

    ``seq`` and ``term`` are that entry's (0, 0 for an untrimmed log); ``users`` is who was
    present after it: user -> the join entry that made them present, in seq order.
    """

    seq: int
    term: int
    users: dict[str, Entry]


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
        """The seq of the last entry appended (or the base's), 0 when there is none."""

    def last_term(self) -> int:
        """The term of the last entry appended (or the base's), 0 when there is none."""

    def first_seq(self) -> int:
        """The oldest retained seq, or last_seq() + 1 when nothing is retained."""

    def base(self) -> Base | None:
        """The base the retained entries continue from; None when it is not known."""

    def install(self, base: Base) -> None:
        """Replace everything by a snapshot: no entries, `base.users` present, the log
        continuing at base.seq + 1. Raises ValueError, changing nothing, on a malformed base.
        """

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


def _check_base(base: Base) -> None:
    if type(base.seq) is not int or type(base.term) is not int or base.seq < 0 or base.term < 0:
        raise ValueError(f"base seq {base.seq!r} and term {base.term!r} must be integers >= 0")
    for user, join in base.users.items():
        if join.keys() != _KEYS or join["kind"] != "join" or join["user"] != user:
            raise ValueError(f"the presence of {user!r} is not a join entry of that user")
        if type(join["seq"]) is not int or not 0 < join["seq"] <= base.seq:
            raise ValueError(f"the join of {user!r} at seq {join['seq']!r} is not before the base {base.seq}")


def _presence_changes(entries: Iterable[Entry]) -> dict[str, Entry | None]:
    """What `entries` do to presence: user -> their latest join, or None if they left."""
    changes: dict[str, Entry | None] = {}
    for entry in entries:
        if entry["kind"] == "join":
            changes.pop(entry["user"], None)  # re-insert: joins stay in seq order
            changes[entry["user"]] = entry
        elif entry["kind"] != "message":
            changes[entry["user"]] = None
    return changes


def _apply(users: dict[str, Entry], changes: dict[str, Entry | None]) -> None:
    for user, join in changes.items():
        users.pop(user, None)
        if join is not None:
            users[user] = dict(join)


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
        self._entries: list[Entry] = []  # contiguous: _entries[i]["seq"] == _base.seq + 1 + i
        self._base = Base(0, 0, {})
        self._ids: dict[tuple[str, str], int] = {}
        self._users: dict[str, Entry] = {}

    def append(self, entries: list[Entry]) -> None:
        _check_batch(entries, self.last_seq())
        entries = [dict(entry) for entry in entries]
        self._entries += entries
        for entry in entries:
            self._ids[entry["user"], entry["id"]] = entry["seq"]
        _apply(self._users, _presence_changes(entries))
        first = _kept_from(self.first_seq(), self.last_seq(), self._retention, self._slack)
        trimmed, self._entries = self._entries[:first - self.first_seq()], self._entries[first - self.first_seq():]
        if not trimmed:
            return
        for entry in trimmed:
            key = entry["user"], entry["id"]
            if self._ids.get(key) == entry["seq"]:
                del self._ids[key]
        users = dict(self._base.users)
        _apply(users, _presence_changes(trimmed))
        self._base = Base(trimmed[-1]["seq"], trimmed[-1]["term"], users)

    def read(self, after: int, limit: int) -> list[Entry]:
        if limit <= 0:
            return []
        start = max(after - self._base.seq, 0)
        return [dict(entry) for entry in self._entries[start:start + limit]]

    def latest(self, limit: int) -> list[Entry]:
        if limit <= 0:
            return []
        return [dict(entry) for entry in self._entries[-limit:]]

    def last_seq(self) -> int:
        return self._base.seq + len(self._entries)

    def last_term(self) -> int:
        return self._entries[-1]["term"] if self._entries else self._base.term

    def first_seq(self) -> int:
        return self._base.seq + 1

    def base(self) -> Base:
        return Base(self._base.seq, self._base.term, {user: dict(join) for user, join in self._base.users.items()})

    def install(self, base: Base) -> None:
        _check_base(base)
        users = {join["user"]: dict(join) for join in sorted(base.users.values(), key=itemgetter("seq"))}
        self._base = Base(base.seq, base.term, users)
        self._entries = []
        self._ids = {}
        self._users = {user: dict(join) for user, join in users.items()}

    def find(self, user: str, id: str) -> int | None:
        return self._ids.get((user, id))

    def users(self) -> dict[str, Entry]:
        return {user: dict(join) for user, join in self._users.items()}

    def close(self) -> None:
        pass


class _Checkpointer(threading.Thread):
    """Copies the write-ahead log into the database file, on a connection of its own.

    The copy and its fsync take milliseconds; SQLite's automatic checkpoint would spend
    them inside a commit, stalling the event loop (the sqlite3 module lets go of the GIL
    while SQLite works, so here they do not). A PASSIVE checkpoint never blocks the writer.
    """

    def __init__(self, path: str) -> None:
        super().__init__(name="dsd-checkpoint", daemon=True)
        self._path = path
        self._due = threading.Event()
        self._stopping = False

    def run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None)
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if self._stopping:
                    return
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as error:  # the next one copies what this one could not
                    log.warning("%s: checkpoint failed: %s", self._path, error)
        finally:
            db.close()

    def request(self) -> None:
        self._due.set()

    def stop(self) -> None:
        self._stopping = True
        self._due.set()
        self.join()


class SqliteStore:
    """The store in an SQLite file (WAL, synchronous=NORMAL): survives restarts.

    synchronous=NORMAL may lose the last transactions to a power cut, never to a crash of
    the daemon, and a lost tail is replicated on the other daemons anyway. The WAL is
    checkpointed by a `_Checkpointer` every CHECKPOINT_EVERY transactions, not in a commit.
    """

    def __init__(self, path: str, retention: int) -> None:
        self.path = path
        self._retention = _check_retention(retention)
        self._slack = retention_slack(retention)
        # hash((user, id)) of the retained entries, counted: `find` asks SQLite only on a hit,
        # and nearly every proposal is new (about 9 MB at the default retention of 100,000).
        self._keys: Counter[int] = Counter()
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
                for statement in _SCHEMA_1 + _SCHEMA_2:
                    self._db.execute(statement)
                self._db.execute("INSERT INTO base (seq, term) VALUES (0, 0)")
            elif application_id != APPLICATION_ID:
                raise StoreError(f"{self.path}: not a dsd chat store")
            elif version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: chat store schema version {version} is newer than this dsd's "
                    f"({SCHEMA_VERSION}); upgrade dsd or move the file away"
                )
            elif version == 1:
                self._upgrade_from_1()
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            base_seq, base_term = self._db.execute("SELECT seq, term FROM base").fetchone()
            last = self._db.execute("SELECT seq, term FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
            self._base_seq, self._base_term = base_seq, base_term
            self._last, self._last_term = last or (base_seq, base_term or 0)
            self._trim()
            self._keys = Counter(hash(key) for key in self._db.execute("SELECT user, id FROM entries"))
        # Only now: never switch the journal of a file that turned out not to be ours.
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA wal_autocheckpoint = 0")
        self._transactions = 0
        self._checkpointer = _Checkpointer(self.path)
        self._checkpointer.start()

    def _upgrade_from_1(self) -> None:
        """Add the base; the presence at it is known only if nothing was trimmed yet."""
        for statement in _SCHEMA_2:
            self._db.execute(statement)
        first = self._db.execute("SELECT MIN(seq) FROM entries").fetchone()[0]
        if first is None or first == 1:
            self._db.execute("INSERT INTO base (seq, term) VALUES (0, 0)")
        else:
            self._db.execute("INSERT INTO base (seq, term) VALUES (?, NULL)", (first - 1,))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _trim(self) -> list[tuple[str, str]]:
        """Delete what retention no longer keeps, moving the base forward; inside a transaction.

        Returns the (user, id) of the entries deleted."""
        first = _kept_from(self._base_seq + 1, self._last, self._retention, self._slack)
        if first == self._base_seq + 1:
            return []
        deleted = self._db.execute("SELECT user, id FROM entries WHERE seq < ?", (first,)).fetchall()
        if self._base_term is not None:
            trimmed = _entries(self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE seq < ? AND kind != 'message' ORDER BY seq", (first,)
            ))
            self._set_presence("base_presence", _presence_changes(trimmed))
            self._base_term = self._db.execute("SELECT term FROM entries WHERE seq = ?", (first - 1,)).fetchone()[0]
        self._base_seq = first - 1
        self._db.execute("UPDATE base SET seq = ?, term = ?", (self._base_seq, self._base_term))
        self._db.execute("DELETE FROM entries WHERE seq < ?", (first,))
        return deleted

    def _set_presence(self, table: str, changes: dict[str, Entry | None]) -> None:
        gone = [(user,) for user, join in changes.items() if join is None]
        self._db.executemany(f"DELETE FROM {table} WHERE user = ?", gone)
        joined = [_row(join) for join in changes.values() if join is not None]
        self._db.executemany(f"INSERT OR REPLACE INTO {table} ({_COLUMNS}) VALUES ({_PLACEHOLDERS})", joined)

    def append(self, entries: list[Entry]) -> None:
        _check_batch(entries, self._last)
        if not entries:
            return
        saved = self._base_seq, self._base_term, self._last, self._last_term
        try:
            with self._transaction():
                self._db.executemany(_INSERT, map(_row, entries))
                self._set_presence("presence", _presence_changes(entries))
                self._last, self._last_term = entries[-1]["seq"], entries[-1]["term"]
                deleted = self._trim()
        except BaseException:
            self._base_seq, self._base_term, self._last, self._last_term = saved
            raise
        self._transactions += 1
        if self._transactions % CHECKPOINT_EVERY == 0:
            self._checkpointer.request()
        self._keys.update(hash((entry["user"], entry["id"])) for entry in entries)
        for key in deleted:
            digest = hash(key)
            self._keys[digest] -= 1
            if not self._keys[digest]:
                del self._keys[digest]

    def install(self, base: Base) -> None:
        _check_base(base)
        joins: dict[str, Entry | None] = {
            join["user"]: join for join in sorted(base.users.values(), key=itemgetter("seq"))
        }
        with self._transaction():
            self._db.execute("DELETE FROM entries")
            for table in ("presence", "base_presence"):
                self._db.execute(f"DELETE FROM {table}")
                self._set_presence(table, joins)
            self._db.execute("UPDATE base SET seq = ?, term = ?", (base.seq, base.term))
        self._base_seq, self._base_term = base.seq, base.term
        self._last, self._last_term = base.seq, base.term
        self._keys.clear()

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

    def last_term(self) -> int:
        return self._last_term

    def first_seq(self) -> int:
        return self._base_seq + 1

    def base(self) -> Base | None:
        if self._base_term is None:
            return None
        users = _entries(self._db.execute(f"SELECT {_COLUMNS} FROM base_presence ORDER BY seq"))
        return Base(self._base_seq, self._base_term, {join["user"]: join for join in users})

    def find(self, user: str, id: str) -> int | None:
        if hash((user, id)) not in self._keys:
            return None
        row = self._db.execute(
            "SELECT seq FROM entries WHERE user = ? AND id = ? ORDER BY seq DESC LIMIT 1", (user, id)
        ).fetchone()
        return None if row is None else row[0]

    def users(self) -> dict[str, Entry]:
        joins = _entries(self._db.execute(f"SELECT {_COLUMNS} FROM presence ORDER BY seq"))
        return {join["user"]: join for join in joins}

    def close(self) -> None:
        self._checkpointer.stop()
        self._db.close()  # the last connection: SQLite checkpoints and removes the WAL
