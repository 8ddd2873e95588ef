"""This daemon's copy of the chat log: the committed prefix and the uncommitted tail, and their writes.

The store holds the whole log, committed or not, so that what a daemon acknowledges
survives its crash (Raft's persisted log). The uncommitted tail is mirrored here, so the
sequencer replicates it without reading the store. Writes made during one input are
gathered and go to the store in one transaction at `sync`, which the core calls before
it returns any action: nothing leaves the daemon before what it says is on disk.
"""

from __future__ import annotations

from dsd.core.chat import config as configs
from dsd.core.chat.config import Config
from dsd.core.link_messages import Entry
from dsd.store import Base, Store


class ChatLog:
    """Owns `commit`, `tail` and the latest configuration; every change of the log goes through here."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.commit = store.committed()
        self.commit_term = store.term_at(self.commit) or 0
        self.tail: list[Entry] = store.read(self.commit, 2**62)
        self.config, self.config_seq = self._load_config()
        self._unsaved: list[Entry] = []  # appended since the last sync
        self._commit_due = False
        self._committed_unsaved: dict[tuple[str, str], int] = {}  # (user, id) -> seq, committed since the last sync

    def _load_config(self) -> tuple[Config | None, int]:
        entry = self.store.last_config()
        return (None, 0) if entry is None else (configs.parse(entry["text"]), entry["seq"])

    @property
    def last(self) -> int:
        return self.commit + len(self.tail)

    @property
    def last_term(self) -> int:
        return self.tail[-1]["term"] if self.tail else self.commit_term

    def term_at(self, seq: int) -> int | None:
        """The term of the entry at `seq`, None if this log does not hold it (beyond it, or trimmed)."""
        if seq > self.commit:
            index = seq - self.commit - 1
            return self.tail[index]["term"] if index < len(self.tail) else None
        if seq == self.commit:
            return self.commit_term
        return self.store.term_at(seq)

    def matches(self, seq: int, term: int) -> bool:
        """Log matching: this log holds the entry (seq, term), so it holds the same log up to it.
        The committed prefix is the same on every daemon, trimmed or not."""
        return seq < self.commit or self.term_at(seq) == term

    def append(self, entries: list[Entry]) -> None:
        """Add entries after `last` (uncommitted; written at `sync`)."""
        for entry in entries:
            self.tail.append(entry)
            self._unsaved.append(entry)
            if entry["kind"] == "config":
                self.config, self.config_seq = configs.parse(entry["text"]), entry["seq"]

    def truncate(self, after: int) -> None:
        """Drop the uncommitted entries after `after`: they conflict with the sequencer's log."""
        assert after >= self.commit, "a committed entry is never truncated"
        if after >= self.last:
            return
        self.sync()
        del self.tail[after - self.commit:]
        self.store.truncate(after)
        if self.config_seq > after:
            self.config, self.config_seq = self._load_config()

    def replace_tail(self, entries: list[Entry]) -> None:
        """A new sequencer adopts `entries` (from its best voter) as everything after `commit`."""
        self.truncate(self.commit)
        self.append(entries)

    def take_committed(self, seq: int) -> list[Entry]:
        """Entries up to `seq` become committed (stored at `sync`); returns them."""
        count = seq - self.commit
        if count <= 0:
            return []
        entries, self.tail = self.tail[:count], self.tail[count:]
        self.commit = seq
        self.commit_term = entries[-1]["term"]
        self._commit_due = True
        self._committed_unsaved.update(((entry["user"], entry["id"]), entry["seq"]) for entry in entries)
        return entries

    def read(self, after: int, limit: int) -> list[Entry]:
        """Entries after `after`, committed (from the store) then uncommitted."""
        if after < self.commit and self._commit_due:
            self.sync()  # entries committed by this input are in the store only from here on
        entries = self.store.read(after, min(limit, self.commit - after)) if after < self.commit else []
        start = max(after, self.commit) - self.commit
        return entries + self.tail[start:start + limit - len(entries)]

    def find(self, user: str, id: str) -> int | None:
        """The seq of the committed entry (user, id), also one trimmed within the store's dedupe window.

        One committed by this input is not in the store's committed part before `sync`: it is
        looked up here, so that a send in the same batch as a commit costs no transaction of its own."""
        seq = self._committed_unsaved.get((user, id))
        return seq if seq is not None else self.store.find(user, id)

    def install(self, base: Base) -> None:
        """Go on from a snapshot: the entries up to `base` were trimmed before this daemon got them.
        Its uncommitted entries go too; the sequencer sends what follows the base."""
        self.sync()
        self.store.install(base)
        self.commit, self.commit_term, self.tail = base.seq, base.term, []
        self.config, self.config_seq = self._load_config()

    def sync(self) -> None:
        """Write what this input appended and committed, in one transaction."""
        if not self._unsaved and not self._commit_due:
            return
        unsaved, self._unsaved = self._unsaved, []
        self.store.append(unsaved, commit=self.commit if self._commit_due else None)
        self._commit_due = False
        self._committed_unsaved.clear()
