"""Control-socket commands: one small unit each, its help text in one place.

The daemon dispatches requests through `COMMANDS`; `dsctl` builds its help from
the same table, so the two can never disagree about what a command does.

Request:  ``{"cmd": NAME, "args": {...}}`` (optionally ``"rid"``, echoed in the reply)
Reply:    ``{"ok": true, "result": {...}}`` or
          ``{"ok": false, "error": {"code": CODE, "message": TEXT}}``

Admin commands (`elect`: whatever changes the cluster's state) are refused with
``forbidden`` over the TCP endpoint unless the client's key is in ``[control] admin_keys``;
through the ipc endpoint everything is allowed. The chat commands are user commands.

The chat commands are documented in docs/chat-api.md.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Protocol

import msgspec

MAX_REQUEST = 512 * 1024  # a max_message of 64 KiB, JSON-escaped, still fits
MAX_RID = 64
log = logging.getLogger("dsd.control")


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """A request as it arrives; its args are decoded by the command's own type (`Command.decoder`)."""

    cmd: str
    args: msgspec.Raw = msgspec.Raw(b"{}")
    rid: Annotated[str, msgspec.Meta(max_length=MAX_RID)] | None = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_ANY = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()
_FIELD = re.compile(r"`\$\.(\w+)")
_NAMED = re.compile(r"field `(.*)`\Z")


@dataclass(frozen=True)
class Request:
    """A request being answered: where the reply goes, and the id the client asked us to echo."""

    envelope: list[bytes]
    rid: str | None


class Daemon(Protocol):
    """What a command may ask of the running daemon.

    Chat commands that wait for the log (join, send, leave) return None and answer
    later through `reply`; the others return their result.
    """

    def view(self) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...

    def info(self) -> dict[str, Any]: ...

    def elect(self) -> dict[str, Any]: ...

    def forget(self, name: str) -> dict[str, Any]: ...

    def server_key(self) -> dict[str, Any]: ...

    def chat_request(self, request: Request, cmd: str, args: dict[str, Any]) -> dict[str, Any] | None: ...


class RequestError(Exception):
    """A request the daemon refuses; `code` is stable, `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.rid: str | None = None  # the request's rid, once known, for the error reply


@dataclass(frozen=True)
class Arg:
    """One argument of a command: its JSON type and bounds."""

    name: str
    kind: type  # str or int
    required: bool = True
    low: int = 0  # int: smallest value; str: shortest length
    high: int = 2**63 - 1  # int: largest value; str: longest length

    def annotation(self) -> Any:
        if self.kind is int:
            return Annotated[int, msgspec.Meta(ge=self.low, le=self.high)]
        return Annotated[str, msgspec.Meta(min_length=self.low, max_length=self.high)]

    def allowed(self) -> str:
        if self.kind is int:
            return f"an integer from {self.low} to {self.high}"
        return f"a string of {self.low} to {self.high} characters"


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Callable[[Daemon, Request, dict[str, Any]], "dict[str, Any] | None"]
    args: tuple[Arg, ...] = ()
    admin: bool = False  # changes the cluster's state: over TCP, only for [control] admin_keys
    decoder: msgspec.json.Decoder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """The args' type, made from `args`: decoding checks every bound and refuses unknown names."""
        fields_ = [(arg.name, arg.annotation()) if arg.required
                   else (arg.name, arg.annotation() | msgspec.UnsetType, msgspec.UNSET) for arg in self.args]
        fields_.sort(key=len)  # required ones first, as a struct needs
        args_type = msgspec.defstruct(f"{self.name}-args", fields_, forbid_unknown_fields=True)
        object.__setattr__(self, "decoder", msgspec.json.Decoder(args_type))

    def parse_args(self, raw: msgspec.Raw) -> dict[str, Any]:
        try:
            decoded = self.decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as error:
            args = _json(raw)  # msgspec stops at the first wrong type: is the rest JSON at all?
            raise RequestError("bad_args", self._explain(str(error), args)) from None
        return {arg.name: value for arg in self.args if (value := getattr(decoded, arg.name)) is not msgspec.UNSET}

    def _explain(self, error: str, args: Any) -> str:
        named = _NAMED.search(error)
        if error.startswith("Object contains unknown field") and named:
            takes = ", ".join(arg.name for arg in self.args) or "no arguments"
            return f"{self.name} takes {takes}; got {named.group(1)[:200]}"
        if error.startswith("Object missing required field") and named:
            return f"{self.name} needs {named.group(1)}"
        at = _FIELD.search(error)
        arg = next((a for a in self.args if at and a.name == at.group(1)), None)
        if arg is None:
            return '"args" must be an object'
        value = args[arg.name]
        return f"{arg.name} must be {arg.allowed()}, got {_ENCODER.encode(value)[:64].decode(errors='replace')}"


def _leader(daemon: Daemon, request: Request, args: dict[str, Any]) -> dict[str, Any]:
    view = daemon.view()
    return {"self": view["self"], "leader": view["leader"], "term": view["term"]}


USER = Arg("user", str, high=64)
SESSION = Arg("session", str, high=64)
LIMIT = Arg("limit", int, required=False, low=1, high=1000)


def _chat_command(name: str, help: str, *args: Arg) -> Command:
    return Command(name, help, lambda d, r, a: d.chat_request(r, name, a), args)


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Command("ping", "exit 0 if the daemon answers", lambda d, r, a: {"pong": True}),
        Command("info", "daemon name, version, pid and endpoints", lambda d, r, a: d.info()),
        Command("view", "the servers this node sees, the leader marked, and the chat users",
                lambda d, r, a: d.view()),
        Command("leader", "the leader and the term", _leader),
        Command("stats", "datagram, election, chat and uptime counters", lambda d, r, a: d.stats()),
        Command("elect", "start an election now", lambda d, r, a: d.elect(), admin=True),
        Command("forget", "remove NAME from the chat's voters at once (a daemon that is not coming back)",
                lambda d, r, a: d.forget(a["name"]), (Arg("name", str, low=1, high=64),), admin=True),
        Command("server-key", "the daemon's public key, which TCP clients give as --server-key",
                lambda d, r, a: d.server_key()),
        _chat_command("chat.join", "join the chat as USER (dschat does this)", USER, SESSION),
        _chat_command("chat.send", "send a message (dschat does this)",
                      USER, SESSION, Arg("id", str, high=64), Arg("text", str, high=MAX_REQUEST)),
        _chat_command("chat.heartbeat", "a chat client is alive", USER, SESSION),
        _chat_command("chat.leave", "leave the chat", USER, SESSION),
        _chat_command("chat.since", "committed chat entries after SEQ", Arg("seq", int), LIMIT),
        _chat_command("chat.history", "the latest chat entries", LIMIT),
        _chat_command("chat.who", "the chat users and the server each is on"),
    )
}


def parse_request(payload: bytes) -> tuple[Command, dict[str, Any], str | None]:
    """Validate one request; raises RequestError with a stable code."""
    if len(payload) > MAX_REQUEST:
        raise RequestError("too_large", f"request of {len(payload)} bytes exceeds {MAX_REQUEST}")
    try:
        envelope = _ENVELOPE.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as error:
        request = _json(payload)
        refusal = RequestError("bad_request", _envelope_error(str(error)))
        refusal.rid = _rid_of(request)  # so a client with several requests in flight knows which one failed
        raise refusal from None
    command = COMMANDS.get(envelope.cmd)
    try:
        if command is None:
            raise RequestError(
                "unknown_command", f"unknown command {envelope.cmd[:64]!r}; known: {', '.join(COMMANDS)}"
            )
        return command, command.parse_args(envelope.args), envelope.rid
    except RequestError as error:
        error.rid = envelope.rid
        raise


def _envelope_error(error: str) -> str:
    if error.startswith("Object contains unknown field"):
        named = _NAMED.search(error)
        return f"unknown request fields: {named.group(1)[:200] if named else '?'}"
    if "`$.rid`" in error:
        return f'"rid" must be a string of at most {MAX_RID} characters'
    return 'request must be an object with a string "cmd"'


def _json(data: bytes | msgspec.Raw) -> Any:
    """`data` decoded as any JSON; raises bad_request if it is not strict JSON (bad UTF-8, a lone
    surrogate, NaN, nesting beyond the stack)."""
    try:
        return _ANY.decode(data)
    except (msgspec.DecodeError, RecursionError) as error:
        raise RequestError("bad_request", f"request is not JSON: {error}") from None


def _rid_of(request: Any) -> str | None:
    """The rid of a request refused as a whole, if it has a valid one."""
    rid = request.get("rid") if isinstance(request, dict) else None
    return rid if isinstance(rid, str) and len(rid) <= MAX_RID else None


def reply(rid: str | None, result: dict[str, Any] | None = None, error: tuple[str, str] | None = None) -> bytes:
    """The reply frame: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ...}``, with the rid."""
    body: dict[str, Any] = (
        {"ok": False, "error": {"code": error[0], "message": error[1]}} if error else {"ok": True, "result": result}
    )
    if rid is not None:
        body["rid"] = rid
    return _ENCODER.encode(body)


def handle(daemon: Daemon, payload: bytes, envelope: list[bytes], refused: Counter[str] | None = None,
           admin: bool = True) -> bytes | None:
    """One request in, its reply out (None: the daemon answers later); never raises for bad input.

    Each refusal is counted in `refused` by its error code (`dsctl stats`). Without `admin`
    (a TCP client whose key is not in admin_keys) admin commands are refused.
    """
    rid = None
    try:
        command, args, rid = parse_request(payload)
        if command.admin and not admin:
            raise RequestError("forbidden", f"{command.name} is an admin command: over TCP only a client key "
                                            "in the daemon's [control] admin_keys may run it")
        result = command.run(daemon, Request(envelope, rid), args)
        return None if result is None else reply(rid, result)
    except RequestError as error:
        if refused is not None:
            refused[error.code] += 1
        return reply(rid if error.rid is None else error.rid, error=(error.code, error.message))
    except Exception as error:  # a bug in one command must not take the control socket down
        log.exception("control request failed")
        if refused is not None:
            refused["internal"] += 1
        return reply(rid, error=("internal", f"internal error: {error}"))
