"""What the core asks the I/O layer to do. Frozen, so tests can compare them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from dsd.wire import Message


@dataclass(frozen=True)
class Send:
    """Multicast `message` to the cluster group."""

    message: Message


@dataclass(frozen=True)
class Publish:
    """Publish `event` on the feed under `topic` (dotted, e.g. ``view.join``)."""

    topic: str
    event: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class Log:
    """Write one log line at `level` ("debug", "info", "warning", "error")."""

    level: str
    text: str


Action = Union[Send, Publish, Log]
