"""The running daemon: wires the pure core to the sockets, the clock and systemd.

No protocol decision lives here: inputs go to `dsd.core.node.Node`, and its
actions (send, publish, log) are carried out. One timer is re-armed at the
core's `next_deadline()` after every input.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import time
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import zmq

from dsd import __version__, auth, commands, human, linkwire, logs, wire
from dsd.config import ConfigError, Settings, load_settings, parse_peer
from dsd.core.actions import Action, Log, Publish, Reply, Resolve, Send, Stop, Transmit
from dsd.core.chat import Chat, ChatLimits
from dsd.core.node import DISCOVERING, LEADER, Node
from dsd.core.timing import Timing
from dsd.core.unicast import Unicast
from dsd.curve import load_server_keys
from dsd.io.control import ControlServer, CurveServer, Feed, cancel, reachable, runs
from dsd.io.links import Links, peer_bind_endpoint
from dsd.io.multicast import MulticastTransport, Transport, interface_address
from dsd.io.unicast import ClusterTransport, UnicastTransport, resolve
from dsd.io.systemd import Notifier
from dsd.store import open_store

if TYPE_CHECKING:
    from dsd.metrics import Metrics

log = logging.getLogger("dsd")

# Rejections that mean a misconfigured daemon rather than noise: logged once per sending host.
MISCONFIGURED = {
    auth.UNKNOWN_KEY: "signed with a key this daemon does not have (another [cluster] secret_file?)",
    auth.BAD_TAG: "with signatures that do not verify (another key with the same key id?)",
    auth.UNSIGNED: "unsigned (a daemon without [cluster] secret_file?)",
    "signed": "signed, but this daemon has no [cluster] secret_file",
}
MAX_MISCONFIGURED = 64  # hosts warned about; a flood of spoofed sources adds no more lines


def timing_of(settings: Settings) -> Timing:
    t = settings.timing
    return Timing(t.heartbeat_interval, t.failure_timeout, t.discovery_timeout)


def uses_unicast(settings: Settings) -> bool:
    return bool(settings.cluster.peers) or not settings.cluster.multicast


def transport_of(settings: Settings) -> ClusterTransport:
    """The group socket (multicast = true), the unicast socket (peers set, or multicast = false), or both."""
    c = settings.cluster
    multicast = MulticastTransport(c.group, c.port, c.interface, c.ttl) if c.multicast else None
    unicast = UnicastTransport(c.bind, c.port, shared=c.multicast) if uses_unicast(settings) else None
    if multicast is not None:
        local = multicast.local_address
    elif c.interface or c.bind == "0.0.0.0":
        local = f"{interface_address(c.interface, c.group)}:{c.port}"
    else:
        local = f"{c.bind}:{c.port}"
    return ClusterTransport(local, multicast, unicast)


def unicast_of(settings: Settings) -> Unicast | None:
    """The core's unicast side: the configured peers as seeds (None without unicast)."""
    if not uses_unicast(settings):
        return None
    c = settings.cluster
    seeds = []
    for entry in c.peers:
        parsed = parse_peer(entry, c.port)
        assert parsed is not None  # validated by dsd.config
        host, port = parsed
        try:
            literal = bool(ipaddress.IPv4Address(host))
        except ValueError:
            literal = False
        seeds.append((entry, host, port, literal))
    return Unicast(seeds, timing_of(settings), multicast=c.multicast)


def chat_limits_of(settings: Settings) -> ChatLimits:
    c, t = settings.chat, settings.timing
    return ChatLimits(
        client_timeout=c.client_timeout, max_message=c.max_message, rate=c.rate, burst=c.burst,
        max_clients=c.max_clients, bootstrap_expect=c.bootstrap_expect, remove_dead_after=c.remove_dead_after,
        resend_interval=t.heartbeat_interval, request_timeout=max(5.0, 3 * t.failure_timeout),
        gather_timeout=2 * t.failure_timeout,
    )


class Service:
    """One dsd process: a Node, its multicast transport, control socket and feed."""

    def __init__(
        self,
        settings: Settings,
        config_path: str | None,
        transport: Transport | None = None,
        log_level: str | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.log_level = log_level  # --log-level wins over the file, across reloads too
        self.loop = asyncio.get_running_loop()
        self.metrics: Metrics | None = None
        if settings.metrics.listen:  # bound first: a taken port stops dsd before it opens anything else
            from dsd import metrics  # prometheus_client costs ~4.5 MB of RSS: loaded only when on
            self.metrics = metrics.Metrics(self, settings.metrics.listen, settings.source)
        self.keyring = auth.read_keyring(settings.cluster.secret_file)
        self.sealer = auth.Sealer(self.keyring) if self.keyring else None
        self.opener = auth.Opener(self.keyring, own_name=settings.node.name) if self.keyring else None
        self.transport = transport or transport_of(settings)
        self.context = zmq.Context()
        host = self.transport.local_address.rpartition(":")[0]
        self.links = Links(peer_bind_endpoint(settings.chat.peer_endpoint, host), self.keyring)
        control = settings.control
        keys = load_server_keys(control)
        self.curve = CurveServer(keys) if keys is not None else None
        self.control = ControlServer(self.context, control.endpoint, self._on_request, control.tcp_endpoint,
                                     self.curve, done=self._release_chat)
        self.feed = Feed(self.context, control.feed, settings.node.name, control.tcp_feed, self.curve)
        offer = None
        if self.control.tcp_endpoint:
            offer = (reachable(self.control.tcp_endpoint, host), reachable(self.feed.tcp_endpoint, host))
        incarnation = time.time_ns()
        self.node = Node(
            settings.node.name,
            settings.node.priority,
            incarnation=incarnation,
            timing=timing_of(settings),
            preempt=settings.election.preempt,
            address=self.transport.local_address,
            endpoint=self.links.endpoint,
            link_key=self.links.public_key,
            offer=offer,
            unicast=unicast_of(settings),
        )
        self.store = open_store(settings.node.state_dir, settings.chat.retention)
        self.chat = Chat(
            settings.node.name, self.store, chat_limits_of(settings),
            wall_offset=time.time() - self.loop.time(), incarnation=incarnation, priority=settings.node.priority,
        )
        self._chat_view: tuple[str | None, dict[str, int]] = (None, {})
        self.notifier = Notifier()
        self.started = time.time()
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self.datagrams_rejected = dict.fromkeys(auth.REASONS, 0)
        self.link_messages_rejected = 0
        self.requests_refused: Counter[str] = Counter()  # by error code
        self._warned: set[tuple[str, str]] = set()  # (reason, host) of MISCONFIGURED rejections logged
        self.chat_held = False
        self._timer: asyncio.TimerHandle | None = None
        self._resolving: set[asyncio.Task[None]] = set()  # [cluster] peers names being resolved
        self._stopping = asyncio.Event()
        self.exit_status = 0  # 1 once the core said Stop

    # ------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, then leave the cluster cleanly."""
        await self.transport.start(self._on_datagram)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._stopping.set)
        self.loop.add_signal_handler(signal.SIGHUP, self.reload)
        tasks = [asyncio.ensure_future(self.control.serve()), asyncio.ensure_future(self.links.serve(self._on_link, done=self._release_chat))]
        for task in tasks:
            task.add_done_callback(self._on_control_done)
        interval = self.notifier.watchdog_interval()
        if interval:
            tasks.append(asyncio.ensure_future(self._watchdog(interval)))
        where = (self.transport.describe() if isinstance(self.transport, ClusterTransport)
                 else self.transport.local_address)
        log.info(
            "started: dsd %s, priority %d, %s, control %s, feed %s",
            __version__, self.settings.node.priority, where, self.settings.control.endpoint,
            self.settings.control.feed,
        )
        if self.settings.cluster.peers:
            log.info("peers: %s", ", ".join(self.settings.cluster.peers))
        if self.keyring is None:
            log.warning("cluster traffic is not authenticated: anyone on the network can join or disrupt "
                        "this cluster; set [cluster] secret_file (see README, Security)")
        log.info("chat: peer endpoint %s, history %s (last seq %d)",
                 self.links.endpoint, self.settings.node.state_dir, self.chat.commit)
        self.chat.start(self.loop.time())
        self._apply(self.node.start(self.loop.time()))
        self._follow_view()
        self.notifier.ready()
        self._update_status()
        try:
            await self._stopping.wait()
        finally:
            self.notifier.stopping()
            await self._retire_from_chat()
            log.info("stopping: leaving the cluster")
            self._apply(self.node.leave(self.loop.time()))
            for task in tasks:
                await cancel(task)
            self.close()

    async def _retire_from_chat(self) -> None:
        """SIGTERM: leave the chat's voters before leaving the cluster, for at most half of
        failure_timeout (when every daemon stops at once the last ones cannot); past that the
        others remove this daemon after [chat] remove_dead_after, as if it had crashed."""
        if self.chat.retired():
            return
        log.info("stopping: leaving the chat's voters")
        self._apply(self.chat.retire(self.loop.time()))
        deadline = self.loop.time() + self.settings.timing.failure_timeout / 2
        while not self.chat.retired() and self.loop.time() < deadline:
            await asyncio.sleep(self.settings.timing.heartbeat_interval / 4)
        if not self.chat.retired():
            log.warning("stopping: still a voter of the chat; the others will remove this daemon after "
                        "[chat] remove_dead_after")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in self._resolving:
            task.cancel()
        self.transport.close()
        self.links.close()
        self.store.close()
        self.control.close()
        self.feed.close()
        if self.curve is not None:
            self.curve.close()
        self.notifier.close()
        if self.metrics is not None:
            self.metrics.close()
        self.context.term()

    def stop(self) -> None:
        self._stopping.set()

    def reload(self) -> None:
        """SIGHUP: re-read the configuration; timings and log level apply at once."""
        self.notifier.reloading()
        try:
            fresh = load_settings(self.config_path)
            keyring = auth.read_keyring(self.settings.cluster.secret_file)
            client_keys = load_server_keys(self.settings.control)  # the directories' current contents
        except ConfigError as error:
            log.error("reload failed, keeping the running configuration: %s", error)
        else:
            changed = [
                section for section in ("node", "cluster", "election", "control", "chat", "metrics")
                if getattr(fresh, section) != getattr(self.settings, section)
            ]
            if changed:
                log.warning("reload: [%s] changed; those take effect at the next restart", "], [".join(changed))
            logging.getLogger().setLevel((self.log_level or fresh.log.level).upper())
            logs.restyle(self.node.name, fresh.log.format)
            self.node.set_timing(timing_of(fresh), self.loop.time())
            self.chat.limits = chat_limits_of(_with_runtime(self.settings, fresh))  # [chat] itself: at restart
            self._use_keyring(keyring)
            if self.curve is not None and client_keys is not None:
                self.curve.admit(client_keys)
            self.settings = _with_runtime(self.settings, fresh)
            self._rearm()
            log.info("reloaded %s", self.config_path or "built-in defaults")
        self.notifier.ready()
        self._update_status()

    def _use_keyring(self, keyring: auth.Keyring | None) -> None:
        """Keys re-read at reload: sign with the (maybe new) first key, verify with all of them."""
        if keyring is None or keyring == self.keyring:
            return
        assert self.sealer is not None and self.opener is not None  # the same secret_file: it was set
        self.keyring = self.sealer.keyring = self.opener.keyring = keyring
        self.links.use_keyring(keyring)
        self._follow_view()  # re-connect the links the new signing key closed
        log.info("cluster keys reloaded: %d key(s)", len(keyring.keys))

    # ---------------------------------------------------------------- inputs

    def _on_datagram(self, data: bytes, address: str, direct: bool) -> None:
        self.datagrams_received += 1
        try:
            message = self.opener.open(data) if self.opener else auth.decode_plain(data)
        except auth.Rejected as error:
            self.datagrams_rejected[error.reason] += 1
            log.debug("rejected a datagram from %s (%s): %s", address, error.reason, error)
            self._warn_misconfigured("signed" if self.opener is None and data.startswith(auth.HEADER)
                                     else error.reason, address)
            return
        self._apply(self.node.receive(message, address, self.loop.time(), direct))
        self._follow_view()

    def _warn_misconfigured(self, reason: str, address: str) -> None:
        host = address.rpartition(":")[0]
        if reason in MISCONFIGURED and (reason, host) not in self._warned and len(self._warned) < MAX_MISCONFIGURED:
            self._warned.add((reason, host))
            log.warning("ignoring datagrams from %s: %s; said once, counted in dsctl stats", host,
                        MISCONFIGURED[reason])

    async def _resolve(self, action: Resolve) -> None:
        """Resolve a [cluster] peers name off the event loop; the core decides what follows."""
        try:
            addresses = await resolve(action.host, action.port)
        except (OSError, UnicodeError) as error:
            self._apply(self.node.unresolved(action.entry, getattr(error, "strerror", None) or str(error),
                                             self.loop.time()))
        else:
            self._apply(self.node.resolved(action.entry, addresses, self.loop.time()))

    def _on_link(self, data: bytes) -> None:
        try:
            message = linkwire.decode(data)
        except linkwire.LinkError as error:
            self.link_messages_rejected += 1
            if self.link_messages_rejected == 1:
                log.warning("rejected a link message (a daemon of another dsd version?): %s; said once, "
                            "counted in dsctl stats", error)
            else:
                log.debug("rejected a link message: %s", error)
            return
        self._hold_chat()
        actions = self.chat.receive(message, self.loop.time())
        if actions:  # held: see chat_request
            self._apply(actions)

    def _hold_chat(self) -> None:
        """Batch the chat's output over a burst of inputs: one flush for all of them.

        The socket's drain releases when its wake-up's messages are handled; the loop's next
        turn releases too, should an input come from elsewhere."""
        if not self.chat_held:
            self.chat_held = True
            self.chat.hold()
            self.loop.call_soon(self._release_or_stop)

    def _release_or_stop(self) -> None:
        """A failed release (the store) stops the daemon here as it does from a drain: the log's
        writes are not where the core believes them."""
        try:
            self._release_chat()
        except Exception as error:
            log.error("the chat failed, stopping: %s", error)
            self.exit_status = 1
            self.stop()

    def _release_chat(self) -> None:
        if self.chat_held:
            self.chat_held = False
            self._apply(self.chat.release(self.loop.time()))

    def _on_timer(self) -> None:
        self._timer = None
        now = self.loop.time()
        self._apply(self.node.tick(now))
        self._follow_view()
        deadline = self.chat.next_deadline()
        if deadline is not None and deadline <= now:
            self._apply(self.chat.tick(now))

    def _on_control_done(self, task: "asyncio.Task[None]") -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("a socket task failed, stopping: %s", task.exception())
            self.exit_status = 1
            self.stop()

    def _on_request(self, payload: bytes, envelope: list[bytes], admin: bool) -> bytes | None:
        return commands.handle(self, payload, envelope, self.requests_refused, admin=admin)

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    # --------------------------------------------------------------- outputs

    def _apply(self, actions: list[Action]) -> None:
        status_changed = False
        encoded: tuple[object, bytes] = (None, b"")  # the last link message and its bytes
        events: list[tuple[str, dict[str, Any]]] = []  # consecutive Publish actions, published together
        for action in actions:
            if events and not isinstance(action, Publish):
                self._publish(events)
                events = []
            if isinstance(action, Send):
                data = self.sealer.seal(action.message) if self.sealer else wire.encode(action.message)
                self.transport.send(data, action.to)  # one seal for every address: each sees its counter once
                self.datagrams_sent += 1 if action.to is None else len(action.to)
            elif isinstance(action, Resolve):
                task = self.loop.create_task(self._resolve(action))
                self._resolving.add(task)
                task.add_done_callback(self._resolving.discard)
            elif isinstance(action, Transmit):
                if action.message != encoded[0]:  # followers in step get the same APPEND: encode it once
                    encoded = (action.message, linkwire.encode(action.message))
                self.links.send(action.to, encoded[1])
            elif isinstance(action, Reply):
                request: commands.Request | commands.Part = action.request
                if action.error:
                    self.requests_refused[action.error[0]] += 1
                if self.metrics is not None:
                    self.metrics.replied(request, action.error is None, self.loop.time())
                if isinstance(request, commands.Part):  # one message of a chat.send_many
                    payload = request.settle(action.result, action.error)
                    if payload is not None:
                        self.control.reply(request.batch.request.envelope, payload)
                else:
                    self.control.reply(request.envelope, commands.reply(request.rid, action.result, action.error))
            elif isinstance(action, Publish):
                events.append((action.topic, action.event))
                if not action.topic.startswith("chat."):
                    log.debug("event %s %s", action.topic, action.event)
                    logs.peer_event(log, action.topic, action.event, self.node.term, self.node.leader)
                    status_changed = True
                    if action.topic == "view.dead" and self.metrics is not None:
                        self.metrics.peer_dead(action.event)
            elif isinstance(action, Log):
                log.log(logging.getLevelName(action.level.upper()), action.text, extra={"fields": action.fields})
            elif isinstance(action, Stop):
                log.error("refusing to run: %s", action.reason)
                self.exit_status = 1
                self.stop()
        self._publish(events)
        if status_changed:
            self._update_status()
        self._rearm()

    def _publish(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        for topic, run in runs(events):
            self.feed.publish(topic, run)

    def _follow_view(self) -> None:
        """Tell the chat core about a new leader, term or set of peers, and connect the links."""
        node = self.node
        peers = {p.name: (p.endpoint, p.link_key) for p in node.peers}
        # Not before discovery ends: a daemon that finds its name taken stops then, and its chat
        # must not have spoken to the leader under the holder's name.
        leader = None if node.role == DISCOVERING else node.leader
        view = (leader, {p.name: p.priority for p in node.peers})
        self.links.connect(peers)
        if view != self._chat_view:
            self._chat_view = view
            self._apply(self.chat.set_view(leader, view[1], self.loop.time()))

    def _rearm(self) -> None:
        """Keep the timer no later than the next deadline. A timer that would fire early stays:
        the cores' ticks act only on what is due, and the chat's deadlines move with every
        request, so re-arming each time would cost a timer per request."""
        deadlines = [d for d in (self.node.next_deadline(), self.chat.next_deadline()) if d is not None]
        deadline = min(deadlines, default=None)
        if self._timer is not None:
            if deadline is None or self._timer.when() <= deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _update_status(self) -> None:
        node = self.node
        servers = human.count(len(node.peers) + 1, "server")
        if node.role == LEADER:
            text = f"leader of term {node.term}; {servers}"
        elif node.leader is None:
            text = f"{node.role}, no leader yet; {servers}"
        else:
            text = f"following {node.leader} (term {node.term}); {servers}"
        self.notifier.status(text)

    # -------------------------------------------------- commands.Daemon API

    def view(self) -> dict[str, Any]:
        view = self.node.view(self.loop.time())
        roles = self.chat.roles()
        for server in view["servers"]:
            server["chat"] = roles.get(server["name"], "not a member")
        return {**view, "chat_cluster": self.chat.cluster, "clients": self.chat.who()}

    def info(self) -> dict[str, Any]:
        return {
            "name": self.node.name, "version": __version__, "pid": os.getpid(),
            "endpoint": self.settings.control.endpoint, "feed": self.settings.control.feed,
            "peer_endpoint": self.links.endpoint, "config": self.config_path,
            "tcp_endpoint": self.node.offer[0] if self.node.offer else None,
            "tcp_feed": self.node.offer[1] if self.node.offer else None,
        }

    def stats(self) -> dict[str, Any]:
        counters = self.node.counters
        return {
            "datagrams_sent": self.datagrams_sent,
            "datagrams_received": self.datagrams_received,
            "datagrams_rejected": sum(self.datagrams_rejected.values()) + counters.messages_refused,
            "datagrams_rejected_by_reason": {**self.datagrams_rejected, "refused": counters.messages_refused},
            "elections_started": counters.elections_started,
            "elections_won": counters.elections_won,
            "leader_changes": counters.leader_changes,
            "pauses_detected": counters.pauses_detected,
            "control_requests": self.control.requests,
            "control_requests_refused": self._refusals(),
            "link_messages_sent": self.links.sent,
            "link_messages_received": self.links.received,
            "link_messages_dropped": self.links.dropped,
            "link_clients_refused": self.links.refused,
            "tcp_clients_refused": self.curve.refused if self.curve is not None else 0,
            "link_messages_rejected": self.link_messages_rejected + self.chat.counters.link_messages_ignored,
            "chat_role": self.chat.role,
            "chat_cluster": self.chat.cluster,
            "chat_epoch": self.chat.epoch,
            "chat_voters": sorted(self.chat.config.voters) if self.chat.config else [],
            "chat_other_clusters": dict(sorted(self.chat.foreign.items())),
            "chat_last_seq": self.chat.commit,
            "chat_entries_sequenced": self.chat.counters.entries_sequenced,
            "chat_entries_committed": self.chat.counters.entries_committed,
            "chat_proposals_forwarded": self.chat.counters.proposals_forwarded,
            "chat_proposals_refused": self.chat.counters.proposals_refused,
            "chat_duplicates_dropped": self.chat.counters.duplicates_dropped,
            "chat_snapshots_sent": self.chat.counters.snapshots_sent,
            "chat_snapshots_installed": self.chat.counters.snapshots_installed,
            "chat_epochs_started": self.chat.counters.epochs_started,
            "chat_config_changes": self.chat.counters.config_changes,
            "chat_clients_here": len(self.chat.sessions),
            "chat_users": len(self.chat.presence.users),
            "events_published": self.feed.published,
            "uptime": round(time.time() - self.started, 3),
        }

    def _refusals(self) -> dict[str, int]:
        """Control requests refused, by the error code replied (a malformed envelope is a bad_request)."""
        refused = self.requests_refused + Counter(bad_request=self.control.rejected)
        return dict(sorted(refused.items()))

    def server_key(self) -> dict[str, Any]:
        if self.curve is None:
            raise commands.RequestError("not_configured", "this daemon has no TCP endpoint "
                                                          "([control] tcp_endpoint), so no server key")
        return {"server_key": self.curve.public_key}

    def elect(self) -> dict[str, Any]:
        """`previous_term`: before the election; `term`: after it (higher once this node declared)."""
        previous = self.node.term
        self._apply(self.node.request_election(self.loop.time()))
        self._follow_view()
        return {"started": True, "previous_term": previous, "term": self.node.term}

    def forget(self, name: str) -> dict[str, Any]:
        config = self.chat.config
        if config is None or name not in config.everyone():
            raise commands.RequestError("not_a_voter", f"{name!r} is not one of the chat's voters")
        self._apply(self.chat.forget(name, self.loop.time()))
        return {"forgetting": name}

    def chat_request(self, request: commands.Request, cmd: str, args: dict[str, Any]) -> dict[str, Any] | None:
        chat, now = self.chat, self.loop.time()
        if cmd == "chat.history":
            return chat.history(args.get("limit", 20))
        if cmd == "chat.since":
            return chat.since(args["seq"], args.get("limit", 1000))
        if cmd == "chat.who":
            return {"users": chat.who()}
        user, session = args["user"], args["session"]
        self._hold_chat()
        if cmd == "chat.join":
            actions = chat.join(request, user, session, now)
        elif cmd == "chat.send":
            if self.metrics is not None:
                self.metrics.send_received(request, now)
            actions = chat.send(request, user, session, args["id"], args["text"], now)
        elif cmd == "chat.send_many":
            actions = []
            for part, message in zip(commands.batch_of(request, len(args["messages"])), args["messages"]):
                if self.metrics is not None:
                    self.metrics.send_received(part, now)
                actions += chat.send(part, user, session, message["id"], message["text"], now)
        elif cmd == "chat.heartbeat":
            actions = chat.heartbeat(request, user, session, now)
        else:
            actions = chat.leave(request, user, session, now)
        if actions:  # held: the output (and the timer) waits for the release at the end of this turn
            self._apply(actions)
        return None


def _with_runtime(old: Settings, fresh: Settings) -> Settings:
    """Keep what only a restart can change; take timings and log level from `fresh`."""
    return replace(old, timing=fresh.timing, log=fresh.log)
