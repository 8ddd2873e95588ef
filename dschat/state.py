"""The client's bookkeeping, with no sockets and no clock: what was shown, what is owed.

Entries reach the client three ways (history at start, the feed, `chat.since` after a
gap or a failover) and may overlap or arrive out of order. :class:`ChatState` turns
them into one stream in `seq` order with no gap and no repeat, and keeps every message
the user typed until the daemon acknowledges it, so that a failover can re-send exactly
the unacknowledged ones with their original ids.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Iterable

Entry = dict[str, Any]


def new_token(nbytes: int = 24) -> str:
    """A random token of ``[A-Za-z0-9_-]``: 32 characters for a session, 22 for a message id."""
    return secrets.token_urlsafe(nbytes)


@dataclass
class Outgoing:
    """One message the user typed."""

    id: str
    text: str
    line: int  # 1-based position among the lines sent, for reports
    seq: int | None = None  # set once acknowledged
    error: str | None = None  # set when the daemon refused it for good (too_large, bad_args)

    @property
    def settled(self) -> bool:
        return self.seq is not None or self.error is not None


class ChatState:
    """The client side of the log: the last seq shown, entries held back, messages owed.

    ``last_seq`` is None until the history sets the starting point; until then every
    entry is held. Entries with seq <= ``last_seq`` are dropped as duplicates; entries
    beyond ``last_seq + 1`` are held until the missing ones arrive, and :meth:`wanted`
    says where to fetch them from.
    """

    def __init__(self, user: str) -> None:
        self.user = user
        self.last_seq: int | None = None
        self.known_last = 0  # the highest seq known to exist (held entries, daemon reports)
        self._held: dict[int, Entry] = {}
        self._outgoing: dict[str, Outgoing] = {}

    # --- incoming -------------------------------------------------------------------------

    def start(self, entries: list[Entry], last_seq: int) -> list[Entry]:
        """Set the starting point from a `chat.history` reply; returns the entries to show."""
        first = entries[0]["seq"] if entries else last_seq + 1
        self.last_seq = first - 1
        for seq in [seq for seq in self._held if seq <= self.last_seq]:
            del self._held[seq]
        self.note_last(last_seq)
        return self.receive(entries)

    def receive(self, entries: Iterable[Entry]) -> list[Entry]:
        """Take entries from any source; returns those now due for display, in seq order."""
        for entry in entries:
            seq = entry["seq"]
            if (self.last_seq is not None and seq <= self.last_seq) or seq in self._held:
                continue  # shown already, or already waiting for its turn
            self._held[seq] = entry
            self.known_last = max(self.known_last, seq)
        if self.last_seq is None:
            return []
        due = []
        while self.last_seq + 1 in self._held:
            entry = self._held.pop(self.last_seq + 1)
            self.last_seq += 1
            self._acknowledge_from_log(entry)
            due.append(entry)
        return due

    def note_last(self, last_seq: int) -> None:
        """The daemon says its log reaches `last_seq` (heartbeat, since and history replies)."""
        self.known_last = max(self.known_last, last_seq)

    def skip_to(self, first_seq: int) -> int:
        """The daemon keeps nothing before `first_seq` (trimmed history): go on from there.

        Returns how many entries were skipped (0 when nothing is missing before `first_seq`).
        """
        if self.last_seq is None or first_seq <= self.last_seq + 1:
            return 0
        skipped = first_seq - 1 - self.last_seq
        self.last_seq = first_seq - 1
        for seq in [seq for seq in self._held if seq <= self.last_seq]:
            del self._held[seq]
        return skipped

    def wanted(self) -> int | None:
        """The seq to ask `chat.since` from, when entries are known to be missing; else None."""
        if self.last_seq is None or self.known_last <= self.last_seq:
            return None
        return self.last_seq

    def _acknowledge_from_log(self, entry: Entry) -> None:
        # Our own message in the log is as good as the send's reply (which may be lost).
        if entry.get("kind") == "message" and entry.get("user") == self.user:
            outgoing = self._outgoing.get(entry.get("id", ""))
            if outgoing is not None and outgoing.error is None:
                outgoing.seq = entry["seq"]

    # --- outgoing -------------------------------------------------------------------------

    def submit(self, text: str, line: int | None = None, message_id: str | None = None) -> Outgoing:
        """Record a message to send; it is owed until acknowledged or refused.

        `line` is the input line it came from (default: its rank among the messages).
        """
        outgoing = Outgoing(message_id or new_token(16), text, line or len(self._outgoing) + 1)
        self._outgoing[outgoing.id] = outgoing
        return outgoing

    def next_to_send(self) -> Outgoing | None:
        """The oldest message owed: messages go out one at a time, in the order typed."""
        return next((o for o in self._outgoing.values() if not o.settled), None)

    def acknowledge(self, message_id: str, seq: int) -> None:
        self._outgoing[message_id].seq = seq

    def refuse(self, message_id: str, reason: str) -> None:
        self._outgoing[message_id].error = reason

    def unacknowledged(self) -> list[Outgoing]:
        return [o for o in self._outgoing.values() if not o.settled]

    @property
    def sent(self) -> int:
        return len(self._outgoing)

    def failures(self) -> list[str]:
        """One line per message not delivered, oldest first; empty when all went through."""
        lines = []
        for o in self._outgoing.values():
            if o.error is not None:
                lines.append(f"line {o.line} {_quote(o.text)}: refused: {o.error}")
            elif o.seq is None:
                lines.append(f"line {o.line} {_quote(o.text)}: not acknowledged (id {o.id})")
        return lines


def _quote(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit - 1] + "…")
