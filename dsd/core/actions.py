"""What the core asks the I/O layer to do. Frozen, so tests can compare them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from dsd.core.link_messages import LinkMessage
from dsd.core.datagrams import Message


@dataclass(frozen=True)
class Send:
    """Send `message`: to the multicast group (`to` None), or by unicast to each "ip:port" of `to`.

    Inside `dsd.core.node` a Send without `to` means "the cluster", and the node routes it
    (to the group, the members, or both) before handing it out.
    """

    message: Message
    to: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Resolve:
    """Resolve `host` (a `[cluster] peers` name) to IPv4 addresses; answer `Node.resolved`/`unresolved`."""

    entry: str
    host: str
    port: int


@dataclass(frozen=True)
class Publish:
    """Publish `event` on the feed under `topic` (dotted, e.g. ``view.join``)."""

    topic: str
    event: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class Log:
    """Write one log line at `level` ("debug", "info", "warning", "error").

    `fields` are the names and figures the line is about (peer, leader, term, ...), for
    structured logs (`[log] format = "json"`).
    """

    level: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Transmit:
    """Send `message` to the daemon `to` over its data-plane link (best effort: the core retries)."""

    to: str
    message: LinkMessage = field(hash=False)


@dataclass(frozen=True)
class Reply:
    """Answer the client request `request` (an opaque handle): `result`, or `error` = (code, message)."""

    request: Any = field(hash=False)
    result: dict[str, Any] | None = field(default=None, hash=False)
    error: tuple[str, str] | None = None


@dataclass(frozen=True)
class Stop:
    """Stop the daemon now, exit status 1, logging `reason`; no LEAVE (the name was never ours)."""

    reason: str


Action = Union[Send, Resolve, Publish, Log, Transmit, Reply, Stop]
