"""The running daemon: wires the pure core to the sockets, the clock and systemd.

No protocol decision lives here: inputs go to `dsd.core.node.Node`, and its
actions (send, publish, log) are carried out. One timer is re-armed at the
core's `next_deadline()` after every input.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import replace
from typing import Any

import zmq.asyncio

from dsd import __version__, commands, wire
from dsd.config import ConfigError, Settings, load_settings
from dsd.core.actions import Action, Log, Publish, Send
from dsd.core.node import LEADER, Node
from dsd.core.timing import Timing
from dsd.io.control import ControlServer, Feed, cancel
from dsd.io.multicast import MulticastTransport, Transport
from dsd.io.systemd import Notifier

log = logging.getLogger("dsd")


def timing_of(settings: Settings) -> Timing:
    t = settings.timing
    return Timing(t.heartbeat_interval, t.failure_timeout, t.discovery_timeout)


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
        self.transport = transport or MulticastTransport(
            settings.cluster.group, settings.cluster.port, settings.cluster.interface, settings.cluster.ttl
        )
        self.node = Node(
            settings.node.name,
            settings.node.priority,
            incarnation=time.time_ns(),
            timing=timing_of(settings),
            preempt=settings.election.preempt,
            address=self.transport.local_address,
        )
        self.context = zmq.asyncio.Context()
        self.control = ControlServer(self.context, settings.control.endpoint, self._on_request)
        self.feed = Feed(self.context, settings.control.feed, settings.node.name)
        self.notifier = Notifier()
        self.started = time.time()
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self.datagrams_rejected = 0
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = asyncio.Event()

    # ------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, then leave the cluster cleanly."""
        await self.transport.start(self._on_datagram)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._stopping.set)
        self.loop.add_signal_handler(signal.SIGHUP, self.reload)
        tasks = [asyncio.ensure_future(self.control.serve())]
        tasks[0].add_done_callback(self._on_control_done)
        interval = self.notifier.watchdog_interval()
        if interval:
            tasks.append(asyncio.ensure_future(self._watchdog(interval)))
        log.info(
            "started: dsd %s, priority %d, group %s:%d via %s, control %s, feed %s",
            __version__, self.settings.node.priority, self.settings.cluster.group,
            self.settings.cluster.port, self.transport.local_address,
            self.settings.control.endpoint, self.settings.control.feed,
        )
        self._apply(self.node.start(self.loop.time()))
        self.notifier.ready()
        self._update_status()
        try:
            await self._stopping.wait()
        finally:
            self.notifier.stopping()
            log.info("stopping: leaving the cluster")
            self._apply(self.node.leave(self.loop.time()))
            for task in tasks:
                await cancel(task)
            self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.transport.close()
        self.control.close()
        self.feed.close()
        self.notifier.close()
        self.context.term()

    def stop(self) -> None:
        self._stopping.set()

    def reload(self) -> None:
        """SIGHUP: re-read the configuration; timings and log level apply at once."""
        self.notifier.reloading()
        try:
            fresh = load_settings(self.config_path)
        except ConfigError as error:
            log.error("reload failed, keeping the running configuration: %s", error)
        else:
            changed = [
                section for section in ("node", "cluster", "election", "control")
                if getattr(fresh, section) != getattr(self.settings, section)
            ]
            if changed:
                log.warning("reload: [%s] changed; those take effect at the next restart", "], [".join(changed))
            logging.getLogger().setLevel((self.log_level or fresh.log.level).upper())
            self.node.set_timing(timing_of(fresh), self.loop.time())
            self.settings = _with_runtime(self.settings, fresh)
            self._rearm()
            log.info("reloaded %s", self.config_path or "built-in defaults")
        self.notifier.ready()
        self._update_status()

    # ---------------------------------------------------------------- inputs

    def _on_datagram(self, data: bytes, address: str) -> None:
        self.datagrams_received += 1
        try:
            message = wire.decode(data)
        except wire.WireError as error:
            self.datagrams_rejected += 1
            log.debug("rejected a datagram from %s: %s", address, error)
            return
        self._apply(self.node.receive(message, address, self.loop.time()))

    def _on_timer(self) -> None:
        self._timer = None
        self._apply(self.node.tick(self.loop.time()))

    def _on_control_done(self, task: "asyncio.Task[None]") -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("control socket failed, stopping: %s", task.exception())
            self.stop()

    def _on_request(self, payload: bytes) -> bytes:
        return commands.handle(self, payload)

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    # --------------------------------------------------------------- outputs

    def _apply(self, actions: list[Action]) -> None:
        status_changed = False
        for action in actions:
            if isinstance(action, Send):
                self.transport.send(wire.encode(action.message))
                self.datagrams_sent += 1
            elif isinstance(action, Publish):
                self.feed.publish(action.topic, action.event)
                log.debug("event %s %s", action.topic, action.event)
                status_changed = True
            elif isinstance(action, Log):
                log.log(logging.getLevelName(action.level.upper()), action.text)
        if status_changed:
            self._update_status()
        self._rearm()

    def _rearm(self) -> None:
        deadline = self.node.next_deadline()
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _update_status(self) -> None:
        node = self.node
        servers = len(node.peers) + 1
        if node.role == LEADER:
            text = f"leader of term {node.term}; {servers} servers"
        elif node.leader is None:
            text = f"{node.role}, no leader yet; {servers} servers"
        else:
            text = f"following {node.leader} (term {node.term}); {servers} servers"
        self.notifier.status(text)

    # -------------------------------------------------- commands.Daemon API

    def view(self) -> dict[str, Any]:
        return self.node.view(self.loop.time())

    def info(self) -> dict[str, Any]:
        return {
            "name": self.node.name, "version": __version__, "pid": os.getpid(),
            "endpoint": self.settings.control.endpoint, "feed": self.settings.control.feed,
            "config": self.config_path,
        }

    def stats(self) -> dict[str, Any]:
        counters = self.node.counters
        return {
            "datagrams_sent": self.datagrams_sent,
            "datagrams_received": self.datagrams_received,
            "datagrams_rejected": self.datagrams_rejected + counters.messages_refused,
            "elections_started": counters.elections_started,
            "elections_won": counters.elections_won,
            "leader_changes": counters.leader_changes,
            "pauses_detected": counters.pauses_detected,
            "control_requests": self.control.requests,
            "events_published": self.feed.published,
            "uptime": round(time.time() - self.started, 3),
        }

    def elect(self) -> dict[str, Any]:
        self._apply(self.node.request_election(self.loop.time()))
        return {"started": True, "term": self.node.term}


def _with_runtime(old: Settings, fresh: Settings) -> Settings:
    """Keep what only a restart can change; take timings and log level from `fresh`."""
    return replace(old, timing=fresh.timing, log=fresh.log)
