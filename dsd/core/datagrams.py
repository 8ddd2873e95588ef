"""What daemons say to the whole cluster in datagrams, as typed plain data (the codec is `dsd.wire`).

Discovery (PROBE), liveness (HEARTBEAT, LEAVE) and the bully election (ELECTION, ANSWER,
COORDINATOR) between daemons, and a chat client's DISCOVER with the daemons' OFFER. Every
field's annotation says what is valid; msgspec checks it as `dsd.wire` decodes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from msgspec import Meta

from dsd.core.tagged import Tagged

MAX_INT = 2**63 - 1
MAX_DATAGRAM = 1400  # bytes, header included: one Ethernet frame with room for the signature
MAX_TEXT = 256  # characters of an endpoint
MAX_MEMBERS = 64  # entries in one MEMBERS datagram, whatever their size (see `member_chunks`)
MEMBERS_BUDGET = MAX_DATAGRAM - 200  # bytes of entries per MEMBERS datagram; the rest is the header
NAME = r"[A-Za-z0-9._-]{1,64}"
LINK_KEY = r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}"  # a CURVE public key in Z85
STATES = ("discovering", "follower", "candidate", "leader")

Name = Annotated[str, Meta(pattern=f"^{NAME}\\Z")]
Count = Annotated[int, Meta(ge=0, le=MAX_INT)]
Endpoint = Annotated[str, Meta(max_length=MAX_TEXT)]
LinkKey = Annotated[str, Meta(pattern=f"^(?:{LINK_KEY})?\\Z")]
State = Literal["discovering", "follower", "candidate", "leader"]
ADDRESS = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3}):(\d{1,5})\Z")
Address = Annotated[str, Meta(pattern=r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}:\d{1,5}\Z")]  # see `is_address`
Member = tuple[Name, Address, Count]  # type: ignore[valid-type]


class Datagram(Tagged, frozen=True):
    """A datagram's message."""


class FromDaemon(Datagram, frozen=True):
    """A daemon's message: who it is, in which life (incarnation), with its rank's priority."""

    name: Name
    incarnation: Count
    priority: Count


class Probe(FromDaemon, frozen=True):
    """Sent at start-up: every node answers at once with a heartbeat."""


class Heartbeat(FromDaemon, frozen=True):
    """Periodic sign of life carrying the sender's belief about the cluster."""

    term: Count
    leader: Name | None
    state: State
    endpoint: Endpoint
    commit: Count
    link_key: LinkKey = ""  # the CURVE public key of `endpoint` when the cluster has a secret


class Leave(FromDaemon, frozen=True):
    """Clean shutdown: peers drop the sender at once."""


class Election(FromDaemon, frozen=True):
    """Bully ELECTION: asks higher-ranked nodes to take over."""

    term: Count


class Answer(FromDaemon, frozen=True):
    """Bully ANSWER ("OK"): a higher-ranked node tells ``to`` it is alive."""

    term: Count
    to: Name


class Coordinator(FromDaemon, frozen=True):
    """The sender declares itself leader for ``term``."""

    term: Count


class Members(FromDaemon, frozen=True):
    """Unicast only: the members the sender knows, as (name, "ip:port", incarnation) (memberlist's push/pull).

    The answer to a PROBE, and what a daemon tells a member it has just added; the receiver
    contacts those it does not know. A long list takes several datagrams (`member_chunks`).
    """

    members: Annotated[tuple[Member, ...], Meta(max_length=MAX_MEMBERS)]


class Discover(Datagram, frozen=True):
    """A chat client on a host without a daemon looks for daemons (``dschat --discover``)."""

    nonce: Count


class Offer(Datagram, frozen=True):
    """Answer to DISCOVER from a daemon with TCP client endpoints: where to connect."""

    name: Name
    nonce: Count
    endpoint: Endpoint
    feed: Endpoint


Message = Union[Probe, Heartbeat, Leave, Election, Answer, Coordinator, Members, Discover, Offer]
MESSAGE_TYPES: dict[str, Any] = {
    cls.type_name(): cls for cls in (Probe, Heartbeat, Leave, Election, Answer, Coordinator, Members, Discover, Offer)
}


def is_address(text: object) -> bool:
    """An IPv4 "a.b.c.d:port", as the transports write a datagram's source."""
    match = ADDRESS.match(text) if isinstance(text, str) else None
    return match is not None and all(int(g) <= 255 for g in match.groups()[:4]) and 0 < int(match[5]) < 65536


def member_chunks(entries: list[tuple[str, str, int]]) -> list[tuple[tuple[str, str, int], ...]]:
    """`entries` cut into runs that each fit one MEMBERS datagram."""
    chunks: list[tuple[tuple[str, str, int], ...]] = []
    run: list[tuple[str, str, int]] = []
    size = 0
    for entry in entries:
        cost = len(entry[0]) + len(entry[1]) + len(str(entry[2])) + 8  # quotes, commas, brackets
        if run and (size + cost > MEMBERS_BUDGET or len(run) == MAX_MEMBERS):
            chunks.append(tuple(run))
            run, size = [], 0
        run.append(entry)
        size += cost
    if run:
        chunks.append(tuple(run))
    return chunks
