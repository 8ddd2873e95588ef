"""Log output: one event a line, as text or as JSON lines (`[log] format`).

A log call may carry structured fields (`extra={"fields": {...}}`; the core's `Log`
actions carry them too): every line about a peer or an election has the names and the
term as fields. The text format shows the message, which already says as much; the JSON
format puts the fields beside it, for journald or Loki:

    {"time": "2026-11-30T10:00:00.123Z", "level": "info", "node": "a", "logger": "dsd",
     "event": "leader is now c (term 2)", "leader": "c", "previous": null, "term": 2}
"""

from __future__ import annotations

import json
import logging
import time
from typing import IO, Any

TEXT, JSON = "text", "json"

# Feed topics about a peer, and how a log line says them.
PEER_EVENTS = {
    "view.join": "joined", "view.alive": "is alive again", "view.suspect": "is suspect",
    "view.dead": "is dead", "view.leave": "left",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ms), level, node, logger, event (the message), fields."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        document: dict[str, Any] = {
            "time": f"{moment}.{int(record.msecs):03d}Z", "level": record.levelname.lower(),
            "node": self.node, "logger": record.name, "event": record.getMessage(),
        }
        for key, value in getattr(record, "fields", {}).items():
            document.setdefault(key, value)  # a field never hides the time, level or event
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def formatter(node: str, style: str) -> logging.Formatter:
    if style == JSON:
        return JsonFormatter(node)
    return logging.Formatter(f"%(asctime)s {node} %(levelname)s %(name)s: %(message)s")


def setup(node: str, level: str, style: str, stream: IO[str]) -> None:
    """Send every log record to `stream` in `style` (text or json) from `level` up."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(node, style))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def restyle(node: str, style: str) -> None:
    """SIGHUP: a new `[log] format` applies to the next line."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter(node, style))


def peer_event(logger: logging.Logger, topic: str, event: dict[str, Any], term: int, leader: str | None) -> None:
    """Log a feed event about a peer (join, suspect, dead, ...) at info, with its names and the term."""
    what = PEER_EVENTS.get(topic)
    if what is None:
        return
    fields: dict[str, Any] = {"peer": event["name"], "change": topic.removeprefix("view."),
                              "leader": leader, "term": term}
    detail = ""
    if topic == "view.join":
        fields.update(address=event["address"], priority=event["priority"], restarted=event["restarted"])
        detail = f" from {event['address']}" + (" (restarted)" if event["restarted"] else "")
    elif topic == "view.dead":
        fields["silence"] = round(event["silence"], 3)
        detail = f" (silent for {event['silence']:.2f}s)"
    logger.info("peer %s %s%s", event["name"], what, detail, extra={"fields": fields})
