"""Bytes <-> datagrams (`dsd.core.datagrams`): the one codec for every multicast or unicast datagram.

A datagram is the 4-byte magic ``DSD`` + version byte, then one JSON object whose ``"t"``
names the message type, decoded and validated in one step by msgspec. Unknown types,
missing or extra fields, wrong field types and oversize datagrams all raise `WireError`,
so nothing malformed ever reaches the core.
"""

from __future__ import annotations

import re

import msgspec

from dsd.core.datagrams import MAX_DATAGRAM, Members, Message, is_address

MAGIC = b"DSD"
VERSION = 2  # 2: the links between daemons carry MessagePack (dsd.linkwire); a daemon of version 1 is another protocol
HEADER = MAGIC + bytes([VERSION])

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Message)
_FIELD = re.compile(r"at `\$\.(\w+)")


class WireError(ValueError):
    """A datagram that is not a valid message of this protocol version."""


def encode(message: Message) -> bytes:
    """Serialise `message`; raises WireError if it would exceed MAX_DATAGRAM.

    Raw UTF-8 rather than \\u escapes, so whatever `decode` accepts fits again when re-sent.
    """
    try:
        data = HEADER + _ENCODER.encode(message)
    except UnicodeEncodeError:
        raise WireError("a text field is not valid Unicode (a lone surrogate)") from None
    if len(data) > MAX_DATAGRAM:
        raise WireError(f"message of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    return data


def decode(data: bytes) -> Message:
    """Parse one datagram; raises WireError for anything that is not a valid message."""
    if len(data) > MAX_DATAGRAM:
        raise WireError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    if not data.startswith(MAGIC):
        raise WireError("not a dsd datagram (bad magic)")
    if len(data) < len(HEADER) or data[len(MAGIC)] != VERSION:
        version = data[len(MAGIC)] if len(data) > len(MAGIC) else None
        raise WireError(f"unsupported protocol version {version}")
    try:
        message = _DECODER.decode(data[len(HEADER):])
    except msgspec.ValidationError as error:
        raise WireError(_explain(str(error))) from None
    except (msgspec.DecodeError, RecursionError) as error:
        raise WireError(f"bad JSON: {error}") from None
    if isinstance(message, Members) and not all(is_address(address) for _, address, _ in message.members):
        raise WireError("members: bad members: an address is not IPv4 a.b.c.d:port")
    return message


def _explain(error: str) -> str:
    """msgspec's reason, led by the field it is about: "bad endpoint: Expected ... at `$.endpoint`"."""
    if "field `t`" in error:
        return f"unknown message type: {error}"
    field = _FIELD.search(error)
    if field is None and error.startswith("Expected `object`"):
        return f"not a JSON object: {error}"
    if field is None:
        return f"fields: {error}"  # one missing or one unknown
    if field.group(1) == "t":
        return f"unknown message type: {error}"
    return f"bad {field.group(1)}: {error}"
