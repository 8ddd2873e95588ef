"""What daemons say to each other over their links, as typed plain data (the codec is `dsd.linkwire`).

The chat log travels here, not over multicast: the leader replicates entries to the
followers (APPEND/ACK), followers forward their clients' proposals to the leader
(FORWARD/RESULT), and a new sequencer wins its epoch from a quorum of voters, who tell it
their logs (GATHER/STATUS or REFUSE), then fetches the most advanced one (FETCH/ENTRIES).
A daemon that needs entries its source no longer retains gets a SNAPSHOT first: where the
retained log starts, who is present there and the configuration. REMOVE asks the
sequencer to take a daemon out of the configuration.

Every message carries the sender's name and its chat epoch (``term``: see `dsd.core.chat`).
The field types say what is valid (msgspec checks them as it decodes); the few rules no
single field shows are in `dsd.linkwire.check`. Records (entries, proposals, results) are
plain dicts, typed here as TypedDicts.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypedDict, Union

from msgspec import Meta

from dsd.core.tagged import Tagged
from dsd.store import FIELDS

MAX_INT = 2**63 - 1
MAX_BATCH = 512  # entries or proposals in one message
MAX_TEXT_BYTES = 64 * 1024  # hard ceiling; [chat] max_message is the configured limit
MAX_LINK_MESSAGE = 4 * 1024 * 1024
BATCH_BUDGET = MAX_LINK_MESSAGE // 2

NAME = r"[A-Za-z0-9._-]{1,64}"  # a daemon's name
USER = r"[^\W_][\w.-]{0,31}"
ID = r"[A-Za-z0-9_-]{1,64}"  # a client's message id
ENTRY_ID = r"[A-Za-z0-9_:-]{1,64}"  # also a daemon's own ids, which hold ':'
SESSION = r"[A-Za-z0-9_-]{16,64}"
CLUSTER = r"[a-z0-9-]{0,64}"  # "" before the cluster is formed
USER_PATTERN = re.compile(USER + r"\Z")
ID_PATTERN = re.compile(ID + r"\Z")
SESSION_PATTERN = re.compile(SESSION + r"\Z")


def _matching(pattern: str) -> Any:
    return Annotated[str, Meta(pattern=f"^(?:{pattern})\\Z")]


Name = _matching(NAME)
Count = Annotated[int, Meta(ge=0, le=MAX_INT)]
Batch = Meta(max_length=MAX_BATCH)
Cluster = _matching(CLUSTER)
Kind = Literal["message", "join", "leave", "timeout", "config"]
ProposalKind = Literal["message", "join", "leave", "timeout"]
Text = Annotated[str, Meta(max_length=MAX_TEXT_BYTES)]  # characters here; `check` counts its UTF-8 bytes
User = _matching(f"{USER}|")  # "" only in a config entry (`check`)
Session = _matching(f"{SESSION}|")  # likewise
UserName = _matching(USER)
EntryId = _matching(ENTRY_ID)
Time = Annotated[float, Meta(ge=0, lt=1e11)]


class _Record(TypedDict):
    user: User
    text: Text
    id: EntryId  # type: ignore[valid-type]
    server: Name  # type: ignore[valid-type]
    session: Session  # type: ignore[valid-type]


class Proposal(_Record):
    """An entry before sequencing."""

    kind: ProposalKind


class Entry(_Record):
    """A sequenced log entry. A config entry has user and session "" and the configuration's JSON as text."""

    seq: Count
    term: Count
    kind: Kind
    time: Time


class _Proposed(TypedDict):
    user: UserName  # type: ignore[valid-type]
    id: EntryId  # type: ignore[valid-type]


class Outcome(_Proposed, total=False):
    """What became of one forwarded proposal: its ``seq``, or a refusal ``code`` and ``message``."""

    seq: Count
    code: Annotated[str, Meta(max_length=256)]
    message: Annotated[str, Meta(max_length=256)]


TrimmedId = tuple[UserName, EntryId, Count, Time]  # type: ignore[valid-type]
"""(user, id, seq, time) of a trimmed entry, still deduplicated."""

ENTRY_KEYS = FIELDS
PROPOSAL_KEYS = ("kind", "user", "text", "id", "server", "session")
PUBLIC_KEYS = ("seq", "kind", "user", "text", "id", "server", "time")


class LinkMessage(Tagged, frozen=True):
    """A link message: from ``src``, in its chat epoch ``term``."""

    src: Name  # type: ignore[valid-type]
    term: Count


class Forward(LinkMessage, frozen=True):
    """Follower -> leader: proposals from the follower's clients, to be sequenced."""

    proposals: Annotated[list[Proposal], Batch]


class Result(LinkMessage, frozen=True):
    """Leader -> proposer: proposals it will not sequence (``code``) or already has (``seq``)."""

    results: Annotated[list[Outcome], Batch]


class Append(LinkMessage, frozen=True):
    """Sequencer -> follower: entries after ``prev`` (an entry of ``prev_term``), the sequencer's
    commit point, and its cluster."""

    cluster: Cluster  # type: ignore[valid-type]
    prev: Count
    prev_term: Count
    entries: Annotated[list[Entry], Batch]
    commit: Count


class Ack(LinkMessage, frozen=True):
    """Follower -> sequencer: my log matches yours up to ``last`` (checked by log matching) and is
    committed up to ``commit``; ``need`` > 0: resend from there."""

    last: Count
    commit: Count
    need: Count


class Gather(LinkMessage, frozen=True):
    """Candidate -> everyone: promise me epoch ``term`` (take nothing from an older one); tell me your log."""

    cluster: Cluster  # type: ignore[valid-type]


class Status(LinkMessage, frozen=True):
    """Answer to GATHER: I promised epoch ``term`` to you (on disk); this is how far my log goes."""

    cluster: Cluster  # type: ignore[valid-type]
    commit: Count
    last: Count
    last_term: Count


class Refuse(LinkMessage, frozen=True):
    """Answer to GATHER or APPEND: not you; ``term`` is my epoch. ``reason``: epoch (I promised
    a newer one), cluster (I belong to ``cluster``, not yours) or leader (you are not my leader)."""

    cluster: Cluster  # type: ignore[valid-type]
    reason: Literal["epoch", "cluster", "leader"]


class Remove(LinkMessage, frozen=True):
    """Anyone -> sequencer: take ``name`` out of the configuration (it is leaving, or an operator said so)."""

    name: Name  # type: ignore[valid-type]


class Fetch(LinkMessage, frozen=True):
    """New leader -> the most advanced survivor: send me your entries after ``after``."""

    after: Count


class Entries(LinkMessage, frozen=True):
    """Answer to FETCH: a batch of entries, oldest first."""

    entries: Annotated[list[Entry], Batch]


class Snapshot(LinkMessage, frozen=True):
    """Leader or FETCH source -> a daemon behind its retained history: the log goes on after
    ``base`` (an entry of ``base_term``) with ``total`` users present there, in ``cluster``.

    The presence table comes in parts of at most MAX_BATCH join entries that fit one link
    message each, ``users`` starting at index ``offset`` of the table (in seq order), and beside
    it the dedupe window of trimmed ids, ``ids`` starting at ``ids_offset`` of ``ids_total``;
    the receiver installs once it holds both whole, then takes entries after ``base`` as usual.
    """

    base: Count
    base_term: Count
    offset: Count
    total: Count
    users: Annotated[list[Entry], Batch]
    config: Entry | None
    cluster: Cluster  # type: ignore[valid-type]
    ids_offset: Count = 0
    ids_total: Count = 0
    ids: Annotated[list[TrimmedId], Batch] = []


AnyLinkMessage = Union[Forward, Result, Append, Ack, Gather, Status, Refuse, Remove, Fetch, Entries, Snapshot]
LINK_TYPES: dict[str, type[LinkMessage]] = {
    cls.type_name(): cls for cls in (Forward, Result, Append, Ack, Gather, Status, Refuse, Remove, Fetch, Entries, Snapshot)
}


def utf8_size(text: str) -> int | None:
    """Bytes of `text` in UTF-8, or None if it cannot be encoded (a lone surrogate)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def fitting(records: list[Any]) -> list[Any]:
    """The longest prefix of `records` (at least one) that surely fits in one link message.

    The bound is pessimistic and cheap: a character of text takes at most 4 bytes (12 if a
    codec escapes it); everything else of a record is < 400 bytes.
    """
    total = 0
    for count, record in enumerate(records):
        total += 400 + 12 * len(record["text"])
        if total > BATCH_BUDGET and count > 0:
            return records[:count]
    return records
