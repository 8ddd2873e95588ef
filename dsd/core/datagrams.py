"""What daemons say to the whole cluster in datagrams, as typed plain data (the codec is `dsd.wire`).

Discovery (PROBE), liveness (HEARTBEAT, LEAVE) and the bully election (ELECTION, ANSWER,
COORDINATOR) between daemons, and a chat client's DISCOVER with the daemons' OFFER. Every
field's annotation says what is valid; msgspec checks it as `dsd.wire` decodes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from msgspec import Meta

from dsd.core.tagged import Tagged

MAX_INT = 2**63 - 1
MAX_TEXT = 256  # characters of an endpoint
NAME = r"[A-Za-z0-9._-]{1,64}"
LINK_KEY = r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}"  # a CURVE public key in Z85
STATES = ("discovering", "follower", "candidate", "leader")

Name = Annotated[str, Meta(pattern=f"^{NAME}\\Z")]
Count = Annotated[int, Meta(ge=0, le=MAX_INT)]
Endpoint = Annotated[str, Meta(max_length=MAX_TEXT)]
LinkKey = Annotated[str, Meta(pattern=f"^(?:{LINK_KEY})?\\Z")]
State = Literal["discovering", "follower", "candidate", "leader"]


class Datagram(Tagged, frozen=True):
    """A datagram's message."""


class Probe(Datagram, frozen=True):
    """Sent at start-up: every node answers at once with a heartbeat."""

    name: Name
    incarnation: Count
    priority: Count


class Heartbeat(Datagram, frozen=True):
    """Periodic sign of life carrying the sender's belief about the cluster."""

    name: Name
    incarnation: Count
    priority: Count
    term: Count
    leader: Name | None
    state: State
    endpoint: Endpoint
    commit: Count
    link_key: LinkKey = ""  # the CURVE public key of `endpoint` when the cluster has a secret


class Leave(Datagram, frozen=True):
    """Clean shutdown: peers drop the sender at once."""

    name: Name
    incarnation: Count
    priority: Count


class Election(Datagram, frozen=True):
    """Bully ELECTION: asks higher-ranked nodes to take over."""

    name: Name
    incarnation: Count
    priority: Count
    term: Count


class Answer(Datagram, frozen=True):
    """Bully ANSWER ("OK"): a higher-ranked node tells ``to`` it is alive."""

    name: Name
    incarnation: Count
    priority: Count
    term: Count
    to: Name


class Coordinator(Datagram, frozen=True):
    """The sender declares itself leader for ``term``."""

    name: Name
    incarnation: Count
    priority: Count
    term: Count


class Discover(Datagram, frozen=True):
    """A chat client on a host without a daemon looks for daemons (``dschat --discover``)."""

    nonce: Count


class Offer(Datagram, frozen=True):
    """Answer to DISCOVER from a daemon with TCP client endpoints: where to connect."""

    name: Name
    nonce: Count
    endpoint: Endpoint
    feed: Endpoint


Message = Union[Probe, Heartbeat, Leave, Election, Answer, Coordinator, Discover, Offer]
MESSAGE_TYPES: dict[str, Any] = {
    cls.type_name(): cls for cls in (Probe, Heartbeat, Leave, Election, Answer, Coordinator, Discover, Offer)
}
