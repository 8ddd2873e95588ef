"""A fake dsd chat service for dschat's tests: docs/chat-api.md, minimally, in-process.

:class:`FakeChat` is the cluster: one log and one presence table, shared by its
:class:`FakeDaemon`\\ s as real daemons share the replicated log. Each daemon has its own
ROUTER (control) and PUB (feed) on ipc sockets and publishes every entry of the log.
One thread serves every socket, so no socket crosses threads; tests change the fakes
only through :meth:`FakeChat.call`, which runs a function in that thread.

Faults, per daemon: ``faults[cmd]`` is a list of one-shot actions for the next requests of
``cmd`` (an error code to answer with, ``"drop"`` (no answer), ``"lose_reply"`` (done, no
answer), ``"crash_before"`` / ``"crash_after"`` (the daemon closes without answering,
before or after doing it)); ``faults["chat.send TEXT"]``, the same for the next sends of
that text only (a client may send a line again when its reply is slow, so a fault meant for
a later line must not be taken by a repeat of an earlier one); ``always[cmd]`` is an error
code for every request of ``cmd``; ``frozen`` answers nothing; ``unpublished`` holds seqs
its feed skips.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import zmq

USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
SESSION = re.compile(r"[A-Za-z0-9_-]{16,64}")
SPECIAL = ("drop", "lose_reply", "crash_before", "crash_after")

T = TypeVar("T")


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Presence:
    session: str
    server: str
    since: float


@dataclass
class FakeDaemon:
    name: str
    endpoint: str
    feed: str
    router: zmq.Socket
    pub: zmq.Socket
    faults: dict[str, list[str]] = field(default_factory=dict)
    always: dict[str, str] = field(default_factory=dict)
    frozen: bool = False
    unpublished: set[int] = field(default_factory=set)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    published: int = 0  # entries of the log published (or skipped) so far
    closed: bool = False

    def close(self) -> None:
        """Like a crash: the sockets go, the ipc files stay (connecting to them is refused)."""
        self.router.close(linger=0)
        self.pub.close(linger=0)
        self.closed = True

    def sent(self, cmd: str) -> list[dict[str, Any]]:
        return [args for name, args in self.requests if name == cmd]


class FakeChat:
    """The fake cluster: daemons `names`, sockets in `directory`, one serving thread."""

    def __init__(self, directory: Path, names: tuple[str, ...] = ("h1",), max_message: int = 64) -> None:
        self.max_message = max_message
        self.log: list[dict[str, Any]] = []
        self.first_seq = 1  # entries before it are trimmed: chat.since no longer returns them
        self.ids: dict[str, int] = {}
        self.present: dict[str, Presence] = {}
        self.sessions: dict[str, str] = {}  # user -> the last session that joined as them
        self._context = zmq.Context()
        self.daemons: dict[str, FakeDaemon] = {}
        for name in names:
            router, pub = self._context.socket(zmq.ROUTER), self._context.socket(zmq.PUB)
            endpoint, feed = f"ipc://{directory}/{name}.ctl", f"ipc://{directory}/{name}.feed"
            router.bind(endpoint)
            pub.bind(feed)
            self.daemons[name] = FakeDaemon(name, endpoint, feed, router, pub)
        self._calls: queue.Queue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = queue.Queue()
        self._wake_address = f"inproc://wake-{id(self)}"
        self._wake_in = self._context.socket(zmq.PAIR)
        self._wake_in.bind(self._wake_address)
        self._wake_out = self._context.socket(zmq.PAIR)
        self._wake_out.connect(self._wake_address)
        self._wake_lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="fake-chat", daemon=True)
        self._thread.start()

    # --- for tests (any thread) ------------------------------------------------------------

    def call(self, function: Callable[[], T]) -> T:
        """Run `function` in the serving thread and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._calls.put((function, future))
        with self._wake_lock:
            self._wake_out.send(b"")
        return future.result(timeout=60)  # generous: a loaded machine may starve this thread

    def entries(self) -> list[dict[str, Any]]:
        return self.call(lambda: [dict(entry) for entry in self.log])

    def messages(self) -> list[str]:
        return [entry["text"] for entry in self.entries() if entry["kind"] == "message"]

    def requests(self, name: str, cmd: str) -> list[dict[str, Any]]:
        return self.call(lambda: list(self.daemons[name].sent(cmd)))

    def post(self, user: str, text: str, unpublished_by: tuple[str, ...] = ()) -> int:
        """A message from a user who is not a dschat under test; its seq."""
        def post() -> int:
            seq = self._append("message", user, text, "h0", f"{user}-{len(self.log)}")
            for name in unpublished_by:
                self.daemons[name].unpublished.add(seq)
            return seq
        return self.call(post)

    def trim(self, first_seq: int) -> None:
        """Forget the entries before `first_seq`, as retention does."""
        def trim() -> None:
            self.first_seq = first_seq
        self.call(trim)

    def close(self) -> None:
        def stop() -> None:
            self._running = False
            for daemon in self.daemons.values():
                if not daemon.closed:
                    daemon.close()
        self.call(stop)
        self._thread.join(timeout=60)
        self._wake_in.close(linger=0)
        self._wake_out.close(linger=0)
        self._context.term()

    # --- the serving thread ----------------------------------------------------------------

    def _serve(self) -> None:
        while self._running:
            poller = zmq.Poller()
            poller.register(self._wake_in, zmq.POLLIN)
            live = [d for d in self.daemons.values() if not d.closed]
            for daemon in live:
                poller.register(daemon.router, zmq.POLLIN)
            ready = dict(poller.poll())
            if self._wake_in in ready:
                while self._wake_in.poll(0):
                    self._wake_in.recv()
                while not self._calls.empty():
                    function, future = self._calls.get()
                    try:
                        future.set_result(function())
                    except BaseException as error:  # handed to the test that asked
                        future.set_exception(error)
            for daemon in live:
                if not daemon.closed and daemon.router in ready:
                    while not daemon.closed and daemon.router.poll(0):
                        self._handle(daemon, daemon.router.recv_multipart())
            self._publish()

    def _publish(self) -> None:
        for daemon in self.daemons.values():
            while not daemon.closed and daemon.published < len(self.log):
                entry = self.log[daemon.published]
                daemon.published += 1
                if entry["seq"] not in daemon.unpublished:
                    topic = "chat.message" if entry["kind"] == "message" else "chat.presence"
                    frame = {**entry, "topic": topic, "node": daemon.name}
                    daemon.pub.send_multipart([topic.encode(), json.dumps(frame).encode()])

    def _handle(self, daemon: FakeDaemon, frames: list[bytes]) -> None:
        identity, _, payload = frames
        request = json.loads(payload)
        cmd, args = request["cmd"], request.get("args", {})
        daemon.requests.append((cmd, args))
        pending = daemon.faults.get(f"{cmd} {args.get('text')}") or daemon.faults.get(cmd)
        action = pending.pop(0) if pending else daemon.always.get(cmd)
        if daemon.frozen or action == "drop":
            return
        if action == "crash_before":
            daemon.close()
            return
        if action is not None and action not in SPECIAL:
            reply = {"ok": False, "error": {"code": action, "message": f"fake {action}"}}
        else:
            try:
                reply = {"ok": True, "result": self._run(daemon, cmd, args)}
            except Refused as error:
                reply = {"ok": False, "error": {"code": error.code, "message": str(error)}}
        if action == "crash_after":
            daemon.close()
            return
        if action != "lose_reply":
            daemon.router.send_multipart([identity, b"", json.dumps(reply).encode()])

    # --- docs/chat-api.md ------------------------------------------------------------------

    def _append(self, kind: str, user: str, text: str, server: str, entry_id: str) -> int:
        seq = len(self.log) + 1
        self.log.append({"seq": seq, "kind": kind, "user": user, "text": text, "id": entry_id,
                         "server": server, "time": round(time.time(), 6)})
        return seq

    def _joined(self, args: dict[str, Any]) -> Presence:
        presence = self.present.get(args.get("user", ""))
        if presence is None or presence.session != args.get("session"):
            raise Refused("not_joined", "join first")
        return presence

    def _run(self, daemon: FakeDaemon, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        if cmd == "info":
            return {"name": daemon.name, "version": "fake", "pid": os.getpid(),
                    "endpoint": daemon.endpoint, "feed": daemon.feed}
        if cmd == "chat.join":
            user, session = args.get("user", ""), args.get("session", "")
            if not USER.fullmatch(user):
                raise Refused("bad_user", f"bad user name {user!r}")
            if not SESSION.fullmatch(session):
                raise Refused("bad_args", "bad session")
            held = self.present.get(user)
            if held is not None and held.session != session:
                raise Refused("name_taken", f"{user} is connected on {held.server}")
            again = self.sessions.get(user) == session
            self.present[user] = Presence(session, daemon.name, time.time())
            self.sessions[user] = session
            seq = self._append("join", user, "rejoined" if again else "", daemon.name, f"j{len(self.log) + 1}")
            return {"seq": seq, "user": user, "server": daemon.name}
        if cmd == "chat.send":
            presence = self._joined(args)
            text, message_id = args.get("text", ""), args.get("id", "")
            if not text or not TOKEN.fullmatch(message_id):
                raise Refused("bad_args", "empty text or bad id")
            if len(text.encode()) > self.max_message:
                raise Refused("too_large", f"message of {len(text.encode())} bytes exceeds {self.max_message}")
            if message_id not in self.ids:
                self.ids[message_id] = self._append("message", args["user"], text, presence.server, message_id)
            return {"seq": self.ids[message_id]}
        if cmd == "chat.heartbeat":
            self._joined(args)
            return {"last_seq": len(self.log)}
        if cmd == "chat.leave":
            presence = self._joined(args)
            del self.present[args["user"]]
            return {"seq": self._append("leave", args["user"], "", presence.server, f"l{len(self.log) + 1}")}
        if cmd in ("chat.since", "chat.history"):
            limit = args.get("limit", 1000 if cmd == "chat.since" else 20)
            if not isinstance(limit, int) or not 1 <= limit <= 1000:
                raise Refused("bad_args", "limit: 1 to 1000")
            if cmd == "chat.history":
                return {"entries": self.log[-limit:], "last_seq": len(self.log)}
            seq = args.get("seq")
            if not isinstance(seq, int) or seq < 0:
                raise Refused("bad_args", "seq: an integer >= 0")
            start = max(seq, self.first_seq - 1)
            return {"entries": self.log[start:start + limit], "last_seq": len(self.log),
                    "first_seq": self.first_seq}
        if cmd == "chat.who":
            return {"users": [{"user": user, "server": p.server, "since": p.since}
                              for user, p in self.present.items()]}
        raise Refused("unknown_command", f"unknown command {cmd!r}")
