"""Bytes <-> link messages (`dsd.core.link_messages`): MessagePack, decoded and validated in one step.

A message is one MessagePack map whose ``"t"`` names its type. msgspec checks every field
against its type as it decodes; `check` adds the rules no single field shows. Anything
malformed raises `LinkError` and never reaches the core. An unknown field of a message is
refused; an unknown key of a record (entry, proposal, result) is dropped, so what reaches
the core holds exactly the record's keys.

MessagePack rather than JSON (`python -m bench.codecs`, both through msgspec with these
types): a fifth smaller and a little cheaper both ways. Either way most of a decode is the
validation of the name patterns, about 1.5 of 2 us per entry.
"""

from __future__ import annotations

import re

import msgspec

from dsd.core.chat import config as configs
from dsd.core.link_messages import (
    MAX_LINK_MESSAGE, MAX_TEXT_BYTES, AnyLinkMessage, Append, Entries, Entry,
    Forward, LinkMessage, Result, Snapshot, type_of,
)

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(AnyLinkMessage)
_FIELD = re.compile(r"at `\$\.(\w+)")
_OUTCOME_KEYS = (frozenset({"user", "id", "seq"}), frozenset({"user", "id", "code", "message"}))


class LinkError(ValueError):
    """A link message that is not valid."""


def encode(message: LinkMessage) -> bytes:
    return _ENCODER.encode(message)


def decode(data: bytes) -> AnyLinkMessage:
    """Parse one link message; raises LinkError for anything that is not valid."""
    if len(data) > MAX_LINK_MESSAGE:
        raise LinkError(f"link message of {len(data)} bytes exceeds {MAX_LINK_MESSAGE}")
    try:
        message = _DECODER.decode(data)
    except msgspec.ValidationError as error:
        raise LinkError(_explain(str(error))) from None
    except msgspec.DecodeError as error:
        raise LinkError(f"not MessagePack: {error}") from None
    check(message)
    return message


def _explain(error: str) -> str:
    """msgspec's reason, led by the field it is about: "bad entries: Expected ... at `$.entries[0].user`"."""
    if "field `t`" in error:
        return f"unknown message type: {error}"
    field = _FIELD.search(error)
    if field is None:
        return f"not a link message: {error}"
    if field.group(1) == "t":
        return f"unknown message type: {error}"
    return f"bad {field.group(1)}: {error}"


def check(message: AnyLinkMessage) -> None:
    """What the field types cannot say: config entries (only they) have no user and a
    configuration as text, text fits MAX_TEXT_BYTES in UTF-8, a result has a seq or a code
    and a message, a snapshot part lies within its table."""
    kind = type_of(message)
    if isinstance(message, (Append, Entries)):
        _check_entries(kind, "entries", message.entries)
    elif isinstance(message, Forward):
        for proposal in message.proposals:
            if not proposal["user"] or not proposal["session"] or _too_long(proposal["text"]):
                raise LinkError(f"{kind}: bad proposals")
    elif isinstance(message, Result):
        if any(outcome.keys() not in _OUTCOME_KEYS for outcome in message.results):
            raise LinkError(f"{kind}: bad results")
    elif isinstance(message, Snapshot):
        _check_snapshot(message)


def _too_long(text: str) -> bool:
    return len(text) * 4 > MAX_TEXT_BYTES and len(text.encode()) > MAX_TEXT_BYTES


def _check_entries(kind: str, name: str, entries: list[Entry]) -> None:
    for entry in entries:
        if _too_long(entry["text"]):
            raise LinkError(f"{kind}: bad {name}")
        if entry["kind"] == "config":
            if entry["user"] or entry["session"] or not _is_configuration(entry["text"]):
                raise LinkError(f"{kind}: bad {name}: a config entry")
        elif not entry["user"] or not entry["session"]:
            raise LinkError(f"{kind}: bad {name}: no user or session")


def _is_configuration(text: str) -> bool:
    try:
        configs.parse(text)
    except ValueError:
        return False
    return True


def _check_snapshot(message: Snapshot) -> None:
    """The part lies within the table, the joins before the base."""
    _check_entries("snapshot", "users", message.users)
    if any(join["kind"] != "join" for join in message.users):
        raise LinkError("snapshot: bad users: not a join")
    if message.config is not None:
        _check_entries("snapshot", "config", [message.config])
        if message.config["kind"] != "config":
            raise LinkError("snapshot: bad config")
        if message.config["seq"] > message.base:
            raise LinkError("snapshot: a config after the base")
    if message.offset + len(message.users) > message.total:
        raise LinkError("snapshot: users beyond total")
    if any(join["seq"] > message.base or join["term"] > message.base_term for join in message.users):
        raise LinkError("snapshot: a join after the base")
    if any(join["seq"] < 1 for join in message.users):
        raise LinkError("snapshot: a join at seq 0")
    if len({join["user"] for join in message.users}) != len(message.users):
        raise LinkError("snapshot: a user twice")
    if message.ids_offset + len(message.ids) > message.ids_total:
        raise LinkError("snapshot: ids beyond ids_total")
    if any(not 0 < row[2] <= message.base for row in message.ids):
        raise LinkError("snapshot: a trimmed id after the base")
