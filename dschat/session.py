"""The connection to the daemons: requests, the feed, join, resume and failover.

One :class:`Link` per daemon tried: Lazy Pirate requests over a REQ socket (as
`dsd.client.ControlClient`, but awaitable, so the prompt never freezes) and a SUB on
the daemon's feed. :class:`Session` keeps one link up and runs the client's duties
on it as tasks (sender, heartbeat, gap filler, supervisor); everything they learn
goes through the pure :class:`~dschat.state.ChatState`.

Failover: any request that gets no answer marks its link lost; the supervisor then
tries the next endpoint (round robin), joins again with the same session token,
fetches `chat.since` the last seq shown, and wakes the sender, which re-sends every
unacknowledged message with its original id (the daemon records each id once).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, Awaitable, Callable, Coroutine, Protocol

import zmq
import zmq.asyncio

from dsd.client import DaemonError, Unreachable, feed_address
from dsd.curve import UNANSWERED_TCP_HINT, ClientCurve, connect, is_tcp
from dschat.state import ChatState, Entry, new_token

# Exit statuses (2, usage, is argparse's).
EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE, EXIT_REFUSED = 0, 1, 3, 4

HEARTBEAT_INTERVAL = 3.0  # the daemon's client_timeout (10 s by default) / 3, with margin
BACKOFF_MIN, BACKOFF_MAX = 0.2, 2.0
RETRY_LATER = ("rate_limited", "unavailable", "no_quorum")
HIDDEN_KINDS = ("config",)  # entries of the log that are the daemons' business: not shown
FEED_TOPIC = b"chat."

Request = Callable[..., Awaitable[dict[str, Any]]]


class Fatal(Exception):
    """The client cannot go on; `code` is the exit status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Output(Protocol):
    """Where the session reports: entries due for display, notices, errors."""

    def show(self, entries: list[Entry]) -> None: ...

    def notice(self, text: str) -> None: ...

    def error(self, text: str) -> None: ...


def _result(raw: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(raw)
    except ValueError:
        raise DaemonError("bad_reply", "the daemon's reply is not JSON") from None
    if not isinstance(reply, dict):
        raise DaemonError("bad_reply", "the daemon's reply is not an object")
    if reply.get("ok"):
        return reply.get("result") or {}
    error = reply.get("error") or {}
    raise DaemonError(str(error.get("code", "error")), str(error.get("message", "request failed")))


def _entries(frames: list[bytes]) -> list[Entry]:
    """A feed message `[topic, json, ...]` as its entries, leaving out anything malformed."""
    entries = []
    for frame in frames[1:]:
        try:
            entry = json.loads(frame)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("seq"), int):
            entries.append(entry)
    return entries


class Link:
    """One daemon: Lazy Pirate requests on a REQ socket, and a SUB on its feed."""

    def __init__(self, context: zmq.asyncio.Context, endpoint: str, timeout: float, retries: int,
                 curve: ClientCurve | None = None) -> None:
        self.endpoint = endpoint
        self.curve = curve
        self.timeout = timeout
        self.retries = retries
        self.lost = asyncio.Event()
        self.reason = ""
        self.feed: zmq.asyncio.Socket | None = None
        self._context = context
        self._socket: zmq.asyncio.Socket | None = None
        self._lock = asyncio.Lock()  # a REQ socket carries one request at a time

    async def request(self, cmd: str, **args: Any) -> dict[str, Any]:
        """One command; its result, or DaemonError, or Unreachable after `retries` silent tries."""
        payload = json.dumps({"cmd": cmd, "args": args}).encode()
        async with self._lock:
            for _ in range(self.retries):
                if self.lost.is_set():
                    raise Unreachable(self.reason)
                if self.endpoint.startswith("ipc://") and not os.path.exists(self.endpoint[6:]):
                    raise Unreachable(f"no daemon at {self.endpoint} (no such socket)")
                socket = self._request_socket()
                try:
                    await socket.send(payload)
                    answered = await socket.poll(int(self.timeout * 1000), zmq.POLLIN)
                    raw = await socket.recv() if answered else None
                except BaseException:
                    # Cancelled mid-request: the REQ still waits for a reply and cannot send again.
                    self._close_request_socket()
                    raise
                if raw is not None:
                    return _result(raw)
                self._close_request_socket()
        raise Unreachable(f"no answer from {self.endpoint} after {self.retries} tries of {self.timeout:g}s")

    def subscribe(self, feed: str) -> None:
        self.feed = self._context.socket(zmq.SUB)
        self.feed.setsockopt(zmq.LINGER, 0)
        self.feed.setsockopt(zmq.SUBSCRIBE, FEED_TOPIC)
        connect(self.feed, feed, self.curve)

    def _request_socket(self) -> zmq.asyncio.Socket:
        if self._socket is None:
            self._socket = self._context.socket(zmq.REQ)
            self._socket.setsockopt(zmq.LINGER, 0)
            connect(self._socket, self.endpoint, self.curve)
        return self._socket

    def _close_request_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def close(self) -> None:
        self._close_request_socket()
        if self.feed is not None:
            self.feed.close(linger=0)
            self.feed = None


class Session:
    """A user in the chat, kept connected to one of `endpoints` for as long as it runs.

    `persist`: after `failover` seconds without any daemon, keep trying (interactive)
    rather than give up with :class:`Fatal` (piped: the exit status must come).
    """

    def __init__(self, user: str, endpoints: list[str], output: Output, *, timeout: float = 1.0,
                 retries: int = 3, history: int = 20, failover: float = 10.0, persist: bool = False,
                 heartbeat: float = HEARTBEAT_INTERVAL, curve: ClientCurve | None = None) -> None:
        self.user = user
        self.endpoints = endpoints
        self.curve = curve  # for the tcp:// endpoints
        self.output = output
        self.state = ChatState(user)
        self.token = new_token()  # made once: a re-join after a failover proves it is still us
        self.server: str | None = None
        self.timeout, self.retries, self.history = timeout, retries, history
        self.failover, self.persist, self.heartbeat = failover, persist, heartbeat
        self._index = 0
        self._link: Link | None = None
        self._feed_task: asyncio.Task[None] | None = None
        self._up = asyncio.Event()  # a link is joined and resumed
        self._work = asyncio.Event()  # the sender may have something to send
        self._behind = asyncio.Event()  # entries are known to be missing
        self._progress = asyncio.Event()  # a message was acknowledged or refused
        self._rejoining = asyncio.Lock()
        self._context = zmq.asyncio.Context()

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._index]

    @property
    def connected(self) -> bool:
        """Joined and resumed on a daemon (False while failing over)."""
        return self._up.is_set()

    @property
    def _me(self) -> dict[str, str]:
        return {"user": self.user, "session": self.token}

    # --- what the front end uses ------------------------------------------------------------

    async def connect(self) -> None:
        """The first connection: each endpoint in turn; Fatal(EXIT_UNREACHABLE) if none answers."""
        deadline = asyncio.get_running_loop().time() + self.failover
        errors = []
        for index in range(len(self.endpoints)):
            try:
                await self._establish(index, deadline)
                return
            except Unreachable as error:
                errors.append(str(error))
        # Said once, and only here: after a failover the keys are known to be right.
        hint = f"; {UNANSWERED_TCP_HINT}" if any(map(is_tcp, self.endpoints)) else ""
        raise Fatal(EXIT_UNREACHABLE, "; ".join(errors) + hint)

    async def run(self, body: Coroutine[Any, Any, int]) -> int:
        """Run `body` (the front end) with the client's duties beside it; its result, or the first Fatal."""
        duties = [asyncio.create_task(duty()) for duty in
                  (self._supervise, self._send, self._beat, self._fill_gaps)]
        main = asyncio.create_task(body)
        try:
            done, _ = await asyncio.wait([main, *duties], return_when=asyncio.FIRST_COMPLETED)
            return (main if main in done else done.pop()).result()
        finally:
            for task in [main, *duties]:
                task.cancel()
            await asyncio.gather(main, *duties, return_exceptions=True)

    def send(self, text: str, line: int | None = None) -> None:
        self.state.submit(text, line)
        self._work.set()

    async def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """A request to the current daemon; waits through failovers rather than failing."""
        while True:
            await self._up.wait()
            link = self._link
            assert link is not None
            try:
                return await link.request(cmd, **args)
            except Unreachable as error:
                self._lose(link, str(error))

    async def settle(self, timeout: float) -> bool:
        """Wait until every message is acknowledged or refused; False after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.state.unacknowledged():
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                return False
        return True

    async def leave(self) -> str | None:
        """`chat.leave` on the current daemon, without failing over; None, or what went wrong.

        The log is then shown up to the leave entry, so the output always ends the same way.
        `not_joined` counts as left: it is what a leave asked again gets when the first one
        was done but its reply came later than `timeout` (or the daemon had timed us out);
        either way we are out of the chat, as asked.
        """
        link = self._link
        if link is None or not self.connected:
            return "not connected"
        try:
            try:
                await link.request("chat.leave", **self._me)
            except DaemonError as error:
                if error.code != "not_joined":
                    raise
            await self._fetch_since(link.request)
        except (Unreachable, DaemonError) as error:
            return str(error)
        return None

    def close(self) -> None:
        if self._feed_task is not None:
            self._feed_task.cancel()
        if self._link is not None:
            self._link.close()
        self._context.destroy(linger=0)

    # --- connecting -------------------------------------------------------------------------

    async def _establish(self, index: int, deadline: float) -> None:
        """Connect to endpoint `index`: feed first, then join, then history or since."""
        link = Link(self._context, self.endpoints[index], self.timeout, self.retries, self.curve)
        try:
            info = await link.request("info")
            if not isinstance(info.get("feed"), str):
                raise Fatal(EXIT_FAILED, f"{link.endpoint} names no feed in its info: is it a dsd with chat?")
            remote = link.endpoint.startswith("tcp://") and isinstance(info.get("tcp_feed"), str)
            link.subscribe(feed_address(link.endpoint, info["tcp_feed"] if remote else info["feed"]))
            joined = await self._join(link.request, link.endpoint, deadline)
            if self.state.last_seq is None and self.history:
                result = await link.request("chat.history", limit=self.history)
                self._deliver(self.state.start(result["entries"], result["last_seq"]))
            else:
                if self.state.last_seq is None:  # no history: start at our own join
                    self._deliver(self.state.start([], joined["seq"] - 1))
                await self._fetch_since(link.request)
        except DaemonError as error:
            link.close()
            raise Fatal(EXIT_FAILED, f"{link.endpoint}: {error}") from None
        except BaseException:
            link.close()
            raise
        self._link, self._index, self.server = link, index, joined.get("server")
        if "client_timeout" in joined:  # heartbeat well within the daemon's patience
            self.heartbeat = min(self.heartbeat, joined["client_timeout"] / 3)
        self._feed_task = asyncio.create_task(self._read_feed(link))
        self._up.set()
        self._work.set()  # re-send whatever is still owed

    async def _join(self, request: Request, endpoint: str, deadline: float) -> dict[str, Any]:
        """`chat.join`, retried while the cluster has no leader (until `deadline`)."""
        delay = BACKOFF_MIN
        while True:
            try:
                return await request("chat.join", **self._me)
            except DaemonError as error:
                if error.code == "name_taken":
                    raise Fatal(EXIT_REFUSED, f"the name {self.user!r} is taken: another client is "
                                              f"connected as {self.user} ({error.message})") from None
                if error.code == "bad_user":
                    raise Fatal(EXIT_REFUSED, f"the daemon refuses the name {self.user!r}: {error.message}") from None
                if error.code == "too_many_clients":  # full: another daemon may have room
                    raise Unreachable(f"{endpoint}: {error.message}") from None
                if error.code not in ("unavailable", "no_quorum"):
                    raise Fatal(EXIT_FAILED, f"{endpoint} refused chat.join: {error}") from None
                if asyncio.get_running_loop().time() >= deadline:
                    raise Unreachable(f"{endpoint}: the chat is unavailable ({error.message})") from None
            await asyncio.sleep(delay)
            delay = min(2 * delay, BACKOFF_MAX)

    async def _rejoin(self) -> None:
        """Join again after `not_joined` (the daemon timed us out); once, however many tasks ask."""
        async with self._rejoining:
            try:
                await self.call("chat.heartbeat", **self._me)
                return  # another task already re-joined
            except DaemonError as error:
                if error.code != "not_joined":
                    return  # answered, and not about the session: nothing a join would fix
            deadline = asyncio.get_running_loop().time() + self.failover
            try:
                joined = await self._join(self.call, self.endpoint, deadline)
            except Unreachable as error:  # this daemon cannot take us now: fail over (or reconnect)
                if self._link is not None:
                    self._lose(self._link, str(error))
                return
            self.server = joined.get("server", self.server)
            self.output.notice(f"joined again as {self.user} (the daemon had timed us out)")
            self._behind.set()

    def _lose(self, link: Link, reason: str) -> None:
        if link is self._link and not link.lost.is_set():
            link.reason = reason
            link.lost.set()
            self._up.clear()  # callers now wait for the supervisor's new link

    async def _failover(self) -> None:
        """Next endpoints in turn until one joins; Fatal after `failover` seconds unless persistent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.failover
        delay, warned = BACKOFF_MIN, False
        count = len(self.endpoints)
        while True:
            for step in range(1, count + 1):
                index = (self._index + step) % count
                try:
                    await self._establish(index, deadline)
                    self.output.notice(f"connected to {self.server or '?'} at {self.endpoint}; "
                                       f"resumed after seq {self.state.last_seq}")
                    return
                except Unreachable as error:
                    last_error = str(error)
            if loop.time() >= deadline:
                if not self.persist:
                    raise Fatal(EXIT_UNREACHABLE, f"no daemon answered for {self.failover:g}s: {last_error}")
                if not warned:
                    self.output.error(f"no daemon answers ({last_error}); still trying")
                    warned = True
            await asyncio.sleep(delay)
            delay = min(2 * delay, BACKOFF_MAX)

    # --- the duties -------------------------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            link = self._link
            assert link is not None
            await link.lost.wait()
            if self._feed_task is not None:
                self._feed_task.cancel()
            link.close()
            where = "failing over" if len(self.endpoints) > 1 else f"reconnecting for up to {self.failover:g}s"
            self.output.notice(f"lost {link.endpoint}: {link.reason}; {where}")
            await self._failover()

    async def _send(self) -> None:
        """Send what is owed, oldest first, one at a time: the order typed is the order logged."""
        delay = BACKOFF_MIN
        backing_off = False  # a refusal to retry later is said once per spell, not per retry
        while True:
            outgoing = self.state.next_to_send()
            if outgoing is None:
                self._work.clear()
                await self._work.wait()
                continue
            try:
                result = await self.call("chat.send", **self._me, id=outgoing.id, text=outgoing.text)
            except DaemonError as error:
                if error.code == "no_quorum" and len(self.endpoints) > 1 and self._link is not None:
                    self._lose(self._link, f"{error.message} ({error.code})")  # another may be on the majority side
                    continue
                if error.code in RETRY_LATER:
                    if not backing_off:
                        self.output.notice(f"{error.message} ({error.code}); retrying with backoff")
                    backing_off = True
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, BACKOFF_MAX)
                    continue
                if error.code == "not_joined":
                    await self._rejoin()
                    continue
                self.state.refuse(outgoing.id, f"{error.message} ({error.code})")
                self.output.error(f"not sent: {outgoing.text[:40]!r}: {error.message} ({error.code})")
            else:
                self.state.acknowledge(outgoing.id, result["seq"])
                delay, backing_off = BACKOFF_MIN, False
            self._progress.set()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                result = await self.call("chat.heartbeat", **self._me)
            except DaemonError as error:
                if error.code != "not_joined":
                    self.output.error(f"heartbeat refused: {error}")
                    continue
                await self._rejoin()
                continue
            self.state.note_last(result.get("last_seq", 0))
            if self.state.wanted() is not None:
                self._behind.set()

    async def _fill_gaps(self) -> None:
        while True:
            await self._behind.wait()
            self._behind.clear()
            try:
                await self._fetch_since(self.call)
            except DaemonError as error:
                self.output.error(f"cannot fetch missing entries: {error}")

    async def _fetch_since(self, request: Request) -> None:
        """`chat.since` the last seq shown, until caught up or the daemon has nothing more."""
        while True:
            before = self.state.last_seq
            result = await request("chat.since", seq=before)
            self.state.note_last(result["last_seq"])
            first = result.get("first_seq", 0)
            skipped = self.state.skip_to(first)
            if skipped:
                self.output.notice(f"{skipped} entries before seq {first} are no longer kept "
                                   "(the daemon's [chat] retention); going on from there")
            self._deliver(self.state.receive(result["entries"]))
            if self.state.last_seq == before or self.state.wanted() is None:
                return

    async def _read_feed(self, link: Link) -> None:
        assert link.feed is not None
        while True:
            entries = _entries(await link.feed.recv_multipart())
            if not entries:
                continue
            self._deliver(self.state.receive(entries))
            if self.state.wanted() is not None:
                self._behind.set()

    def _deliver(self, entries: list[Entry]) -> None:
        shown = [entry for entry in entries if entry.get("kind") not in HIDDEN_KINDS]
        if shown:
            self.output.show(shown)
        if entries:
            self._progress.set()  # our own messages in the log count as acknowledged
