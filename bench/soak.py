"""Chaos soak: five daemons on private hosts, chat traffic, random faults, then the invariants.

    python -m bench.soak [--seconds 600] [--seed 7] [--keep-logs DIR] [--log-level debug]

Five daemons (a..e, e ranked highest) at the default timings on five private hosts; on each
host a `dschat --json` user sends uniquely numbered lines, in rounds (join, lines, leave),
failing over to the other daemons when its own one does not answer (bench/soak_traffic.py).
Meanwhile faults drawn
from a seeded random generator are injected one at a time, each undone before the next
(`FAULT_KINDS`: kill -9 then restart, SIGSTOP then SIGCONT after a pause shorter or longer
than failure_timeout, a partition then its heal, SIGTERM then start, forged datagrams),
sometimes with forged datagrams sent while another fault is in effect. After each fault
the soak waits for one leader agreed by all five.

Partitions (a short blip, a host cut off, a 2|3 split) run under traffic at the default chat
settings: the minority side refuses messages (no_quorum) until the heal, its clients re-send
them then, and the logs never split.

Every daemon has the cluster secret (`[cluster] secret_file`); the forged datagrams, sent into
the group from a private host, are a COORDINATOR and a HEARTBEAT with a huge term from a
stranger, unsigned, signed with another key or with a corrupted tag, and datagrams the codec
must reject (random bytes, truncated, wrong version). They must all be counted as rejected.

Once the time is up: every client finishes its round, and the soak checks (deadlines are
generous: a loaded machine makes it slower, never wrong) one leader and one view of all
five everywhere; the same gapless log on every daemon; every acknowledged line in it exactly
once, each user's lines in the order sent, no line twice; every client's output a
contiguous run of the log; nobody left present; every daemon under `RSS_BOUND_MB`; forged
datagrams rejected and the forged term never reached. Throughout: no daemon exits by itself
and no daemon's term goes back. Exit status 1 on any violation.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench.common import (
    DEFAULT_TIMING, BenchError, before_run, private_cluster, proc_status_kb, progress, python_pid,
    stop_on_sigterm, table,
)
from bench.soak_traffic import PATIENCE, Traffic, request
from dsd import auth, wire
from dsd.client import DaemonError, Unreachable
from dsd.core import datagrams
from tests.cluster import Cluster, Daemon, wait_until
from tests.chatclients import assert_view, chat_log

NAMES = ("a", "b", "c", "d", "e")
HIGHEST = "e"  # priorities 101..105: with preempt, the leader whenever e runs
FAILURE_TIMEOUT = DEFAULT_TIMING["failure_timeout"]
CLIENT_TIMEOUT = 10.0  # [chat] client_timeout: a long partition must stay well under it
RSS_BOUND_MB = 80.0
FORGED_TERM = 10**15
FORGER = "zz-forger"
FAULT_KINDS = ("kill", "stop", "partition", "restart", "forge")
FAULT_NAMES = {"kill": "kill -9, restart", "stop": "SIGSTOP, SIGCONT", "partition": "partition, heal",
               "restart": "SIGTERM, start", "forge": "forged datagrams"}
SETTLE = 30.0  # after a fault: one leader agreed by all five within this
FINAL = PATIENCE  # the deadlines of the final checks


# ---------------------------------------------------------------------------- faults


@dataclass
class Fault:
    kind: str
    detail: str
    settled: float | None = None  # seconds from the heal to one leader agreed by all five


class Soak:
    """The cluster, the traffic, the fault injector and the checks of one run."""

    def __init__(self, cluster: Cluster, seconds: float, seed: int, log_level: str = "info") -> None:
        self.cluster = cluster
        self.log_level = log_level
        self.seconds = seconds
        self.seed = seed
        self.rng = random.Random(seed)
        self.key = os.urandom(32)
        self._strangers = auth.Sealer(auth.Keyring((os.urandom(32),)))  # a key the cluster does not know
        self._cluster_sealer = auth.Sealer(auth.Keyring((self.key,)))
        self.faults: list[Fault] = []
        self.violations: list[str] = []
        self.down: set[str] = set()  # daemons a fault has stopped on purpose (not to be counted as crashed)
        self.forged = 0
        self.rejected = 0  # forged datagrams seen counted as rejected by the daemon on the sending host
        self.max_rss_kb = 0
        self._lock = threading.RLock()
        self._monitoring = threading.Event()
        self.traffic: Traffic | None = None
        # Each in turn (in a seeded order), so that even a short run has every variant.
        self._pauses = itertools.cycle(self.rng.sample([True, False], 2))
        self._shapes = itertools.cycle(self.rng.sample(["blip", "cut", "split"], 3))

    # --- set-up -----------------------------------------------------------------------------

    def start(self) -> None:
        cluster = self.cluster
        secret = cluster.workdir / "secret"
        secret.write_text(self.key.hex() + "\n")
        secret.chmod(0o600)
        for i, name in enumerate(NAMES, start=1):
            cluster.add(name, priority=100 + i, timing=dict(DEFAULT_TIMING), log={"level": self.log_level},
                        chat={"client_timeout": CLIENT_TIMEOUT},
                        cluster={"secret_file": str(secret)})
        wait_until(self._started, 60, interval=0.1, what="five daemons agreeing on e")
        self.traffic = Traffic(cluster, self.seed)
        self.traffic.start()
        threading.Thread(target=self._monitor, name="monitor", daemon=True).start()

    def _started(self) -> bool:
        for daemon in self.cluster.daemons.values():
            if not daemon.running:
                raise BenchError(f"{daemon.name} exited at start-up with status {daemon.process.returncode}:\n"
                                 + "\n".join(daemon.logs().splitlines()[-10:]))
        return self.cluster.agreed(HIGHEST) is not None

    def violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)
        progress(f"soak: VIOLATION: {text}")

    def _monitor(self) -> None:
        """Every second: the RSS and term of every daemon, and any daemon that exited without a fault."""
        terms: dict[int, int] = {}  # by pid: a restarted daemon may start again from term 0
        while not self._monitoring.wait(1.0):
            self.sample_rss()
            for daemon in list(self.cluster.daemons.values()):
                process = daemon.process
                belief = request(daemon, "leader", timeout=0.5)
                if belief is None or process is None or daemon.process is not process:
                    continue  # not answering, or restarted meanwhile
                highest = terms.get(process.pid, 0)
                if belief["term"] < highest:
                    self.violation(f"{daemon.name}'s term went back from {highest} to {belief['term']}")
                terms[process.pid] = max(belief["term"], highest)
            with self._lock:  # the injector marks a daemon down before it stops it
                for daemon in self.cluster.daemons.values():
                    if daemon.name not in self.down and daemon.process is not None \
                            and daemon.process.poll() is not None:
                        self.violation(f"{daemon.name} exited by itself with status "
                                       f"{daemon.process.returncode}; restarting it")
                        daemon.start()

    def sample_rss(self) -> dict[str, int]:
        rss = {}
        for daemon in list(self.cluster.daemons.values()):
            try:
                if daemon.running:
                    rss[daemon.name] = proc_status_kb(python_pid(daemon.process), "VmRSS")
            except (OSError, BenchError):  # it exited meanwhile
                continue
        if rss:
            self.max_rss_kb = max(self.max_rss_kb, *rss.values())
        return rss

    # --- the injector -----------------------------------------------------------------------

    def inject(self) -> None:
        """Faults until `seconds` have passed: each kind once per cycle, in a random order."""
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            kinds = list(FAULT_KINDS)
            self.rng.shuffle(kinds)
            for kind in kinds:
                if time.monotonic() >= end:
                    break
                gap = self.rng.uniform(0.5, 2.0)
                time.sleep(gap)  # traffic without faults between two of them: the gap is the point
                leader = self.leader()
                fault = Fault(kind, "")
                getattr(self, f"_{kind}")(fault, leader)
                self.faults.append(fault)
                healed = time.monotonic()
                try:
                    wait_until(lambda: self.cluster.agreed(HIGHEST, among=NAMES), SETTLE, interval=0.1,
                               what=f"one leader after {kind} ({fault.detail})")
                    fault.settled = time.monotonic() - healed
                except AssertionError as error:
                    self.violation(str(error))
                progress(f"soak: {time.monotonic() - end + self.seconds:5.1f}s {kind}: {fault.detail}"
                         f" (settled in {fault.settled if fault.settled is not None else float('nan'):.2f}s)")

    def leader(self) -> str:
        agreed = self.cluster.agreed()
        return agreed[1] if agreed else HIGHEST

    def _victim(self, leader: str) -> Daemon:
        """The leader two times in five, else any daemon (the draw is seeded; who leads is not)."""
        name = leader if self.rng.random() < 0.4 else self.rng.choice(NAMES)
        return self.cluster.daemons[name]

    def _hold(self, seconds: float, victims: set[str], forge: bool) -> None:
        """Keep a fault in effect for `seconds`, sometimes forging datagrams meanwhile."""
        until = time.monotonic() + seconds
        if forge:
            observers = [n for n in NAMES if n not in victims]
            self._send_forged(self.cluster.daemons[self.rng.choice(observers)], self.rng.randint(1, 3))
        time.sleep(max(0.0, until - time.monotonic()))  # the length of the fault

    def _overlap(self) -> bool:
        return self.rng.random() < 0.3

    def _kill(self, fault: Fault, leader: str) -> None:
        victim = self._victim(leader)
        down = self.rng.uniform(0.2, 3 * FAILURE_TIMEOUT)
        fault.detail = f"{victim.name}{' (leader)' if victim.name == leader else ''} down {down:.1f}s"
        with self._lock:
            self.down.add(victim.name)
        victim.kill()
        self._hold(down, {victim.name}, self._overlap())
        victim.start()
        with self._lock:
            self.down.discard(victim.name)

    def _restart(self, fault: Fault, leader: str) -> None:
        victim = self._victim(leader)
        down = self.rng.uniform(0.0, 2 * FAILURE_TIMEOUT)
        fault.detail = f"{victim.name}{' (leader)' if victim.name == leader else ''} down {down:.1f}s"
        with self._lock:
            self.down.add(victim.name)
        try:
            code = victim.stop(timeout=10)
            if code != 0:
                self.violation(f"{victim.name} exited with status {code} on SIGTERM")
        except subprocess.TimeoutExpired:
            self.violation(f"{victim.name} did not exit within 10s of SIGTERM (killed)")
        self._hold(down, {victim.name}, self._overlap())
        victim.start()
        with self._lock:
            self.down.discard(victim.name)

    def _stop(self, fault: Fault, leader: str) -> None:
        """One daemon paused longer than failure_timeout, or one or two for a fraction of it."""
        long = next(self._pauses)
        if long:
            victims = [self._victim(leader)]
            pause = self.rng.uniform(1.2, 3.0) * FAILURE_TIMEOUT
        else:
            victims = [self.cluster.daemons[n] for n in self.rng.sample(NAMES, self.rng.randint(1, 2))]
            pause = self.rng.uniform(0.05, 0.3) * FAILURE_TIMEOUT
        names = {v.name for v in victims}
        fault.detail = f"{'+'.join(sorted(names))} paused {pause:.2f}s ({'longer' if long else 'shorter'} " \
                       f"than failure_timeout){' incl. the leader' if leader in names else ''}"
        for victim in victims:
            victim.signal(signal.SIGSTOP)
        try:
            self._hold(pause, names, self._overlap())
        finally:
            for victim in victims:
                victim.signal(signal.SIGCONT)

    def _partition(self, fault: Fault, leader: str) -> None:
        net = self.cluster.net
        assert net is not None
        shape = next(self._shapes)
        if shape == "blip":
            hosts = [self.rng.randint(1, len(NAMES))]
            length = self.rng.uniform(0.05, 0.25) * FAILURE_TIMEOUT
        elif shape == "cut":
            hosts = [self.cluster.daemons[self._victim(leader).name].host]
            length = self.rng.uniform(1.5, 4.0) * FAILURE_TIMEOUT
        else:
            hosts = sorted(self.rng.sample(range(1, len(NAMES) + 1), 2))
            length = self.rng.uniform(1.5, 4.0) * FAILURE_TIMEOUT
        side = {d.name for d in self.cluster.daemons.values() if d.host in hosts}
        fault.detail = f"{shape} of {'+'.join(sorted(side))} for {length:.2f}s"
        try:
            if shape == "split":
                net.split(hosts)
            else:
                net.cut(hosts[0])
            self._hold(length, side, False)
        finally:
            if shape == "split":
                net.unsplit(hosts)
            else:
                net.reconnect(hosts[0])

    def _forge(self, fault: Fault, leader: str) -> None:
        observer = self.cluster.daemons[self.rng.choice(NAMES)]
        count = self.rng.randint(2, 6)
        fault.detail = f"{count} datagrams from host {observer.host}, checked on {observer.name}"
        self._send_forged(observer, count)

    def _send_forged(self, observer: Daemon, count: int) -> None:
        """`count` datagrams the daemons must reject, sent from `observer`'s host; checked on its counters."""
        datagrams = [self._forged_datagram() for _ in range(count)]
        before = request(observer, "stats")
        self.cluster.send(observer.host, datagrams)
        self.forged += count
        if before is None:
            return  # it is paused or restarting: nothing to compare with
        try:
            wait_until(lambda: (s := request(observer, "stats")) is not None
                       and s["datagrams_rejected"] >= before["datagrams_rejected"] + count
                       and s["uptime"] >= before["uptime"],
                       10, interval=0.1, what="the forged datagrams counted as rejected")
        except AssertionError:
            self.violation(f"{observer.name} did not count {count} forged datagrams as rejected")
            return
        self.rejected += count

    def _forged_datagram(self) -> bytes:
        """A stranger's claim to lead with a huge term, unsigned or badly signed, or garbage."""
        rng = self.rng
        incarnation = rng.randrange(1, 2**62)
        claim = rng.choice([
            datagrams.Coordinator(FORGER, incarnation, 10**6, FORGED_TERM),
            datagrams.Heartbeat(FORGER, incarnation, 10**6, FORGED_TERM, FORGER, "leader", "tcp://10.77.0.250:1", 0),
        ])
        plain = wire.encode(claim)
        tampered = bytearray(self._cluster_sealer.seal(claim))
        tampered[-1] ^= 0x01
        choices: list[Callable[[], bytes]] = [
            lambda: plain,  # unsigned
            lambda: self._strangers.seal(claim),  # signed with a key the cluster does not have
            lambda: bytes(tampered),  # signed with the cluster's key, then altered
            lambda: rng.randbytes(rng.randint(1, 1400)),
            lambda: plain[:rng.randint(1, len(plain) - 1)],
            lambda: wire.MAGIC + bytes([wire.VERSION + 1]) + plain[len(wire.HEADER):],
        ]
        return rng.choice(choices)()

    # --- the end ----------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Stop the traffic, wait for convergence and judge; returns the figures of the summary."""
        assert self.traffic is not None
        for problem in self.traffic.stop(FINAL + 30):
            self.violation(problem)
        for writer in self.traffic.writers:
            for problem in writer.problems:
                self.violation(problem)
        self._monitoring.set()
        cluster = self.cluster
        started = time.monotonic()
        try:
            wait_until(lambda: cluster.agreed(HIGHEST, among=NAMES), FINAL, interval=0.1, what="one leader and all five in every view")
        except AssertionError as error:
            self.violation(str(error))
        log, identical = self._final_log()
        converged = time.monotonic() - started if identical else None
        self._check_log(log)
        try:
            wait_until(lambda: all((w := request(d, "chat.who")) is not None and not w["users"]
                                   for d in cluster.daemons.values()), FINAL, interval=0.2,
                       what="nobody present any more")
        except AssertionError as error:
            self.violation(str(error))
        final = cluster.agreed()
        if final is not None and final[0] >= FORGED_TERM:
            self.violation(f"the forged term was taken: term {final[0]}")
        rss = self.sample_rss()
        for name, kb in sorted(rss.items()):
            if kb / 1024 > RSS_BOUND_MB:
                self.violation(f"{name}: RSS {kb / 1024:.1f} MB over {RSS_BOUND_MB:g} MB")
        return {"log": log, "converged": converged}

    def _final_log(self) -> tuple[list[dict[str, Any]], bool]:
        """The log once every daemon holds the same one; if they never do, the leader's, and False."""
        def same() -> tuple[list[dict[str, Any]]] | None:
            try:
                logs = [chat_log(d) for d in self.cluster.daemons.values()]
            except (Unreachable, DaemonError):
                return None
            except AssertionError as error:  # a gap or a repeat: no waiting fixes that
                self.violation(str(error))
                return ([],)
            return (logs[0],) if all(log == logs[0] for log in logs) else None

        try:
            return wait_until(same, FINAL, interval=0.2, what="the same chat log on every daemon")[0], True
        except AssertionError as error:
            self.violation(f"{error}: {self._log_difference()}")
        try:  # judge the rest against the log the cluster goes on with
            return chat_log(self.cluster.daemons[HIGHEST]), False
        except (Unreachable, DaemonError, AssertionError):
            return [], False

    def _log_difference(self) -> str:
        lengths, first = {}, None
        logs = {}
        for daemon in self.cluster.daemons.values():
            try:
                logs[daemon.name] = chat_log(daemon)
            except (Unreachable, DaemonError, AssertionError) as error:
                return f"{daemon.name}: {error}"
            lengths[daemon.name] = len(logs[daemon.name])
        reference = logs["a"]
        for name, log in logs.items():
            for entry, other in zip(log, reference):
                if entry != other:
                    first = f"seq {entry['seq']}: {name} has {entry['user']} {entry['text']!r}, " \
                            f"a has {other['user']} {other['text']!r}"
                    break
            if first:
                break
        return f"lengths {lengths}; first difference: {first or 'none (one is a prefix)'}"

    def _check_log(self, log: list[dict[str, Any]]) -> None:
        assert self.traffic is not None
        texts = Counter(e["text"] for e in log if e["kind"] == "message")
        keys = Counter((e["user"], e["id"]) for e in log)
        for key, count in keys.items():
            if count > 1:
                self.violation(f"(user, id) {key} recorded {count} times")
        for writer in self.traffic.writers:
            written = [t for r in writer.rounds for t in r.written]
            acknowledged = set().union(*(r.acknowledged() for r in writer.rounds)) if writer.rounds else set()
            repeated = [t for t in written if texts[t] > 1]
            if repeated:
                self.violation(f"{writer.user}: {len(repeated)} lines recorded more than once, from {repeated[0]!r}")
            lost = [t for t in written if t in acknowledged and texts[t] == 0]
            if lost:
                self.violation(f"{writer.user}: {len(lost)} acknowledged lines not in the log, from {lost[0]!r}")
            for number, current in enumerate(writer.rounds, start=1):
                missing = [t for t in current.written if t not in acknowledged]
                if missing:
                    self.violation(f"{writer.user} round {number} (dschat exit {current.code}): "
                                   f"{len(missing)} of {len(current.written)} lines never acknowledged, "
                                   f"from {missing[0]!r}")
            mine = [e["text"] for e in log if e["kind"] == "message" and e["user"] == writer.user]
            logged = set(mine)
            if mine != [t for t in written if t in logged]:
                self.violation(f"{writer.user}: lines logged in another order than sent")
            for number, current in enumerate(writer.rounds, start=1):
                if not current.chat.view:
                    continue
                try:
                    assert_view(current.chat.view, log, f"{writer.user} round {number}")
                except (AssertionError, IndexError) as error:
                    self.violation(str(error).splitlines()[0])

    def keep_logs(self, directory: Path, log: list[dict[str, Any]]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "chat-log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
        for daemon in self.cluster.daemons.values():
            if daemon.log.exists():
                shutil.copy(daemon.log, directory / f"{daemon.name}.log")
        if self.traffic is not None:
            for writer in self.traffic.writers:
                text = "\n".join(f"--- round {i}: exit {r.code}\n{r.chat.stderr}" for i, r in enumerate(writer.rounds, 1))
                (directory / f"{writer.user}.stderr").write_text(text)


# --------------------------------------------------------------------------- running


@dataclass
class Report:
    seconds: float
    seed: int
    faults: list[Fault]
    forged: int
    rejected: int
    sent: int
    acknowledged: int
    delivered: int
    entries: int
    rounds: int
    failovers: int
    violations: list[str]
    max_rss_mb: float
    converged: float | None  # seconds to identical logs once the clients stopped; None: never
    wall: float

    def summary(self) -> str:
        kinds = Counter(f.kind for f in self.faults)
        settled = [f.settled for f in self.faults if f.settled is not None]
        last = self.faults[-1].settled if self.faults and self.faults[-1].settled is not None else None
        rows = [
            ["duration", f"{self.seconds:g} s of faults ({self.wall:.0f} s in all)"],
            ["seed", self.seed],
            ["faults", f"{len(self.faults)}: " + ", ".join(f"{FAULT_NAMES[k]} {kinds[k]}" for k in FAULT_KINDS)],
            ["of which", self._details()],
            ["forged datagrams", f"{self.forged} sent into the cluster (which has a secret), {self.rejected} seen "
                                 "counted as rejected" + (" (the rest reached a paused daemon)"
                                                          if self.rejected < self.forged else "")],
            ["messages sent / acknowledged / delivered", f"{self.sent} / {self.acknowledged} / {self.delivered} "
                                                         f"(log: {self.entries} entries, {self.rounds} client rounds, "
                                                         f"{self.failovers} client failovers)"],
            ["violations", len(self.violations)],
            ["max RSS of a daemon", f"{self.max_rss_mb:.1f} MB (bound {RSS_BOUND_MB:g} MB)"],
            ["one leader after a fault", f"median {statistics.median(settled):.2f} s, max {max(settled):.2f} s"
             if settled else "never"],
            ["converged after the last fault",
             f"{'never' if last is None else f'{last:.2f} s'} to one leader; "
             f"{'never' if self.converged is None else f'{self.converged:.2f} s'} to identical logs once the "
             "clients stopped"],
        ]
        text = table(["soak", "result"], rows)
        if self.violations:
            text += "\n\nViolations:\n" + "\n".join(f"- {v}" for v in self.violations)
        return text

    def _details(self) -> str:
        parts = Counter()
        for f in self.faults:
            if f.kind == "stop":
                parts["stop longer than failure_timeout" if "longer" in f.detail else "stop shorter"] += 1
            elif f.kind == "partition":
                parts[f.detail.split()[0]] += 1
            elif f.kind in ("kill", "restart") and "(leader)" in f.detail:
                parts[f"{f.kind} of the leader"] += 1
        return ", ".join(f"{name} {count}" for name, count in sorted(parts.items())) or "-"


def run_soak(seconds: float, seed: int, keep_logs: Path | None = None, log_level: str = "info") -> Report:
    """One soak on private hosts; every process stopped by pid and every namespace deleted, whatever happens."""
    started = time.monotonic()
    with private_cluster(len(NAMES)) as cluster:
        soak = Soak(cluster, seconds, seed, log_level)
        try:
            soak.start()
            soak.inject()
            figures = soak.finish()
        finally:
            soak._monitoring.set()
            if soak.traffic is not None:
                soak.traffic.kill()
        if soak.violations and keep_logs is not None:
            soak.keep_logs(keep_logs, figures["log"])
            progress(f"soak: daemon logs and client stderr kept in {keep_logs}")
    writers = soak.traffic.writers if soak.traffic else []
    log = figures["log"]
    logged = {e["text"] for e in log if e["kind"] == "message"}
    written = [t for w in writers for r in w.rounds for t in r.written]
    acknowledged = sum(len(r.acknowledged()) for w in writers for r in w.rounds)
    return Report(
        seconds=seconds, seed=seed, faults=soak.faults, forged=soak.forged, rejected=soak.rejected,
        sent=len(written), acknowledged=acknowledged, delivered=sum(t in logged for t in written),
        entries=len(log), rounds=sum(len(w.rounds) for w in writers), failovers=sum(w.failovers() for w in writers),
        violations=soak.violations, max_rss_mb=soak.max_rss_kb / 1024, converged=figures["converged"],
        wall=time.monotonic() - started,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long to inject faults (default 600)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the fault schedule (default 7)")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR",
                        help="on a violation, copy the daemons' logs and the clients' stderr to DIR "
                             "(default: a new directory under /tmp)")
    parser.add_argument("--log-level", choices=("debug", "info"), default="info",
                        help="the daemons' log level (default info)")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error(f"--seconds must be positive, not {args.seconds:g}")
    keep = args.keep_logs or Path(tempfile.gettempdir()) / f"dsd-soak-{args.seed}-{os.getpid()}"
    stop_on_sigterm()
    try:
        note = before_run()
        report = run_soak(args.seconds, args.seed, keep, args.log_level)
    except KeyboardInterrupt:
        progress("soak: interrupted; every process stopped and namespace deleted")
        return 130
    except BenchError as error:
        progress(f"soak: {error}")
        return 1
    print(f"### Chaos soak\n\nCommand: `python -m bench.soak --seconds {args.seconds:g} --seed {args.seed}`. "
          f"{note}.\n\n{report.summary()}", flush=True)
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
