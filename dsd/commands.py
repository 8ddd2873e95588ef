"""Control-socket commands: one small unit each, its help text in one place.

The daemon dispatches requests through `COMMANDS`; `dsctl` builds its help from
the same table, so the two can never disagree about what a command does.

Request:  ``{"cmd": NAME, "args": {...}}``
Reply:    ``{"ok": true, "result": {...}}`` or
          ``{"ok": false, "error": {"code": CODE, "message": TEXT}}``
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Protocol

MAX_REQUEST = 64 * 1024
log = logging.getLogger("dsd.control")


class Daemon(Protocol):
    """What a command may ask of the running daemon."""

    def view(self) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...

    def info(self) -> dict[str, Any]: ...

    def elect(self) -> dict[str, Any]: ...


class RequestError(Exception):
    """A request the daemon refuses; `code` is stable, `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Callable[[Daemon, dict[str, Any]], dict[str, Any]]


def _leader(daemon: Daemon, args: dict[str, Any]) -> dict[str, Any]:
    view = daemon.view()
    return {"self": view["self"], "leader": view["leader"], "term": view["term"]}


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Command("ping", "exit 0 if the daemon answers", lambda d, a: {"pong": True}),
        Command("info", "daemon name, version, pid and endpoints", lambda d, a: d.info()),
        Command("view", "the servers this node sees, the leader marked", lambda d, a: d.view()),
        Command("leader", "the leader and the term", _leader),
        Command("stats", "datagram, election and uptime counters", lambda d, a: d.stats()),
        Command("elect", "start an election now", lambda d, a: d.elect()),
    )
}


def parse_request(payload: bytes) -> tuple[Command, dict[str, Any]]:
    """Validate one request; raises RequestError with a stable code."""
    if len(payload) > MAX_REQUEST:
        raise RequestError("too_large", f"request of {len(payload)} bytes exceeds {MAX_REQUEST}")
    try:
        request = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError("bad_request", f"request is not JSON: {error}") from None
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        raise RequestError("bad_request", 'request must be an object with a string "cmd"')
    unknown = set(request) - {"cmd", "args"}
    if unknown:
        raise RequestError("bad_request", f"unknown request fields: {', '.join(sorted(unknown))}")
    command = COMMANDS.get(request["cmd"])
    if command is None:
        raise RequestError(
            "unknown_command", f"unknown command {request['cmd'][:64]!r}; known: {', '.join(COMMANDS)}"
        )
    args = request.get("args", {})
    if not isinstance(args, dict):
        raise RequestError("bad_args", '"args" must be an object')
    if args:
        raise RequestError("bad_args", f"{command.name} takes no arguments, got {', '.join(sorted(args))[:200]}")
    return command, args


def handle(daemon: Daemon, payload: bytes) -> bytes:
    """One request in, one reply out; never raises for bad input."""
    try:
        command, args = parse_request(payload)
        reply: dict[str, Any] = {"ok": True, "result": command.run(daemon, args)}
    except RequestError as error:
        reply = {"ok": False, "error": {"code": error.code, "message": error.message}}
    except Exception as error:  # a bug in one command must not take the control socket down
        log.exception("control request failed")
        reply = {"ok": False, "error": {"code": "internal", "message": f"internal error: {error}"}}
    return json.dumps(reply).encode()
