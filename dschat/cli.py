"""`dschat`: chat through the dsd cluster.

In a terminal it is interactive (prompt_toolkit: incoming lines never garble the one
being typed). Otherwise it sends each line of stdin as it arrives, prints what is
delivered meanwhile, and its exit status says whether every line was acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import threading
from dataclasses import dataclass
from typing import TextIO

from dsd import usage
from dsd.client import DaemonError
from dsd.config import ConfigError, load_settings
from dsd.curve import SERVER_KEY_NEEDED, ClientCurve, require_server_key
from dsd.usage import Parser, UsageError, check_endpoint, seconds
from dschat import render
from dschat.discover import discover
from dschat.session import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, HEARTBEAT_INTERVAL, Fatal, Output, Session
from dschat.state import Entry

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
MAX_HISTORY = 1000
INTERACTIVE_HISTORY = 20  # entries shown at start in a terminal; piped, none unless --history asks
DEFAULT_FAILOVER = 10.0
SETTLE_MARGIN = 5.0  # the end-of-input wait is this much beyond the failover time

EPILOG = """\
Interactive when stdin and stdout are a terminal (/help lists the commands). Otherwise each
line of stdin is sent as it arrives and what is delivered is printed (--json: one object
per line with the keys seq, kind, user, text, id, server, time); at the end of input dschat
waits until every line is acknowledged, leaves, and exits.

exit codes:
  0  ok: every message acknowledged
  1  failed: a message not acknowledged or refused (each is named on stderr), or another error
  2  usage
  3  daemon unreachable (no endpoint answered, or none within --failover after losing one)
  4  name refused (another client is connected as USER, or the daemon rejects the name)"""


def _history(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= MAX_HISTORY:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_HISTORY}, not {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(
        prog="dschat", description="Chat with the users of a dsd cluster.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-c", "--config", metavar="PATH",
                        help="dsd configuration to find the daemon in (default: $DSD_CONFIG, /etc/dsd.toml)")
    parser.add_argument("-e", "--endpoint", action="append", default=[], metavar="ENDPOINT",
                        help="a daemon's control endpoint, ipc://PATH or tcp://HOST:PORT (overrides the "
                             "configuration); "
                             "repeat it to fail over between daemons, in turn")
    parser.add_argument("--discover", action="store_true",
                        help="find daemons that take TCP clients by multicast (for a host without a daemon; "
                             "the group, port and interface come from the configuration)")
    parser.add_argument("--server-key", metavar="KEY",
                        help="for tcp:// endpoints: the daemons' public key (Z85, or a certificate file), "
                             "as `dsctl server-key` prints it on a daemon's host; quote it, Z85 has shell "
                             "characters")
    parser.add_argument("--key", metavar="PATH",
                        help="with --server-key: your secret certificate (NAME.key_secret from `dsctl keygen`); "
                             "default: a new key each run, which only daemons with any_client = true let in")
    parser.add_argument("--json", action="store_true", help="print entries as JSON lines (never interactive)")
    parser.add_argument("--history", type=_history, metavar="N",
                        help=f"entries of history to show at start (at most {MAX_HISTORY}; default "
                             f"{INTERACTIVE_HISTORY} in a terminal, none when piped)")
    parser.add_argument("--timeout", type=seconds, default=1.0, metavar="S",
                        help="seconds per try of a request; 3 silent tries and the daemon is lost (default 1)")
    parser.add_argument("--failover", type=seconds, default=DEFAULT_FAILOVER, metavar="S",
                        help=f"seconds to find another daemon after losing one before giving up "
                             f"(default {DEFAULT_FAILOVER:g}; interactive sessions keep trying)")
    parser.add_argument("--heartbeat", type=seconds, default=HEARTBEAT_INTERVAL, metavar="S",
                        help=f"seconds between heartbeats: under a third of the daemon's [chat] "
                             f"client_timeout (default {HEARTBEAT_INTERVAL:g})")
    parser.add_argument("--wait", type=seconds, metavar="S",
                        help=f"at end of input, seconds to wait for acknowledgements "
                             f"(default --failover + {SETTLE_MARGIN:g})")
    parser.add_argument("user", metavar="USER",
                        help="your name: 1-32 letters, digits, '.', '_', '-', starting with a letter or digit")
    args = parser.parse_args(argv)
    if not USER_NAME.fullmatch(args.user):
        parser.error(f"bad user name {args.user!r}: 1-32 letters, digits, '.', '_', '-', "
                     "starting with a letter or digit")
    for endpoint in args.endpoint:
        check_endpoint(endpoint)
    if args.wait is None:
        args.wait = args.failover + SETTLE_MARGIN
    return args


# --- what a typed line means ------------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    """A typed line: `kind` is send, who, status, history, help, quit, invalid or nothing."""

    kind: str
    text: str = ""
    count: int = 0


COMMANDS = ("who", "status", "history", "help", "quit")


def parse_input(line: str) -> Action:
    """What an interactive line asks for; an unknown /command is `invalid`, never sent."""
    text = line.rstrip("\r\n")
    if not text.strip():
        return Action("nothing")
    if text.startswith("//"):
        return Action("send", text[1:])
    if not text.startswith("/"):
        return Action("send", text)
    name, _, rest = text[1:].partition(" ")
    rest = rest.strip()
    if name not in COMMANDS:
        return Action("invalid", f"unknown command /{render.clean(name)}: /help lists them "
                                 "(start a message with // to send a leading /); nothing was sent")
    if name == "history":
        if not rest:
            return Action("history", count=20)
        if not rest.isdigit() or not 1 <= int(rest) <= MAX_HISTORY:
            return Action("invalid", f"/history N: N from 1 to {MAX_HISTORY}, not {render.clean(rest)!r}")
        return Action("history", count=int(rest))
    if rest:
        return Action("invalid", f"/{name} takes no argument")
    return Action(name)


# --- outputs ----------------------------------------------------------------------------------

class LineOutput:
    """Piped: entries on stdout (text or JSON lines), everything else on stderr."""

    def __init__(self, user: str, as_json: bool, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> None:
        self.user = user
        self.as_json = as_json
        self.stdout = stdout
        self.stderr = stderr

    def show(self, entries: list[Entry]) -> None:
        for entry in entries:
            line = render.entry_json(entry) if self.as_json else render.plain(render.entry_fragments(entry, self.user))
            print(line, file=self.stdout)
        self.stdout.flush()

    def notice(self, text: str) -> None:
        print(f"dschat: {text}", file=self.stderr, flush=True)

    error = notice


class TerminalOutput:
    """Interactive: coloured lines printed above the prompt."""

    def __init__(self, user: str) -> None:
        from prompt_toolkit.styles import Style

        self.user = user
        self._style = Style.from_dict(render.STYLE)

    def _print(self, fragments: render.Fragments) -> None:
        from prompt_toolkit import print_formatted_text
        from prompt_toolkit.formatted_text import FormattedText

        print_formatted_text(FormattedText(fragments), style=self._style)

    def show(self, entries: list[Entry]) -> None:
        for entry in entries:
            self._print(render.entry_fragments(entry, self.user))

    def text(self, text: str) -> None:
        self._print([("", text)])

    def notice(self, text: str) -> None:
        self._print([("class:notice", f"-- {text}")])

    def error(self, text: str) -> None:
        self._print([("class:error", f"!! {text}")])


# --- the two front ends -----------------------------------------------------------------------

def _stdin_lines(loop: asyncio.AbstractEventLoop) -> "asyncio.Queue[str | None]":
    """Lines of stdin as they arrive, then None.

    A thread, because stdin may be a regular file (which asyncio cannot watch), and
    os.read, because a daemon thread blocked inside sys.stdin's buffer would hold its
    lock at interpreter exit.
    """
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def put(item: str | None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: dschat is exiting without the rest
            pass

    def read() -> None:
        pending = b""
        while chunk := os.read(0, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                put(line.decode("utf-8", "replace"))
        if pending:
            put(pending.decode("utf-8", "replace"))
        put(None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return queue


def _report(output: Output, session: Session) -> int:
    failures = session.state.failures()
    if not failures:
        return EXIT_OK
    output.error(f"{len(failures)} of {session.state.sent} lines not delivered:\n  " + "\n  ".join(failures))
    return EXIT_FAILED


async def _finish(session: Session, output: Output, wait: float) -> int:
    """Wait for the acknowledgements (at most `wait` s), leave, and say what was not delivered."""
    await session.settle(wait)
    if not session.connected:  # still failing over: say that, not only what is undelivered
        output.error(f"no daemon answered within {wait:g}s of the end of input")
        _report(output, session)
        return EXIT_UNREACHABLE
    problem = await session.leave()
    if problem is not None:
        output.error(f"could not leave cleanly: {problem}")
    return _report(output, session)


async def _piped(session: Session, output: Output, wait: float) -> int:
    lines = _stdin_lines(asyncio.get_running_loop())
    number = 0
    while (line := await lines.get()) is not None:
        number += 1
        text = line.removesuffix("\r")
        if text.strip():
            session.send(text, number)
    return await _finish(session, output, wait)


async def _command(session: Session, output: TerminalOutput, action: Action) -> None:
    try:
        if action.kind == "who":
            output.text(render.render_who((await session.call("chat.who"))["users"], session.user))
        elif action.kind == "history":
            entries = (await session.call("chat.history", limit=action.count))["entries"]
            output.notice(f"the last {len(entries)} entries:")
            output.show(entries)
        elif action.kind == "status":
            view, stats = await session.call("view"), await session.call("stats")
            users = (await session.call("chat.who"))["users"]
            state = session.state
            output.text(render.render_status(view, stats, users, session.user, session.server,
                                             session.endpoint, state.last_seq, state.sent,
                                             len(state.unacknowledged()),
                                             width=shutil.get_terminal_size().columns))
    except DaemonError as error:
        output.error(f"/{action.kind}: {error}")


async def _interactive(session: Session, output: TerminalOutput, wait: float) -> int:
    # prompt_toolkit is imported here only: piped and scripted runs start faster without it.
    from prompt_toolkit import PromptSession
    from prompt_toolkit.patch_stdout import patch_stdout

    def message() -> str:
        if session.connected:
            return f"{session.user}> "
        return f"(reconnecting, {len(session.state.unacknowledged())} unsent) {session.user}> "

    output.notice(f"joined as {session.user} on {session.server or '?'} ({session.endpoint}); "
                  "/help lists the commands, Ctrl-D quits")
    prompt: PromptSession[str] = PromptSession(erase_when_done=True)
    commands: set[asyncio.Task[None]] = set()
    with patch_stdout():
        while True:
            try:
                line = await prompt.prompt_async(message, refresh_interval=0.5)
            except (EOFError, KeyboardInterrupt):
                break
            action = parse_input(line)
            if action.kind == "quit":
                break
            if action.kind == "send":
                session.send(action.text)
            elif action.kind == "help":
                output.text(render.HELP)
            elif action.kind == "invalid":
                output.error(action.text)
            elif action.kind != "nothing":
                # A task, so that the prompt stays live while a failover delays the answer.
                task = asyncio.create_task(_command(session, output, action))
                commands.add(task)
                task.add_done_callback(commands.discard)
        for task in commands:
            task.cancel()
        if session.state.unacknowledged():
            output.notice(f"waiting up to {wait:g}s for {len(session.state.unacknowledged())} "
                          "messages to be acknowledged (Ctrl-C to quit now)")
        return await _finish(session, output, wait)


async def _run(args: argparse.Namespace, endpoints: list[str], curve: ClientCurve | None, interactive: bool) -> int:
    output = TerminalOutput(args.user) if interactive else LineOutput(args.user, args.json)
    session = Session(args.user, endpoints, output, timeout=args.timeout, history=args.history,
                      failover=args.failover, persist=interactive, heartbeat=args.heartbeat, curve=curve)
    try:
        await session.connect()
        body = (_interactive(session, output, args.wait) if isinstance(output, TerminalOutput)
                else _piped(session, output, args.wait))
        return await session.run(body)
    except Fatal as fatal:
        output.error(fatal.message)
        _report(output, session)
        return fatal.code
    finally:
        session.close()


# Where multicast does not reach, --discover cannot work: what to do instead.
NAME_A_DAEMON = ("where multicast does not reach (most clouds, routed subnets), name a daemon's "
                 "[control] tcp_endpoint instead: dschat -e tcp://HOST:PORT")


def run(argv: list[str] | None) -> int:
    args = parse_args(argv)
    curve = ClientCurve.from_options(args.server_key, args.key)
    require_server_key(args.endpoint, curve)
    if args.discover and curve is None:
        raise UsageError(f"--discover finds TCP endpoints, which are encrypted: {SERVER_KEY_NEEDED}")
    endpoints = list(args.endpoint)
    if not endpoints or args.discover:
        try:
            settings = load_settings(args.config)
        except ConfigError as error:
            print(f"dschat: {error}", file=sys.stderr)
            return EXIT_FAILED
        if args.discover:
            if not settings.cluster.multicast:
                print(f"dschat: --discover works by multicast, and {settings.source or 'the configuration'} "
                      f"says [cluster] multicast = false; {NAME_A_DAEMON}", file=sys.stderr)
                return EXIT_FAILED
            try:
                endpoints += asyncio.run(discover(settings.cluster))
            except OSError as error:
                print(f"dschat: cannot send the discovery probe: {error}; {NAME_A_DAEMON}", file=sys.stderr)
                return EXIT_FAILED
            if not endpoints:
                print(f"dschat: no daemon answered the discovery probe on {settings.cluster.group}:"
                      f"{settings.cluster.port}; is [control] tcp_endpoint set on the daemons, and is "
                      f"multicast allowed between the hosts? {NAME_A_DAEMON[0].upper()}{NAME_A_DAEMON[1:]}",
                      file=sys.stderr)
                return EXIT_UNREACHABLE
        else:
            endpoints = [settings.control.endpoint]
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not args.json
    if args.history is None:
        args.history = INTERACTIVE_HISTORY if interactive else 0
    return asyncio.run(_run(args, endpoints, curve, interactive))


def main(argv: list[str] | None = None) -> int:
    return usage.run("dschat", lambda: run(argv))
