"""The chat log store: the replicated log, committed and not, its commit point, and the chat state.

The protocol core (``dsd.core.chat``) calls a :class:`Store` synchronously from the event
loop. It holds what a Raft-style chat must not forget across a crash:

* the log: entries in seq order, the uncommitted ones included, since a follower acknowledges
  entries only once they are stored; a leader of a later epoch may `truncate` an uncommitted
  suffix that conflicts with its own log;
* the commit point: entries up to it are committed, never change and update presence;
* the chat state (:class:`ChatState`): the cluster, the epoch and the vote in that epoch;
* the configuration: which daemons vote is itself an entry, of kind "config", whose text the
  store never reads; `last_config` is the latest one, committed or not.

Each call that writes is one transaction. :class:`SqliteStore` keeps everything across
restarts; :class:`MemoryStore` behaves the same (retention included) for tests, the simulator
and a daemon without a state_dir.

Presence is kept apart from the entries, so ``users()`` stays right after retention has
trimmed the join entry that made someone present. Retention keeps the newest `retention`
committed entries (and up to its slack more) and never trims an uncommitted one.

The log need not start at seq 1: its *base* is the last entry before the first retained one
(seq, term, who was present after it, and the latest config at or before it). Retention moves
the base forward as it trims; `install` sets it from a snapshot when a daemon must catch up on
entries the others no longer keep, and the log then continues at base + 1. The (user, id) of
trimmed entries stay findable for DEDUPE_SECONDS, so a retried send is still recognised.
"""

from __future__ import annotations

import heapq
import logging
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Protocol

log = logging.getLogger("dsd.store")

Entry = dict[str, Any]  # typed as dsd.core.link_messages.Entry, whose keys are FIELDS
Key = tuple[str, str]  # (user, id)

FIELDS = ("seq", "term", "kind", "user", "text", "id", "server", "session", "time")  # also the columns' order
KINDS = ("message", "join", "leave", "timeout", "config")
PRESENCE_KINDS = ("join", "leave", "timeout")

FILENAME = "chat.sqlite3"
SCHEMA_VERSION = 3  # 2: the base table and the presence at the base; 3: the uncommitted log and the chat state
APPLICATION_ID = 0x44534443  # "DSDC" in the file header: this file is a dsd chat store
MAX_SLACK = 1000
CHECKPOINT_EVERY = 256  # transactions between two checkpoints of the write-ahead log
DEDUPE_SECONDS = 3600  # how long (in entry time) a trimmed entry's (user, id) is still found

_KEYS = frozenset(FIELDS)
_COLUMNS = ", ".join(FIELDS)
_PLACEHOLDERS = ", ".join("?" * len(FIELDS))
_INSERT = f"INSERT INTO entries ({_COLUMNS}) VALUES ({_PLACEHOLDERS})"
_READ = f"SELECT {_COLUMNS} FROM entries WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
_PRESENCE_BETWEEN = (  # the entries that change presence
    f"SELECT {_COLUMNS} FROM entries "
    "WHERE seq > ? AND seq <= ? AND kind IN ('join', 'leave', 'timeout') ORDER BY seq"
)
_INSERT_BASE_CONFIG = f"INSERT INTO base_config ({_COLUMNS}) VALUES ({_PLACEHOLDERS})"
_CONFIG_UPTO = f"SELECT {_COLUMNS} FROM entries WHERE kind = 'config' AND seq <= ? ORDER BY seq DESC LIMIT 1"
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
# commit_point and state have one row; base_config at most one (the base's config entry).
# trimmed_ids has a row per trimmed entry (but config entries), kept for DEDUPE_SECONDS.
_SCHEMA_3 = (
    "CREATE INDEX entries_config ON entries (seq) WHERE kind = 'config'",
    "CREATE TABLE commit_point (seq INTEGER NOT NULL)",
    "CREATE TABLE state (cluster TEXT NOT NULL, epoch INTEGER NOT NULL, voted_for TEXT NOT NULL)",
    f"CREATE TABLE base_config (seq INTEGER PRIMARY KEY, user TEXT NOT NULL, {_ENTRY_COLUMNS})",
    "CREATE TABLE trimmed_ids (user TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, time REAL NOT NULL)",
    "CREATE INDEX trimmed_ids_user_id ON trimmed_ids (user, id)",
    "CREATE INDEX trimmed_ids_time ON trimmed_ids (time)",
)
_row = itemgetter(*FIELDS)


@dataclass(frozen=True)
class Base:
    """Where the retained log starts from: the entry before the first retained one.

    ``seq`` and ``term`` are that entry's (0, 0 for an untrimmed log); ``users`` is who was
    present after it: user -> the join entry that made them present, in seq order; ``config``
    is the latest config entry at or before it (None when there is none), which the log must
    keep when retention trims it away; ``ids`` are the (user, id, seq, time) of trimmed entries
    the dedupe window still holds, so that a daemon that installs the base still recognises a
    retried message (see `find`).
    """

    seq: int
    term: int
    users: dict[str, Entry]
    config: Entry | None = None
    ids: tuple[tuple[str, str, int, float], ...] = field(default=(), compare=False)  # dedupe side data


@dataclass(frozen=True)
class ChatState:
    """What the chat remembers across restarts besides its log.

    ``cluster`` is the cluster this log belongs to, ``epoch`` the latest chat epoch this daemon
    has seen (Raft's currentTerm) and ``voted_for`` whom it voted for in that epoch ("" for
    nobody): forgetting a vote would let a restarted daemon vote twice in one epoch.
    """

    cluster: str = ""
    epoch: int = 0
    voted_for: str = ""


class StoreError(Exception):
    """The store's file cannot be used; ``str(e)`` is one line naming the path."""


class Store(Protocol):
    """The chat log as the protocol core uses it.

    Every ValueError is a bug upstream, never a client's doing, and changes nothing.
    """

    def append(self, entries: list[Entry], commit: int | None = None) -> None:
        """Add entries, committed or not, continuing the log: seq = last_seq()+1, +2, ...

        With `commit`, also commit up to it (as `commit` does) in the same transaction.
        Raises ValueError, storing none of `entries`, on a gap, a repeat, a malformed entry
        or a `commit` outside committed()..the new last seq.
        """

    def truncate(self, after: int) -> None:
        """Delete every entry with seq > `after`: an uncommitted suffix that conflicts with the leader's log.

        Raises ValueError if `after` < committed() (committed entries never go) or `after` >
        last_seq(); nothing to do when `after` == last_seq().
        """

    def commit(self, seq: int) -> None:
        """Commit the entries up to `seq`: presence follows their join, leave and timeout
        entries, and retention may trim committed entries, in one transaction.

        Raises ValueError if `seq` < committed() or `seq` > last_seq(); nothing to do when
        `seq` == committed().
        """

    def committed(self) -> int:
        """The commit point: the seq of the last committed entry (the base's, 0 when there is none)."""

    def read(self, after: int, limit: int, upto: int | None = None) -> list[Entry]:
        """Held entries, committed or not, with `after` < seq (<= `upto` if given), oldest first, at most `limit`."""

    def latest(self, limit: int) -> list[Entry]:
        """The newest `limit` committed retained entries, oldest first."""

    def last_seq(self) -> int:
        """The seq of the last entry held, committed or not (or the base's), 0 when there is none."""

    def last_term(self) -> int:
        """The term of the last entry held, committed or not (or the base's), 0 when there is none."""

    def term_at(self, seq: int) -> int | None:
        """The term of the entry at `seq` (the base's at base().seq); None where no entry is held
        (and at the base of a store whose base is not known)."""

    def first_seq(self) -> int:
        """The oldest retained seq, or last_seq() + 1 when nothing is retained."""

    def base(self) -> Base | None:
        """The base the retained entries continue from; None when it is not known."""

    def install(self, base: Base) -> None:
        """Replace everything, uncommitted entries included, by a snapshot: no entries,
        `base.users` present, `base.config` the last config, `base.ids` the trimmed ids, committed up to
        base.seq, the log continuing at base.seq + 1.

        Raises ValueError, changing nothing, on a malformed base.
        """

    def find(self, user: str, id: str) -> int | None:
        """The seq of the newest committed entry with this (user, id): dedupes retried sends.

        Finds trimmed entries too, for at least DEDUPE_SECONDS of entry time after theirs: a
        trim forgets those older than the last committed entry's time minus DEDUPE_SECONDS.
        """

    def users(self) -> dict[str, Entry]:
        """Who is present as of the commit point: user -> the join entry that made them present, in seq order."""

    def last_config(self) -> Entry | None:
        """The latest config entry, committed or not, else the base's, else None. Cheap."""

    def state(self) -> ChatState:
        """The chat state last saved (ChatState() in a new store)."""

    def save_state(self, state: ChatState) -> None:
        """Store `state` durably before returning. Raises ValueError on a malformed state."""

    def close(self) -> None:
        """Release the store; it is not used afterwards."""


def retention_slack(retention: int) -> int:
    """How far past `retention` a store grows before trimming: 10%, at most MAX_SLACK.

    Trimming in batches keeps most commits free of a delete.
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


def _check_entry(entry: Entry) -> None:
    """The fields the store itself computes with; the seq is checked against the log by the caller."""
    if entry.keys() != _KEYS:
        raise ValueError(f"entry keys {sorted(entry)} != {sorted(_KEYS)}")
    if type(entry["seq"]) is not int:
        raise ValueError(f"entry seq {entry['seq']!r} is not an integer")
    if type(entry["term"]) is not int or entry["term"] < 0:
        raise ValueError(f"entry {entry['seq']}: term {entry['term']!r} is not an integer >= 0")
    if entry["kind"] not in KINDS:
        raise ValueError(f"entry {entry['seq']}: unknown kind {entry['kind']!r}")
    if type(entry["time"]) not in (int, float):
        raise ValueError(f"entry {entry['seq']}: time {entry['time']!r} is not a number")


def _check_batch(entries: list[Entry], last_seq: int) -> None:
    for expected, entry in enumerate(entries, last_seq + 1):
        _check_entry(entry)
        if entry["seq"] != expected:
            raise ValueError(f"entry seq {entry['seq']!r} where {expected} is due (a gap or a repeat)")


def _check_seq(what: str, seq: int, low: int, high: int) -> None:
    if type(seq) is not int or not low <= seq <= high:
        raise ValueError(f"{what} {seq!r} is not a seq in {low}..{high}")


def _check_base(base: Base) -> None:
    if type(base.seq) is not int or type(base.term) is not int or base.seq < 0 or base.term < 0:
        raise ValueError(f"base seq {base.seq!r} and term {base.term!r} must be integers >= 0")
    for user, join in base.users.items():
        if join.keys() != _KEYS or join["kind"] != "join" or join["user"] != user:
            raise ValueError(f"the presence of {user!r} is not a join entry of that user")
        if type(join["seq"]) is not int or not 0 < join["seq"] <= base.seq:
            raise ValueError(f"the join of {user!r} at seq {join['seq']!r} is not before the base {base.seq}")
    config = base.config
    if config is not None:
        if type(config) is not dict or config.keys() != _KEYS or config["kind"] != "config":
            raise ValueError("the base's config is not a config entry")
        if type(config["seq"]) is not int or not 0 < config["seq"] <= base.seq:
            raise ValueError(f"the base's config at seq {config['seq']!r} is not before the base {base.seq}")
    for row in base.ids:
        if (len(row) != 4 or not isinstance(row[0], str) or not isinstance(row[1], str) or type(row[2]) is not int
                or not 0 < row[2] <= base.seq or type(row[3]) not in (int, float)):
            raise ValueError(f"a trimmed id {row!r} is not (user, id, seq up to the base, time)")


def _check_state(state: ChatState) -> None:
    if (
        type(state) is not ChatState
        or type(state.cluster) is not str
        or type(state.voted_for) is not str
        or type(state.epoch) is not int
        or state.epoch < 0
    ):
        raise ValueError(f"{state!r} is not a ChatState of two strings and an epoch >= 0")


def _presence_changes(entries: Iterable[Entry]) -> dict[str, Entry | None]:
    """What `entries` do to presence: user -> their latest join, or None if they left."""
    changes: dict[str, Entry | None] = {}
    for entry in entries:
        if entry["kind"] == "join":
            changes.pop(entry["user"], None)  # re-insert: joins stay in seq order
            changes[entry["user"]] = entry
        elif entry["kind"] in ("leave", "timeout"):
            changes[entry["user"]] = None
    return changes


def _apply(users: dict[str, Entry], changes: dict[str, Entry | None]) -> None:
    for user, join in changes.items():
        users.pop(user, None)
        if join is not None:
            users[user] = dict(join)


def _entries(rows: Iterable[tuple[Any, ...]]) -> list[Entry]:
    return [dict(zip(FIELDS, row)) for row in rows]


def _copy(entry: Entry | None) -> Entry | None:
    return None if entry is None else dict(entry)


def _last_config(entries: list[Entry], otherwise: Entry | None) -> Entry | None:
    """A copy of the last config entry among `entries`, else `otherwise`."""
    return next((dict(entry) for entry in reversed(entries) if entry["kind"] == "config"), otherwise)


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
        self._committed = 0
        self._users: dict[str, Entry] = {}
        self._ids: dict[Key, int] = {}  # the newest committed retained seq of each (user, id)
        # The trimmed entries' seqs by (user, id), oldest first, and a heap of (time, seq, key)
        # with a row for each of those seqs: the oldest in entry time are pruned first.
        self._trimmed: dict[Key, list[int]] = {}
        self._trimmed_times: list[tuple[float, int, Key]] = []
        self._config: Entry | None = None  # last_config()
        self._state = ChatState()

    def append(self, entries: list[Entry], commit: int | None = None) -> None:
        _check_batch(entries, self.last_seq())
        if commit is not None:
            _check_seq("commit", commit, self._committed, self.last_seq() + len(entries))
        self._entries += [dict(entry) for entry in entries]
        self._config = _last_config(entries, self._config)
        if commit is not None:
            self.commit(commit)

    def truncate(self, after: int) -> None:
        _check_seq("truncate after", after, self._committed, self.last_seq())
        del self._entries[after - self._base.seq:]
        if self._config is not None and self._config["seq"] > after:
            self._config = _last_config(self._entries, self._base.config)

    def commit(self, seq: int) -> None:
        _check_seq("commit", seq, self._committed, self.last_seq())
        committing = self._entries[self._committed - self._base.seq:seq - self._base.seq]
        for entry in committing:
            self._ids[entry["user"], entry["id"]] = entry["seq"]
        _apply(self._users, _presence_changes(committing))
        self._committed = seq
        self._trim()

    def _trim(self) -> None:
        base = self._base
        first = _kept_from(base.seq + 1, self._committed, self._retention, self._slack)
        if first == base.seq + 1:
            return
        trimmed = self._entries[:first - base.seq - 1]
        del self._entries[:len(trimmed)]
        for entry in trimmed:
            key = entry["user"], entry["id"]
            if self._ids.get(key) == entry["seq"]:
                del self._ids[key]
            if entry["kind"] != "config":
                self._trimmed.setdefault(key, []).append(entry["seq"])
                heapq.heappush(self._trimmed_times, (entry["time"], entry["seq"], key))
        oldest = self._entries[self._committed - first]["time"] - DEDUPE_SECONDS
        while self._trimmed_times and self._trimmed_times[0][0] < oldest:
            _, seq, key = heapq.heappop(self._trimmed_times)
            self._trimmed[key].remove(seq)
            if not self._trimmed[key]:
                del self._trimmed[key]
        users = dict(base.users)
        _apply(users, _presence_changes(trimmed))
        self._base = Base(first - 1, trimmed[-1]["term"], users, _last_config(trimmed, base.config))

    def committed(self) -> int:
        return self._committed

    def read(self, after: int, limit: int, upto: int | None = None) -> list[Entry]:
        if limit <= 0:
            return []
        start = max(after - self._base.seq, 0)
        stop = start + limit if upto is None else min(start + limit, max(upto - self._base.seq, 0))
        return [dict(entry) for entry in self._entries[start:stop]]

    def latest(self, limit: int) -> list[Entry]:
        if limit <= 0:
            return []
        stop = self._committed - self._base.seq
        return [dict(entry) for entry in self._entries[max(stop - limit, 0):stop]]

    def last_seq(self) -> int:
        return self._base.seq + len(self._entries)

    def last_term(self) -> int:
        return self._entries[-1]["term"] if self._entries else self._base.term

    def term_at(self, seq: int) -> int | None:
        if seq == self._base.seq:
            return self._base.term
        if self._base.seq < seq <= self.last_seq():
            return self._entries[seq - self._base.seq - 1]["term"]
        return None

    def first_seq(self) -> int:
        return self._base.seq + 1

    def base(self) -> Base:
        users = {user: dict(join) for user, join in self._base.users.items()}
        ids = tuple(sorted(((key[0], key[1], seq, time) for time, seq, key in self._trimmed_times),
                           key=lambda row: (row[2], row[0], row[1])))
        return Base(self._base.seq, self._base.term, users, _copy(self._base.config), ids)

    def install(self, base: Base) -> None:
        _check_base(base)
        users = {join["user"]: dict(join) for join in sorted(base.users.values(), key=itemgetter("seq"))}
        self._base = Base(base.seq, base.term, users, _copy(base.config))
        self._entries = []
        self._committed = base.seq
        self._users = {user: dict(join) for user, join in users.items()}
        self._ids = {}
        self._trimmed = {}
        self._trimmed_times = []
        for user, id, seq, time in sorted(base.ids, key=lambda row: row[2]):
            self._trimmed.setdefault((user, id), []).append(seq)
            heapq.heappush(self._trimmed_times, (time, seq, (user, id)))
        self._config = _copy(base.config)

    def find(self, user: str, id: str) -> int | None:
        key = user, id
        if key in self._ids:
            return self._ids[key]
        return self._trimmed[key][-1] if key in self._trimmed else None

    def users(self) -> dict[str, Entry]:
        return {user: dict(join) for user, join in self._users.items()}

    def last_config(self) -> Entry | None:
        return _copy(self._config)

    def state(self) -> ChatState:
        return self._state

    def save_state(self, state: ChatState) -> None:
        _check_state(state)
        self._state = state

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
    the daemon (a committed transaction is in the WAL, which the kernel holds), so what the
    daemon acknowledged after storing it survives the daemon. The WAL is checkpointed by a
    `_Checkpointer` every CHECKPOINT_EVERY transactions, not in a commit.

    The positions (base, last entry, commit point, last config) are cached; a transaction
    that fails re-reads them from the file it rolled back.
    """

    def __init__(self, path: str, retention: int) -> None:
        self.path = path
        self._retention = _check_retention(retention)
        self._slack = retention_slack(retention)
        # hash((user, id)) of the held entries and the trimmed ids, counted: `find` asks SQLite
        # only on a hit, and nearly every proposal is new (about 9 MB at the default retention
        # of 100,000). _key_changes collects a transaction's changes until it commits.
        self._keys: Counter[int] = Counter()
        self._key_changes: Counter[int] = Counter()
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
                version = 2  # an empty version 2 file, upgraded below like any other
            elif application_id != APPLICATION_ID:
                raise StoreError(f"{self.path}: not a dsd chat store")
            elif version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: chat store schema version {version} is newer than this dsd's "
                    f"({SCHEMA_VERSION}); upgrade dsd or move the file away"
                )
            if version == 1:
                self._upgrade_from_1()
            if version <= 2:
                self._upgrade_from_2()
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._read_positions()
            self._trim()
            self._keys = Counter(hash(key) for key in self._db.execute(
                "SELECT user, id FROM entries UNION ALL SELECT user, id FROM trimmed_ids"
            ))
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

    def _upgrade_from_2(self) -> None:
        """Add the commit point, the chat state, the base config and the trimmed ids.

        Older files held committed entries only, and no config entries: everything is
        committed, the epoch is the highest term seen, and there is no config anywhere.
        """
        for statement in _SCHEMA_3:
            self._db.execute(statement)
        last, term = self._db.execute("SELECT MAX(seq), MAX(term) FROM entries").fetchone()
        base_seq, base_term = self._db.execute("SELECT seq, term FROM base").fetchone()
        epoch = max((t for t in (term, base_term) if t is not None), default=0)
        self._db.execute("INSERT INTO commit_point (seq) VALUES (?)", (base_seq if last is None else last,))
        self._db.execute("INSERT INTO state (cluster, epoch, voted_for) VALUES ('', ?, '')", (epoch,))

    def _read_positions(self) -> None:
        db = self._db
        self._base_seq, self._base_term = db.execute("SELECT seq, term FROM base").fetchone()
        last = db.execute("SELECT seq, term FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        self._last, self._last_term = last or (self._base_seq, self._base_term or 0)
        self._committed = db.execute("SELECT seq FROM commit_point").fetchone()[0]
        self._config = self._config_upto(self._last)
        # The uncommitted presence entries, by seq: a commit applies them without a query.
        self._uncommitted_presence = {
            entry["seq"]: entry for entry in _entries(db.execute(_PRESENCE_BETWEEN, (self._committed, self._last)))
        }

    def _config_upto(self, seq: int) -> Entry | None:
        """The latest config entry held at or before `seq`, else the base's (an indexed look-up)."""
        found = _entries(self._db.execute(_CONFIG_UPTO, (seq,)))
        return found[0] if found else self._base_config()

    def _base_config(self) -> Entry | None:
        found = _entries(self._db.execute(f"SELECT {_COLUMNS} FROM base_config"))
        return found[0] if found else None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[None]:
        """A write transaction: the cached positions and key counts follow the file, committed or rolled back."""
        self._key_changes = Counter()
        try:
            with self._transaction():
                yield
        except BaseException:
            self._read_positions()
            raise
        for digest, change in self._key_changes.items():
            count = self._keys[digest] + change
            if count:
                self._keys[digest] = count
            else:
                del self._keys[digest]
        self._transactions += 1
        if self._transactions % CHECKPOINT_EVERY == 0:
            self._checkpointer.request()

    def _forget_keys(self, keys: Iterable[Key]) -> None:
        self._key_changes.subtract(hash(key) for key in keys)

    def _trim(self) -> None:
        """Delete the committed entries retention no longer keeps, moving the base forward; inside a transaction.

        A trimmed entry's (user, id) moves to trimmed_ids (but a config's), and the trimmed ids
        older than DEDUPE_SECONDS before the last committed entry go.
        """
        first = _kept_from(self._base_seq + 1, self._committed, self._retention, self._slack)
        if first == self._base_seq + 1:
            return
        db = self._db
        db.execute(
            "INSERT INTO trimmed_ids (user, id, seq, time) "
            "SELECT user, id, seq, time FROM entries WHERE seq < ? AND kind != 'config'",
            (first,),
        )
        configs = _entries(db.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE kind = 'config' AND seq < ? ORDER BY seq", (first,)
        ))
        if configs:
            self._forget_keys((config["user"], config["id"]) for config in configs)
            db.execute("DELETE FROM base_config")
            db.execute(_INSERT_BASE_CONFIG, _row(configs[-1]))
        if self._base_term is not None:
            trimmed = _entries(db.execute(_PRESENCE_BETWEEN, (self._base_seq, first - 1)))
            self._set_presence("base_presence", _presence_changes(trimmed))
            self._base_term = db.execute("SELECT term FROM entries WHERE seq = ?", (first - 1,)).fetchone()[0]
        self._base_seq = first - 1
        db.execute("UPDATE base SET seq = ?, term = ?", (self._base_seq, self._base_term))
        db.execute("DELETE FROM entries WHERE seq < ?", (first,))
        newest = db.execute("SELECT time FROM entries WHERE seq = ?", (self._committed,)).fetchone()[0]
        oldest = newest - DEDUPE_SECONDS
        self._forget_keys(db.execute("SELECT user, id FROM trimmed_ids WHERE time < ?", (oldest,)).fetchall())
        db.execute("DELETE FROM trimmed_ids WHERE time < ?", (oldest,))

    def _set_presence(self, table: str, changes: dict[str, Entry | None]) -> None:
        if not changes:  # nearly every commit: messages only
            return
        gone = [(user,) for user, join in changes.items() if join is None]
        self._db.executemany(f"DELETE FROM {table} WHERE user = ?", gone)
        joined = [_row(join) for join in changes.values() if join is not None]
        self._db.executemany(f"INSERT OR REPLACE INTO {table} ({_COLUMNS}) VALUES ({_PLACEHOLDERS})", joined)

    def _commit(self, seq: int) -> None:
        """Commit up to `seq` (> committed()); inside a transaction."""
        pending = self._uncommitted_presence
        committing = [pending.pop(at) for at in [at for at in pending if at <= seq]]
        self._set_presence("presence", _presence_changes(committing))
        self._db.execute("UPDATE commit_point SET seq = ?", (seq,))
        self._committed = seq
        self._trim()

    def append(self, entries: list[Entry], commit: int | None = None) -> None:
        _check_batch(entries, self._last)
        if commit is not None:
            _check_seq("commit", commit, self._committed, self._last + len(entries))
        if not entries and commit in (None, self._committed):
            return
        with self._write():
            if entries:
                self._db.executemany(_INSERT, map(_row, entries))
                self._key_changes.update(hash((entry["user"], entry["id"])) for entry in entries)
                self._last, self._last_term = entries[-1]["seq"], entries[-1]["term"]
                self._config = _last_config(entries, self._config)
                self._uncommitted_presence.update(
                    (entry["seq"], dict(entry)) for entry in entries if entry["kind"] in PRESENCE_KINDS)
            if commit is not None and commit > self._committed:
                self._commit(commit)

    def truncate(self, after: int) -> None:
        _check_seq("truncate after", after, self._committed, self._last)
        if after == self._last:
            return
        with self._write():
            self._forget_keys(self._db.execute("SELECT user, id FROM entries WHERE seq > ?", (after,)).fetchall())
            self._db.execute("DELETE FROM entries WHERE seq > ?", (after,))
            self._last, self._last_term = after, self.term_at(after) or 0
            for seq in [seq for seq in self._uncommitted_presence if seq > after]:
                del self._uncommitted_presence[seq]
            if self._config is not None and self._config["seq"] > after:
                self._config = self._config_upto(after)

    def commit(self, seq: int) -> None:
        _check_seq("commit", seq, self._committed, self._last)
        if seq == self._committed:
            return
        with self._write():
            self._commit(seq)

    def committed(self) -> int:
        return self._committed

    def install(self, base: Base) -> None:
        _check_base(base)
        joins: dict[str, Entry | None] = {
            join["user"]: join for join in sorted(base.users.values(), key=itemgetter("seq"))
        }
        with self._write():
            for table in ("entries", "presence", "base_presence", "base_config", "trimmed_ids"):
                self._db.execute(f"DELETE FROM {table}")
            for table in ("presence", "base_presence"):
                self._set_presence(table, joins)
            if base.config is not None:
                self._db.execute(_INSERT_BASE_CONFIG, _row(base.config))
            self._db.executemany("INSERT INTO trimmed_ids (user, id, seq, time) VALUES (?, ?, ?, ?)", base.ids)
            self._db.execute("UPDATE base SET seq = ?, term = ?", (base.seq, base.term))
            self._db.execute("UPDATE commit_point SET seq = ?", (base.seq,))
        self._keys.clear()
        self._keys.update(hash((user, id)) for user, id, _, _ in base.ids)
        self._read_positions()

    def read(self, after: int, limit: int, upto: int | None = None) -> list[Entry]:
        if limit <= 0:  # SQLite reads a negative LIMIT as none
            return []
        return _entries(self._db.execute(_READ, (after, self._last if upto is None else upto, limit)))

    def latest(self, limit: int) -> list[Entry]:
        if limit <= 0:
            return []
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE seq <= ? ORDER BY seq DESC LIMIT ?", (self._committed, limit)
        )
        return _entries(reversed(rows.fetchall()))

    def last_seq(self) -> int:
        return self._last

    def last_term(self) -> int:
        return self._last_term

    def term_at(self, seq: int) -> int | None:
        if seq == self._base_seq:
            return self._base_term
        row = self._db.execute("SELECT term FROM entries WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else row[0]

    def first_seq(self) -> int:
        return self._base_seq + 1

    def base(self) -> Base | None:
        if self._base_term is None:
            return None
        users = _entries(self._db.execute(f"SELECT {_COLUMNS} FROM base_presence ORDER BY seq"))
        ids = tuple(self._db.execute("SELECT user, id, seq, time FROM trimmed_ids ORDER BY seq, user, id"))
        return Base(self._base_seq, self._base_term, {join["user"]: join for join in users}, self._base_config(), ids)

    def find(self, user: str, id: str) -> int | None:
        if hash((user, id)) not in self._keys:
            return None
        row = self._db.execute(
            "SELECT seq FROM entries WHERE user = ? AND id = ? AND seq <= ? ORDER BY seq DESC LIMIT 1",
            (user, id, self._committed),
        ).fetchone()
        if row is None:
            row = self._db.execute("SELECT MAX(seq) FROM trimmed_ids WHERE user = ? AND id = ?", (user, id))
            row = row.fetchone()
        return row[0]

    def users(self) -> dict[str, Entry]:
        joins = _entries(self._db.execute(f"SELECT {_COLUMNS} FROM presence ORDER BY seq"))
        return {join["user"]: join for join in joins}

    def last_config(self) -> Entry | None:
        return _copy(self._config)

    def state(self) -> ChatState:
        return ChatState(*self._db.execute("SELECT cluster, epoch, voted_for FROM state").fetchone())

    def save_state(self, state: ChatState) -> None:
        _check_state(state)
        with self._write():
            self._db.execute(
                "UPDATE state SET cluster = ?, epoch = ?, voted_for = ?",
                (state.cluster, state.epoch, state.voted_for),
            )

    def close(self) -> None:
        self._checkpointer.stop()
        self._db.close()  # the last connection: SQLite checkpoints and removes the WAL
