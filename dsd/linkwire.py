"""Bytes <-> data-plane messages: what daemons say to each other over their ZeroMQ links.

The chat log travels here, not over multicast: the leader replicates entries to the
followers (APPEND/ACK), followers forward their clients' proposals to the leader
(FORWARD/RESULT), and a new sequencer wins its epoch from a quorum of voters, who tell it
their logs (GATHER/STATUS or REFUSE), then fetches the most advanced one (FETCH/ENTRIES).
A daemon that needs entries its source no longer retains gets a SNAPSHOT first: where the
retained log starts, who is present there and the configuration. REMOVE asks the
sequencer to take a daemon out of the configuration.

A message is one JSON object with ``"t"`` naming its type; every message carries the
sender's name and its chat epoch (``term``: see `dsd.core.chat`). Decoding is strict, as in
`dsd.wire`: anything malformed raises `LinkError` and never reaches the core.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from dsd.wire import MAX_INT, NAME_PATTERN, decode_object, utf8_size

MAX_LINK_MESSAGE = 4 * 1024 * 1024
MAX_BATCH = 512  # entries or proposals in one message
MAX_TEXT_BYTES = 64 * 1024  # hard ceiling; [chat] max_message is the configured limit
KINDS = ("message", "join", "leave", "timeout", "config")
PROPOSAL_KINDS = KINDS[:4]
USER_PATTERN = re.compile(r"[^\W_][\w.-]{0,31}\Z")
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")  # a client's message id
ENTRY_ID_PATTERN = re.compile(r"[A-Za-z0-9_:-]{1,64}\Z")  # also a daemon's own ids, which hold ':'
CLUSTER_PATTERN = re.compile(r"([a-z0-9-]{1,64})?\Z")  # "" before the cluster is formed
REASONS = ("epoch", "cluster", "leader")
SESSION_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")

Entry = dict[str, Any]
"""A sequenced log entry: seq, term, kind, user, text, id, server, session, time.
A config entry has user and session "" and the configuration's JSON as text."""
Proposal = dict[str, Any]
"""An entry before sequencing: kind, user, text, id, server, session."""

ENTRY_KEYS = ("seq", "term", "kind", "user", "text", "id", "server", "session", "time")
PROPOSAL_KEYS = ("kind", "user", "text", "id", "server", "session")
PUBLIC_KEYS = ("seq", "kind", "user", "text", "id", "server", "time")


class LinkError(ValueError):
    """A link message that is not valid."""


@dataclass(frozen=True)
class Forward:
    """Follower -> leader: proposals from the follower's clients, to be sequenced."""

    TYPE: ClassVar[str] = "forward"
    src: str
    term: int
    proposals: list[Proposal]


@dataclass(frozen=True)
class Result:
    """Leader -> proposer: proposals it will not sequence (``code``) or already has (``seq``)."""

    TYPE: ClassVar[str] = "result"
    src: str
    term: int
    results: list[dict[str, Any]]


@dataclass(frozen=True)
class Append:
    """Sequencer -> follower: entries after ``prev`` (an entry of ``prev_term``), the sequencer's
    commit point, and its cluster."""

    TYPE: ClassVar[str] = "append"
    src: str
    term: int
    cluster: str
    prev: int
    prev_term: int
    entries: list[Entry]
    commit: int


@dataclass(frozen=True)
class Ack:
    """Follower -> sequencer: my log matches yours up to ``last`` (checked by log matching) and is
    committed up to ``commit``; ``need`` > 0: resend from there."""

    TYPE: ClassVar[str] = "ack"
    src: str
    term: int
    last: int
    commit: int
    need: int


@dataclass(frozen=True)
class Gather:
    """Candidate -> everyone: promise me epoch ``term`` (take nothing from an older one); tell me your log."""

    TYPE: ClassVar[str] = "gather"
    src: str
    term: int
    cluster: str


@dataclass(frozen=True)
class Status:
    """Answer to GATHER: I promised epoch ``term`` to you (on disk); this is how far my log goes."""

    TYPE: ClassVar[str] = "status"
    src: str
    term: int
    cluster: str
    commit: int
    last: int
    last_term: int


@dataclass(frozen=True)
class Refuse:
    """Answer to GATHER or APPEND: not you; ``term`` is my epoch. ``reason``: epoch (I promised
    a newer one), cluster (I belong to ``cluster``, not yours) or leader (you are not my leader)."""

    TYPE: ClassVar[str] = "refuse"
    src: str
    term: int
    cluster: str
    reason: str


@dataclass(frozen=True)
class Remove:
    """Anyone -> sequencer: take ``name`` out of the configuration (it is leaving, or an operator said so)."""

    TYPE: ClassVar[str] = "remove"
    src: str
    term: int
    name: str


@dataclass(frozen=True)
class Fetch:
    """New leader -> the most advanced survivor: send me your entries after ``after``."""

    TYPE: ClassVar[str] = "fetch"
    src: str
    term: int
    after: int


@dataclass(frozen=True)
class Entries:
    """Answer to FETCH: a batch of entries, oldest first."""

    TYPE: ClassVar[str] = "entries"
    src: str
    term: int
    entries: list[Entry]


@dataclass(frozen=True)
class Snapshot:
    """Leader or FETCH source -> a daemon behind its retained history: the log goes on after
    ``base`` (an entry of ``base_term``) with ``total`` users present there, in ``cluster``.

    The presence table comes in parts of at most MAX_BATCH join entries that fit one link
    message each, ``users`` starting at index ``offset`` of the table (in seq order), and beside
    it the dedupe window of trimmed ids, ``[user, id, seq, time]``, ``ids`` starting at
    ``ids_offset`` of ``ids_total``; the receiver installs once it holds both whole, then takes
    entries after ``base`` as usual.
    """

    TYPE: ClassVar[str] = "snapshot"
    src: str
    term: int
    base: int
    base_term: int
    offset: int
    total: int
    users: list[Entry]
    config: Entry | None
    cluster: str
    ids_offset: int = 0
    ids_total: int = 0
    ids: list[list[Any]] = field(default_factory=list)


LinkMessage = Union[Forward, Result, Append, Ack, Gather, Status, Refuse, Remove, Fetch, Entries, Snapshot]
LINK_TYPES: dict[str, type] = {
    cls.TYPE: cls for cls in (Forward, Result, Append, Ack, Gather, Status, Refuse, Remove, Fetch, Entries, Snapshot)
}


BATCH_BUDGET = MAX_LINK_MESSAGE // 2


def fitting(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The longest prefix of `records` (at least one) that surely fits in one link message.

    The bound is pessimistic and cheap: JSON may escape a character of text as 12 bytes
    (an astral character as two \\uXXXX escapes); everything else of a record is < 400 bytes.
    """
    total = 0
    for count, record in enumerate(records):
        total += 400 + 12 * len(record["text"])
        if total > BATCH_BUDGET and count > 0:
            return records[:count]
    return records


def encode(message: LinkMessage) -> bytes:
    # vars(), not asdict(): asdict deep-copies every entry of a batch, once per follower.
    return json.dumps({"t": message.TYPE, **vars(message)}, separators=(",", ":")).encode()


def decode(data: bytes) -> LinkMessage:
    """Parse one link message; raises LinkError for anything that is not valid."""
    if len(data) > MAX_LINK_MESSAGE:
        raise LinkError(f"link message of {len(data)} bytes exceeds {MAX_LINK_MESSAGE}")
    message = decode_object(data, LINK_TYPES, _check_field, LinkError)
    if isinstance(message, Snapshot):
        _check_snapshot(message)
    return message


def _check_snapshot(message: Snapshot) -> None:
    """What no single field shows: the part lies within the table, the joins before the base."""
    if message.offset + len(message.users) > message.total:
        raise LinkError("snapshot: users beyond total")
    if any(join["seq"] > message.base or join["term"] > message.base_term for join in message.users):
        raise LinkError("snapshot: a join after the base")
    if any(join["seq"] < 1 for join in message.users):
        raise LinkError("snapshot: a join at seq 0")
    if len({join["user"] for join in message.users}) != len(message.users):
        raise LinkError("snapshot: a user twice")
    if message.config is not None and message.config["seq"] > message.base:
        raise LinkError("snapshot: a config after the base")
    if message.ids_offset + len(message.ids) > message.ids_total:
        raise LinkError("snapshot: ids beyond ids_total")
    if any(not 0 < row[2] <= message.base for row in message.ids):
        raise LinkError("snapshot: a trimmed id after the base")


def _is_count(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_INT


def _check_field(kind: str, name: str, value: object) -> None:
    if name == "src":
        ok = isinstance(value, str) and NAME_PATTERN.match(value) is not None
    elif name == "entries":
        ok = _is_batch(value) and all(_is_entry(e) for e in value)  # type: ignore[union-attr]
    elif name == "users":
        ok = _is_batch(value) and all(_is_join(j) for j in value)  # type: ignore[union-attr]
    elif name == "ids":
        ok = _is_batch(value) and all(_is_trimmed_id(row) for row in value)  # type: ignore[union-attr]
    elif name == "config":
        ok = value is None or (_is_entry(value) and value["kind"] == "config")  # type: ignore[index]
    elif name == "proposals":
        ok = _is_batch(value) and all(
            _is_record(p, PROPOSAL_KEYS) and p["kind"] in PROPOSAL_KINDS for p in value)  # type: ignore[union-attr, index]
    elif name == "cluster":
        ok = isinstance(value, str) and CLUSTER_PATTERN.match(value) is not None
    elif name == "reason":
        ok = value in REASONS
    elif name == "name":
        ok = isinstance(value, str) and NAME_PATTERN.match(value) is not None
    elif name == "results":
        ok = _is_batch(value) and all(_is_result(r) for r in value)  # type: ignore[union-attr]
    else:
        ok = _is_count(value)
    if not ok:
        raise LinkError(f"{kind}: bad {name}")


def _is_batch(value: object) -> bool:
    return isinstance(value, list) and len(value) <= MAX_BATCH


def _is_record(record: object, keys: tuple[str, ...]) -> bool:
    """An entry or a proposal: exactly `keys`, each well-formed."""
    if not isinstance(record, dict) or set(record) != set(keys):
        return False
    return all(_record_field_ok(key, record[key]) for key in keys)


def _is_entry(record: object) -> bool:
    """An entry; a config entry has no user or session, and a configuration as its text."""
    if not isinstance(record, dict) or set(record) != set(ENTRY_KEYS):
        return False
    if record["kind"] != "config":
        return all(_record_field_ok(key, record[key]) for key in ENTRY_KEYS)
    if record["user"] != "" or record["session"] != "" or not isinstance(record["text"], str):
        return False
    from dsd.core.chat.config import parse  # here, not above: the core imports this module
    try:
        parse(record["text"])
    except ValueError:
        return False
    return all(_record_field_ok(key, record[key]) for key in ENTRY_KEYS if key not in ("user", "session", "text"))


def _is_trimmed_id(row: object) -> bool:
    """[user, id, seq, time] of a trimmed entry."""
    return (isinstance(row, list) and len(row) == 4 and _record_field_ok("user", row[0])
            and _record_field_ok("id", row[1]) and _record_field_ok("seq", row[2]) and _record_field_ok("time", row[3]))


def _is_join(record: object) -> bool:
    return _is_entry(record) and record["kind"] == "join"  # type: ignore[index]


def _record_field_ok(key: str, value: object) -> bool:
    if key in ("seq", "term"):
        return _is_count(value)
    if key == "kind":
        return value in KINDS
    if key == "user":
        return isinstance(value, str) and USER_PATTERN.match(value) is not None
    if key == "id":
        return isinstance(value, str) and ENTRY_ID_PATTERN.match(value) is not None
    if key == "session":
        return isinstance(value, str) and SESSION_PATTERN.match(value) is not None
    if key == "server":
        return isinstance(value, str) and NAME_PATTERN.match(value) is not None
    if key == "text":
        size = utf8_size(value) if isinstance(value, str) else None
        return size is not None and size <= MAX_TEXT_BYTES
    if key == "time":
        return type(value) in (int, float) and 0 <= value < 1e11
    return False


def _is_result(result: object) -> bool:
    if not isinstance(result, dict):
        return False
    base = {"user", "id"}
    keys = set(result)
    if not (_record_field_ok("user", result.get("user")) and _record_field_ok("id", result.get("id"))):
        return False
    if keys == base | {"seq"}:
        return _is_count(result["seq"])
    if keys == base | {"code", "message"}:
        return all(isinstance(result[k], str) and len(result[k]) <= 256 for k in ("code", "message"))
    return False
