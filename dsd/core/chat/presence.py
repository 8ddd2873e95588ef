"""Who is in the chat: the presence table the log builds, and this daemon's client sessions.

Presence changes only by committed join, leave and timeout entries, so every daemon shows
the same users. A sequencer also counts the presence entries it has sequenced but not yet
committed, so it never admits one name twice. Sessions are the users the log places on
this daemon; each has a token bucket for its send rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsd.core.link_messages import Entry
from dsd.store import PRESENCE_KINDS


@dataclass
class Session:
    """A client connected to this daemon."""

    session: str
    last_heard: float
    tokens: float
    refilled: float


class Presence:
    """Owns the presence table, the sequencer's uncommitted presence, sessions and orphans."""

    def __init__(self, name: str, users: dict[str, Entry], burst: int) -> None:
        self.name = name
        self.burst = burst
        self.users = users  # user -> the committed join that makes them present
        self.sessions: dict[str, Session] = {}
        self.uncommitted: dict[str, Entry] = {}  # sequencer: each user's latest uncommitted presence entry
        self.orphans: dict[str, float] = {}  # sequencer: users whose daemon is gone, since when

    def present(self, user: str) -> Entry | None:
        """The join that makes `user` present, counting the sequencer's uncommitted entries."""
        entry = self.uncommitted.get(user)
        if entry is None:
            return self.users.get(user)
        return entry if entry["kind"] == "join" else None

    def sequenced(self, entry: Entry) -> None:
        if entry["kind"] in PRESENCE_KINDS:
            self.uncommitted[entry["user"]] = entry

    def forget_uncommitted(self) -> None:
        self.uncommitted = {}
        self.orphans = {}

    def committed(self, entry: Entry, now: float) -> None:
        """Apply a committed entry."""
        user = entry["user"]
        if entry["kind"] not in PRESENCE_KINDS:
            return
        if self.uncommitted.get(user) is entry:
            del self.uncommitted[user]
        self.orphans.pop(user, None)
        if entry["kind"] == "join":
            self.users[user] = entry
            session = self.sessions.get(user)
            if entry["server"] != self.name:
                self.sessions.pop(user, None)
            elif session is None or session.session != entry["session"]:
                self.sessions[user] = Session(entry["session"], now, float(self.burst), now)
        else:
            self.users.pop(user, None)
            if entry["server"] == self.name:
                self.sessions.pop(user, None)

    def reset(self, users: dict[str, Entry], now: float) -> None:
        """After a snapshot: the table is `users`; sessions follow it."""
        self.users = users
        self.uncommitted = {}
        self.sync_sessions(now)

    def sync_sessions(self, now: float) -> None:
        """Sessions for the users the log places on this daemon, and only them; new ones get
        client_timeout to come back (after a restart, or a snapshot that placed them here)."""
        for user, client in list(self.sessions.items()):
            entry = self.users.get(user)
            if entry is None or entry["server"] != self.name or entry["session"] != client.session:
                del self.sessions[user]
        for user, entry in self.users.items():
            if entry["server"] == self.name and user not in self.sessions:
                self.sessions[user] = Session(entry["session"], now, float(self.burst), now)

    def take_token(self, client: Session, now: float, rate: float) -> bool:
        client.tokens = min(float(self.burst), client.tokens + (now - client.refilled) * rate)
        client.refilled = now
        if client.tokens < 1:
            return False
        client.tokens -= 1
        return True

    def orphaned(self, alive: set[str], now: float) -> list[Entry]:
        """Sequencer: note users whose daemon is not alive; returns the joins of those gone for good
        (since `now` - client_timeout is the caller's test)."""
        orphans = {
            user: entry for user in self.users
            if (entry := self.present(user)) is not None and entry["server"] not in alive
        }
        for user in set(self.orphans) - set(orphans):
            del self.orphans[user]
        for user in orphans:
            self.orphans.setdefault(user, now)
        return [orphans[user] for user in sorted(orphans)]
