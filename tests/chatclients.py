"""Chat clients and log checks shared by the chat integration tests and the chaos soak.

The log as the daemons hold it (`chat.since` through the control socket) and real dschat
processes, piped or in a pseudo-terminal, each stopped by its pid.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from typing import Any

from dsd.client import ControlClient, DaemonError, Unreachable
from tests.cluster import Cluster, Daemon, wait_until
from tests.processes import kill_group, spawn

HEARTBEAT = "0.2"  # dschat --heartbeat: well under a third of the tests' client_timeout (1 s)
JSON_KEYS = ("seq", "kind", "user", "text", "id", "server", "time")
PACE = 0.02  # seconds between lines fed to a client: a stream, not a burst


# --- the log as the daemons hold it -----------------------------------------------------------

def request(daemon: Daemon, cmd: str, **args: Any) -> dict[str, Any]:
    with ControlClient(daemon.endpoint, timeout=1.0, retries=3) as client:
        return client.request(cmd, **args)


def chat_log(daemon: Daemon) -> list[dict[str, Any]]:
    """Every committed entry `daemon` holds (`chat.since 0`, page by page), checked gapless."""
    entries: list[dict[str, Any]] = []
    while True:
        result = request(daemon, "chat.since", seq=len(entries))
        entries.extend(result["entries"])
        if not result["entries"] or entries[-1]["seq"] >= result["last_seq"]:
            break
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1)), \
        f"{daemon.name}: the log has a gap or a repeat"
    return entries


def try_log(daemon: Daemon) -> list[dict[str, Any]] | None:
    try:
        return chat_log(daemon)
    except (Unreachable, DaemonError):
        return None


def agreed_log(cluster: Cluster, among: list[str] | None = None, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The log, once every live daemon (or each of `among`) holds exactly the same one."""
    daemons = [cluster.daemons[n] for n in among] if among else cluster.live()

    def same() -> tuple[list[dict[str, Any]]] | None:
        logs = [try_log(d) for d in daemons]
        if any(log is None for log in logs) or any(log != logs[0] for log in logs):
            return None
        return (logs[0],)

    try:
        return wait_until(same, timeout, interval=0.05, what=f"the same chat log on {[d.name for d in daemons]}")[0]
    except AssertionError as error:
        raise AssertionError(f"{error}\n{cluster.describe()}") from None


def messages(log: list[dict[str, Any]], user: str) -> list[dict[str, Any]]:
    return [e for e in log if e["kind"] == "message" and e["user"] == user]


def who(daemon: Daemon) -> list[dict[str, Any]] | None:
    try:
        return request(daemon, "chat.who")["users"]
    except (Unreachable, DaemonError):
        return None


def present(cluster: Cluster, *users: str) -> bool:
    """Every live daemon lists exactly `users` in the chat."""
    for daemon in cluster.live():
        listed = who(daemon)
        if listed is None or sorted(u["user"] for u in listed) != sorted(users):
            return False
    return True


def assert_view(view: list[dict[str, Any]], log: list[dict[str, Any]], name: str) -> None:
    """`view` (a client's --json output) is a contiguous run of `log`, entry for entry, but for
    the log's configuration entries, which dschat does not show."""
    assert view, f"{name} printed nothing"
    seqs = [e["seq"] for e in view]
    shown = [e["seq"] for e in log[seqs[0] - 1:seqs[-1]] if e["kind"] != "config"]
    assert seqs == shown, f"{name}: not a contiguous run of the log: {seqs}"
    for entry in view:
        assert list(entry) == list(JSON_KEYS), f"{name}: keys {list(entry)}"
        assert entry == {k: log[entry["seq"] - 1][k] for k in JSON_KEYS}, f"{name}: differs from the log"


def assert_recorded_once_in_order(log: list[dict[str, Any]], user: str, lines: list[str]) -> None:
    """Each of `lines` is a message of `user` exactly once, in this order, and nothing else of theirs."""
    mine = messages(log, user)
    assert [e["text"] for e in mine] == lines, f"{user}'s messages in the log"
    ids = [e["id"] for e in mine]
    assert len(set(ids)) == len(ids), f"{user}: a message id recorded twice"


# --- dschat processes -------------------------------------------------------------------------

class PipedChat:
    """`dschat --json USER` on a private host, stdin a pipe; what it prints is collected as it comes."""

    def __init__(self, cluster: Cluster, host: int, user: str, endpoints: list[str], *options: str) -> None:
        self.user = user
        args = [sys.executable, "-m", "dschat", "--json", "--heartbeat", HEARTBEAT]
        for endpoint in endpoints:
            args += ["-e", endpoint]
        self.process = spawn(
            cluster.prefix(host) + args + list(options) + [user],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        self.view: list[dict[str, Any]] = []
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_entries, daemon=True),
            threading.Thread(target=lambda: self._stderr.extend(self.process.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_entries(self) -> None:
        for line in self.process.stdout:
            self.view.append(json.loads(line))

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def write(self, *lines: str) -> None:
        for line in lines:
            self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def close_input(self) -> None:
        if not self.process.stdin.closed:
            self.process.stdin.close()

    def seen(self, user: str, text: str) -> bool:
        return any(e["kind"] == "message" and e["user"] == user and e["text"] == text for e in self.view)

    def own(self) -> list[str]:
        """The texts of this user's messages shown (history included: each test has its own user names)."""
        return [e["text"] for e in self.view if e["kind"] == "message" and e["user"] == self.user]

    def finish(self, timeout: float = 30) -> int:
        """Close stdin, wait for the exit status and for the last of the output."""
        self.close_input()
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def stop(self) -> None:
        kill_group(self.process)  # SIGKILL ends a stopped (SIGSTOP) process too
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except OSError:
                pass


ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[=>()][0-9A-Za-z]?")


class TerminalChat:
    """`dschat USER` in a pseudo-terminal, interactive (prompt_toolkit), on a private host."""

    def __init__(self, cluster: Cluster, host: int, user: str, endpoint: str) -> None:
        self.user = user
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
        self.process = spawn(
            cluster.prefix(host) + [sys.executable, "-m", "dschat", "-e", endpoint, "--heartbeat", HEARTBEAT, user],
            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
        )
        os.close(slave)
        self.master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO once the child has gone
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def screen(self) -> str:
        """What was written to the terminal, escape sequences and carriage returns removed."""
        return ANSI.sub("", b"".join(self._chunks).decode("utf-8", "replace")).replace("\r", "")

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def finish(self, timeout: float = 30) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        kill_group(self.process)
        self._reader.join(timeout=5)
        try:
            os.close(self.master)
        except OSError:
            pass


class Chats:
    """The dschat processes of one test, on `cluster`; all stopped by pid at the end."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.processes: list[PipedChat | TerminalChat] = []

    def endpoint(self, name: str) -> str:
        return self.cluster.daemons[name].endpoint

    def piped(self, host: int, user: str, *servers: str, options: tuple[str, ...] = ()) -> PipedChat:
        chat = PipedChat(self.cluster, host, user, [self.endpoint(s) for s in servers], *options)
        self.processes.append(chat)
        return chat

    def terminal(self, host: int, user: str, server: str) -> TerminalChat:
        chat = TerminalChat(self.cluster, host, user, self.endpoint(server))
        self.processes.append(chat)
        return chat

    def close(self) -> None:
        for chat in self.processes:
            chat.stop()


def feed(chat: PipedChat, lines: list[str], then: threading.Event, rest: list[str]) -> threading.Thread:
    """In a thread: write `lines` to `chat` one every PACE seconds, then `rest` once `then` is set."""

    def run() -> None:
        try:
            for line in lines:
                chat.write(line)
                time.sleep(PACE)  # pacing the stream, not waiting for anything
            then.wait(30)
            for line in rest:
                chat.write(line)
                time.sleep(PACE)
        except (OSError, ValueError):  # the test failed and stopped the client meanwhile
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
