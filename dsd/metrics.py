"""Prometheus metrics on `[metrics] listen`, through prometheus_client (its own registry).

Counters and gauges are not kept twice: a custom collector reads the service's own
figures (node counters, datagram counts, chat counters) when Prometheus scrapes. The
scrape runs in prometheus_client's HTTP thread, so the figures are read on the event
loop (one `call_soon_threadsafe` per scrape) and never while the loop is changing them.
Only the two histograms are fed as things happen, by hooks in the service.

Every labelled series exists from the first scrape, at 0 for each known label value, so a
dashboard of a healthy cluster never shows "no data".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry, GCCollector, Histogram, PlatformCollector, ProcessCollector, disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import start_http_server

from dsd import __version__, auth
from dsd.core.membership import ALIVE, SUSPECT
from dsd.core.node import LEADER
from dsd.io.control import BindError

if TYPE_CHECKING:
    from dsd.service import Service

MEMBER_STATES = (ALIVE, SUSPECT)
DATAGRAM_REJECTIONS = (*auth.REASONS, "refused")  # "refused": well-formed but stale or our own name
# Error codes a control request can be refused with (docs/chat-api.md, dsd/commands.py).
REFUSALS = (
    "bad_request", "unknown_command", "bad_args", "too_large", "forbidden", "not_configured", "internal",
    "bad_user", "name_taken", "not_joined", "too_many_clients", "rate_limited", "unavailable", "no_quorum",
    "not_a_voter",
)
FAILURE_DETECTION_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
COMMIT_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SCRAPE_TIMEOUT = 5.0  # seconds a scrape waits for the event loop

disable_created_metrics()  # no *_created series beside the histograms: the uptime says as much


@dataclass(frozen=True)
class Figures:
    """What one scrape reports, read on the event loop in one go."""

    members: dict[str, int]
    is_leader: bool
    term: int
    leader_changes: int
    elections: int
    elections_won: int
    pauses: int
    datagrams_received: int
    datagrams_sent: int
    datagrams_rejected: dict[str, int]
    chat_committed: int
    chat_last_seq: int
    chat_clients: int
    chat_proposals_refused: int
    requests_refused: dict[str, int]


def read_figures(service: Service) -> Figures:
    node, chat = service.node, service.chat
    members = dict.fromkeys(MEMBER_STATES, 0)
    members[ALIVE] = 1  # this daemon
    for peer in node.peers:
        members[peer.state] = members.get(peer.state, 0) + 1
    counters = node.counters
    return Figures(
        members=members,
        is_leader=node.role == LEADER,
        term=node.term,
        leader_changes=counters.leader_changes,
        elections=counters.elections_started,
        elections_won=counters.elections_won,
        pauses=counters.pauses_detected,
        datagrams_received=service.datagrams_received,
        datagrams_sent=service.datagrams_sent,
        datagrams_rejected={**service.datagrams_rejected, "refused": counters.messages_refused},
        chat_committed=chat.counters.entries_committed,
        chat_last_seq=chat.commit,
        chat_clients=len(chat.sessions),
        chat_proposals_refused=chat.counters.proposals_refused,
        requests_refused={**dict.fromkeys(REFUSALS, 0), **service.requests_refused},
    )


def families(f: Figures) -> Iterator[Metric]:
    """The gauges and counters of one scrape, in the exposition's order."""
    members = GaugeMetricFamily("dsd_members", "Cluster members this daemon sees, itself included, by state",
                                labels=["state"])
    for state, count in f.members.items():
        members.add_metric([state], count)
    yield members
    yield GaugeMetricFamily("dsd_is_leader", "1 if this daemon is the leader, else 0", value=int(f.is_leader))
    yield GaugeMetricFamily("dsd_term", "The election term this daemon is in", value=f.term)
    yield CounterMetricFamily("dsd_leader_changes", "Times this daemon came to follow a new leader",
                              value=f.leader_changes)
    yield CounterMetricFamily("dsd_elections", "Elections this daemon started", value=f.elections)
    yield CounterMetricFamily("dsd_elections_won", "Elections this daemon won (it declared itself leader)",
                              value=f.elections_won)
    yield CounterMetricFamily("dsd_pauses_detected", "Times this daemon found it had not run for longer than "
                              "failure_timeout", value=f.pauses)
    yield CounterMetricFamily("dsd_datagrams_received", "Cluster datagrams received", value=f.datagrams_received)
    yield CounterMetricFamily("dsd_datagrams_sent", "Cluster datagrams sent", value=f.datagrams_sent)
    rejected = CounterMetricFamily("dsd_datagrams_rejected", "Cluster datagrams dropped, by reason",
                                   labels=["reason"])
    for reason, count in f.datagrams_rejected.items():
        rejected.add_metric([reason], count)
    yield rejected
    yield CounterMetricFamily("dsd_chat_committed_entries", "Chat entries committed on this daemon",
                              value=f.chat_committed)
    yield GaugeMetricFamily("dsd_chat_last_seq", "Sequence number of the last committed chat entry",
                            value=f.chat_last_seq)
    yield GaugeMetricFamily("dsd_chat_clients", "Chat clients joined through this daemon", value=f.chat_clients)
    yield CounterMetricFamily("dsd_chat_proposals_refused", "Chat proposals the chat refused (over a limit, "
                              "leader backlog)", value=f.chat_proposals_refused)
    refused = CounterMetricFamily("dsd_requests_refused", "Control and chat requests refused, by error code",
                                  labels=["reason"])
    for code, count in sorted(f.requests_refused.items()):
        refused.add_metric([code], count)
    yield refused
    yield InfoMetricFamily("dsd_build", "The running dsd", value={"version": __version__})


class _ServiceCollector:
    """Reads the figures on the event loop at each scrape (called in the HTTP thread)."""

    def __init__(self, service: Service, loop: asyncio.AbstractEventLoop) -> None:
        self.service = service
        self.loop = loop

    def collect(self) -> Iterator[Metric]:
        result: concurrent.futures.Future[Figures] = concurrent.futures.Future()

        def read() -> None:
            try:
                result.set_result(read_figures(self.service))
            except Exception as error:  # reported as a failed scrape, never in the loop
                result.set_exception(error)

        self.loop.call_soon_threadsafe(read)
        yield from families(result.result(timeout=SCRAPE_TIMEOUT))


class Metrics:
    """The registry, its HTTP endpoint, and the histograms the service feeds."""

    def __init__(self, service: Service, listen: str, source: str | None) -> None:
        self.registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)
        self.failure_detection = Histogram(
            "dsd_failure_detection_seconds", "Silence of a peer before this daemon declared it dead",
            buckets=FAILURE_DETECTION_BUCKETS, registry=self.registry,
        )
        self.commit_latency = Histogram(
            "dsd_chat_commit_latency_seconds", "Chat send received from a client on this daemon -> committed",
            buckets=COMMIT_LATENCY_BUCKETS, registry=self.registry,
        )
        self.registry.register(_ServiceCollector(service, service.loop))  # type: ignore[arg-type]
        self._sends: dict[int, tuple[object, float]] = {}  # id(request) -> (request, received at)
        host, _, port = listen.rpartition(":")
        try:
            self.server, self._thread = start_http_server(int(port), host, self.registry)
        except OSError as error:
            where = source or "built-in defaults"
            raise BindError(f"{where}: [metrics] listen = \"{listen}\": cannot listen there: "
                            f"{error.strerror or error}") from None

    def close(self) -> None:
        """Stop serving, in the background: `shutdown` waits up to the server's 0.5 s poll,
        and the process is on its way out (the thread is a daemon thread)."""
        def stop() -> None:
            self.server.shutdown()
            self.server.server_close()

        threading.Thread(target=stop, name="metrics-stop", daemon=True).start()

    def send_received(self, request: object, now: float) -> None:
        self._sends[id(request)] = (request, now)

    def replied(self, request: object, committed: bool, now: float) -> None:
        """A reply went out; for a chat send that committed, observe its latency."""
        pending = self._sends.pop(id(request), None)
        if pending is not None and pending[0] is request and committed:
            self.commit_latency.observe(now - pending[1])

    def peer_dead(self, event: dict[str, Any]) -> None:
        self.failure_detection.observe(event["silence"])
