"""The chat traffic of the chaos soak (bench/soak.py): one dschat user per host, in rounds.

Each user sends uniquely numbered lines (`user-a-000042`) through a real `dschat --json`
process on its host, its own daemon first and the others to fail over to, one round
(join, lines, leave) after another. What each round wrote, what dschat reported
acknowledged and what it printed are kept for the soak's verdict. Traffic goes on through
every fault: on the minority side of a partition dschat is told no_quorum, fails over or
waits, and re-sends after the heal.
"""

from __future__ import annotations

import itertools
import random
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from dsd.client import ControlClient, DaemonError, Unreachable
from tests.cluster import Cluster, Daemon, wait_until
from tests.chatclients import PipedChat

# dschat: 3 silent tries of 0.5 s and it fails over; it gives up only after 30 s without a daemon.
DSCHAT_OPTIONS = ("--history", "0", "--timeout", "0.5", "--failover", "30")
PACE = (0.1, 0.4)  # seconds between a client's lines
ROUND_LINES = (15, 60)
PATIENCE = 90.0  # how long a client or a pause may take on a loaded machine


def request(daemon: Daemon, cmd: str, timeout: float = 1.0, **args: Any) -> dict[str, Any] | None:
    """One control request; None when the daemon does not answer or refuses."""
    try:
        with ControlClient(daemon.endpoint, timeout=timeout, retries=1) as client:
            return client.request(cmd, **args)
    except (Unreachable, DaemonError):
        return None


@dataclass
class Round:
    """One dschat process: join, the lines written, leave."""

    chat: PipedChat
    written: list[str] = field(default_factory=list)
    code: int | None = None

    def acknowledged(self) -> set[str]:
        """What dschat reported acknowledged (its exit report), plus what it showed as logged."""
        shown = set(self.chat.own())
        if self.code not in (0, 1, 3):  # no report from dschat: only what it showed
            return shown
        failed = {text for text in self.written if f"'{text}'" in self.chat.stderr}
        return shown | (set(self.written) - failed)


class Writer(threading.Thread):
    """A user on one host sending numbered lines through dschat, round after round."""

    def __init__(self, traffic: "Traffic", user: str, host: int, endpoints: list[str], seed: int) -> None:
        super().__init__(name=f"writer-{user}", daemon=True)
        self.traffic = traffic
        self.user = user
        self.host = host
        self.endpoints = endpoints
        self.rng = random.Random(seed)
        self.rounds: list[Round] = []
        self.problems: list[str] = []
        self._numbers = itertools.count(1)

    def run(self) -> None:
        try:
            self._rounds()
        except Exception as error:  # reported, never silently lost with the thread
            self.problems.append(f"{self.user}: the writer failed: {error!r}")

    def _rounds(self) -> None:
        traffic = self.traffic
        while not traffic.stopping.is_set():
            if self.rounds:
                self._wait_until_gone()
                if traffic.stopping.is_set():
                    break
            current = Round(PipedChat(traffic.cluster, self.host, self.user, self.endpoints, *DSCHAT_OPTIONS))
            self.rounds.append(current)
            try:
                for number in range(self.rng.randint(*ROUND_LINES)):
                    if traffic.stopping.is_set():
                        break
                    text = f"{self.user}-{next(self._numbers):06d}"
                    current.chat.write(text)
                    current.written.append(text)
                    time.sleep(self.rng.uniform(*PACE))  # pacing the stream, not waiting for anything
            except (OSError, ValueError) as error:  # dschat's stdin closed: it exited early
                self.problems.append(f"{self.user}: dschat ended while being written to ({error})")
            self._finish(current)

    def _finish(self, current: Round) -> None:
        try:
            current.code = current.chat.finish(timeout=PATIENCE)
        except OSError:  # it had exited already, with input unread
            current.code = current.chat.process.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            self.problems.append(f"{self.user}: dschat did not exit within {PATIENCE:g}s of its input's end")
        finally:
            current.chat.stop()
        if current.code not in (0, 1):
            self.problems.append(f"{self.user}: dschat exited with {current.code}: {current.chat.stderr[-500:]}")

    def _wait_until_gone(self) -> None:
        """Until every daemon answers and none lists this user any more.

        A round whose leave was lost (its daemon killed as it left) leaves the user present
        until [chat] client_timeout; a new round in the meantime would rightly be refused as
        name_taken (dschat exit 4), which is not what the soak is judging.
        """
        def gone() -> bool:
            if self.traffic.stopping.is_set():
                return True
            for daemon in self.traffic.cluster.daemons.values():
                who = request(daemon, "chat.who")
                if who is None or any(u["user"] == self.user for u in who["users"]):
                    return False
            return True

        try:
            wait_until(gone, PATIENCE, interval=0.1, what=f"{self.user} gone from every daemon")
        except AssertionError as error:
            self.problems.append(str(error))

    def failovers(self) -> int:
        return sum(r.chat.stderr.count("failing over") for r in self.rounds)


class Traffic:
    """One Writer per host, until `stop`."""

    def __init__(self, cluster: Cluster, seed: int) -> None:
        self.cluster = cluster
        self.stopping = threading.Event()
        daemons = list(cluster.daemons.values())
        self.writers = []
        for i, daemon in enumerate(daemons):
            # Its own daemon first, then the others in turn.
            endpoints = [d.endpoint for d in daemons[i:] + daemons[:i]]
            self.writers.append(Writer(self, f"user-{daemon.name}", daemon.host, endpoints, seed * 100 + i))

    def start(self) -> None:
        for writer in self.writers:
            writer.start()

    def stop(self, timeout: float) -> list[str]:
        """End every round (each dschat waits for its acknowledgements); problems of the ones that hang."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for writer in self.writers:
            writer.join(max(0.0, deadline - time.monotonic()))
        return [f"{w.user}: still running {timeout:g}s after the traffic was stopped" for w in self.writers
                if w.is_alive()]

    def kill(self) -> None:
        """Stop every dschat by its pid (cleanup after a failure or Ctrl-C)."""
        self.stopping.set()
        for writer in self.writers:
            for current in writer.rounds:
                current.chat.stop()
