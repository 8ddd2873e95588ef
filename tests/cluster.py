"""Real dsd processes on private hosts (or on loopback), for integration tests and benchmarks.

Every process is stopped by its pid and every namespace deleted on exit, even
when a test fails. Waiting is always on a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import zmq

from dsd import wire
from dsd.client import ControlClient, DaemonError, Unreachable
from dsd.core import datagrams
from tests.netns import PrivateNetwork
from tests.processes import kill_group, spawn

# Fast timings: heartbeats of tens of milliseconds (DESIGN.md 6).
FAST = {"heartbeat_interval": 0.05, "failure_timeout": 0.4, "discovery_timeout": 0.1}


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy; AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


class Daemon:
    """One dsd process: its config, its logs, its control client."""

    def __init__(self, cluster: "Cluster", name: str, host: int, priority: int, settings: dict[str, dict]) -> None:
        self.cluster = cluster
        self.name = name
        self.host = host
        self.priority = priority
        self.dir = cluster.workdir / name
        self.dir.mkdir()
        self.config = self.dir / "dsd.toml"
        self.log = self.dir / "dsd.log"
        self.endpoint = f"ipc://{self.dir}/run/dsd.ctl"
        self.process: subprocess.Popen | None = None
        sections = {
            "node": {"name": name, "priority": priority, "runtime_dir": f"{self.dir}/run",
                     "state_dir": f"{self.dir}/state"},
            "cluster": dict(cluster.cluster_settings),
            "timing": dict(FAST),
            "log": {"level": "debug"},
        }
        self.sections = sections
        self.configure(**settings)

    def configure(self, **settings: dict) -> None:
        """Merge `settings` ({section: {key: value}}) into this daemon's config file and rewrite it."""
        for section, values in settings.items():
            self.sections.setdefault(section, {}).update(values)
        self.config.write_text(render_toml(self.sections))

    def command(self, *args: str, host: int | None = None) -> list[str]:
        """The dsd command line for this daemon's config plus `args`, on its host (or on `host`)."""
        prefix = self.cluster.prefix(self.host if host is None else host)
        return prefix + [sys.executable, "-m", "dsd", "-c", str(self.config), *args]

    def run(self, *args: str, host: int | None = None, timeout: float = 10) -> subprocess.CompletedProcess:
        """Run dsd with `args` to completion, for commands that should exit at once (killed at `timeout`)."""
        return subprocess.run(self.command(*args, host=host), capture_output=True, text=True, timeout=timeout)

    def start(self, env: dict[str, str] | None = None, args: Iterable[str] = ()) -> "Daemon":
        """Start dsd in the foreground; `env` is added to this process's environment."""
        environment = {**os.environ, **env} if env else None
        with open(self.log, "ab") as log:
            self.process = spawn(self.command(*args), stdout=log, stderr=log, env=environment)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.running:
            self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        assert self.process is not None
        if self.running:
            self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def request(self, cmd: str, timeout: float = 0.5) -> dict[str, Any]:
        with ControlClient(self.endpoint, timeout=timeout, retries=1) as client:
            return client.request(cmd)

    def try_request(self, cmd: str, timeout: float = 0.5) -> dict[str, Any] | None:
        try:
            return self.request(cmd, timeout)
        except (Unreachable, DaemonError):
            return None

    def role(self) -> str | None:
        """The role this daemon reports for itself, None if it does not answer."""
        view = self.try_request("view")
        if view is None:
            return None
        return next(s.get("role") for s in view["servers"] if s["name"] == view["self"])

    def feed(self) -> "FeedWatcher":
        """A subscriber to this daemon's event feed (endpoint from `info`)."""
        return FeedWatcher(self.request("info")["feed"])

    def dsctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "dsctl", "-c", str(self.config), *args],
            capture_output=True, text=True, timeout=30,
        )

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Cluster:
    """Daemons on `hosts` private hosts (network namespaces), or on loopback when `net` is None."""

    def __init__(self, hosts: int, use_namespaces: bool = True, network: PrivateNetwork | None = None) -> None:
        """`network`: private hosts of another shape (a RoutedNetwork); else one bridge of `hosts`."""
        self.net = network or (PrivateNetwork(hosts) if use_namespaces else None)
        self._tmp = tempfile.TemporaryDirectory(prefix="dsd-test-")
        self.workdir = Path(self._tmp.name)
        self.daemons: dict[str, Daemon] = {}
        self._marks = 0
        if self.net is None:
            # Loopback only: TTL 0 so nothing could leave the machine even if routed.
            self.cluster_settings: dict[str, Any] = {"interface": "127.0.0.1", "ttl": 0,
                                                     "port": 20000 + os.getpid() % 20000}
        else:
            self.cluster_settings = {"interface": "eth0"}

    def __enter__(self) -> "Cluster":
        if self.net is not None:
            self.net.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            for daemon in self.daemons.values():
                if daemon.process is not None:
                    kill_group(daemon.process)
        finally:
            if self.net is not None:
                self.net.destroy()
            self._tmp.cleanup()

    def prefix(self, host: int) -> list[str]:
        return self.net.prefix(host) if self.net is not None else []

    def add(self, name: str, priority: int = 100, host: int | None = None, start: bool = True,
            **settings: dict) -> Daemon:
        host = host if host is not None else len(self.daemons) + 1
        daemon = Daemon(self, name, host, priority, settings)
        self.daemons[name] = daemon
        return daemon.start() if start else daemon

    def run(self, host: int, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        """Run a command on private host `host` (captured text output, 30 s limit by default)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 30)
        return subprocess.run(self.prefix(host) + args, **kwargs)

    def send(self, host: int, datagrams: list[bytes]) -> None:
        """Send raw datagrams to the group from private host `host`, as a stranger on the LAN would."""
        if self.net is not None:
            interface, ttl = self.net.address(host), 1
        else:
            interface, ttl = "127.0.0.1", 0
        port = self.cluster_settings.get("port", 5008)
        group = self.cluster_settings.get("group", "239.255.77.1")
        result = self.run(host, [sys.executable, "-I", "-S", "-c", _SENDER, group, str(port), interface, str(ttl)],
                          input=json.dumps([d.hex() for d in datagrams]))
        assert result.returncode == 0, result.stderr

    def mark(self, host: int = 1) -> dict[str, Any]:
        """Make every daemon publish `view.join` then `view.leave` of a made-up node, changing nothing else.

        A LEAVE from a node nobody knew: each daemon records it and drops it at once.
        Returns the fields that identify the `view.leave` events (for FeedWatcher.sync).
        """
        self._marks += 1
        name = f"zz-mark-{self._marks}"
        self.send(host, [wire.encode(datagrams.Leave(name, time.time_ns(), 0))])
        return {"name": name}

    def live(self) -> list[Daemon]:
        return [d for d in self.daemons.values() if d.running]

    def roles(self, among: Iterable[str] | None = None) -> dict[str, str | None]:
        """The role each daemon (of `among`, default all live ones) reports for itself."""
        names = list(among) if among is not None else [d.name for d in self.live()]
        return {name: self.daemons[name].role() for name in names}

    def leaders(self, among: Iterable[str] | None = None) -> dict[str, tuple[int, str | None]]:
        """Each live daemon's (or each of `among`'s) (term, leader); unreachable ones are missing."""
        beliefs = {}
        for daemon in self.live() if among is None else [self.daemons[name] for name in among]:
            result = daemon.try_request("leader")
            if result is not None:
                beliefs[daemon.name] = (result["term"], result["leader"])
        return beliefs

    def agreed(self, expected: str | None = None, among: Iterable[str] | None = None) -> tuple[int, str] | None:
        """(term, leader) if every live daemon sees every other one and agrees on the leader.

        `among` restricts this to a group of daemons that must see exactly each other
        (one side of a partition, or the daemons left while another one is stopped).
        """
        live = [self.daemons[name] for name in among] if among is not None else self.live()
        names = {d.name for d in live}
        beliefs = set()
        for daemon in live:
            view = daemon.try_request("view")
            if view is None or {s["name"] for s in view["servers"]} != names:
                return None
            if any(s["state"] != "alive" for s in view["servers"]):
                return None
            beliefs.add((view["term"], view["leader"]))
        if len(beliefs) != 1:
            return None
        term, leader = beliefs.pop()
        if leader is None or (expected is not None and leader != expected):
            return None
        return term, leader

    def wait_agreed(self, expected: str | None = None, timeout: float = 10.0,
                    among: Iterable[str] | None = None) -> tuple[int, str]:
        group = list(among) if among is not None else None
        what = f"agreement on {expected or 'a leader'}" + (f" among {group}" if group else "")
        try:
            return wait_until(lambda: self.agreed(expected, group), timeout, what=what)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.describe()}") from None

    def describe(self) -> str:
        """Every daemon's belief and log tail, for assertion messages."""
        lines = []
        for daemon in self.daemons.values():
            view = daemon.try_request("view") if daemon.running else None
            lines.append(f"--- {daemon.name} running={daemon.running} view={view}")
            lines.extend(daemon.logs().splitlines()[-15:])
        return "\n".join(lines)


class FeedWatcher:
    """A SUB socket on a daemon's feed that keeps every event it has read, in order.

    A subscription takes effect a moment after connecting (ZeroMQ's slow joiner),
    so tests call `sync` with an action that makes the daemon publish, and only
    then trigger what they want to observe.
    """

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.events: list[dict[str, Any]] = []
        self._socket = zmq.Context.instance().socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._socket.connect(endpoint)

    def __enter__(self) -> "FeedWatcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._socket.close(linger=0)

    def _read(self, timeout: float) -> bool:
        if not self._socket.poll(max(0, int(timeout * 1000)), zmq.POLLIN):
            return False
        topic, *bodies = self._socket.recv_multipart()
        assert bodies, topic
        for body in bodies:
            event = json.loads(body)
            assert event.get("topic") == topic.decode(), (topic, event)
            self.events.append(event)
        return True

    def drain(self) -> list[dict[str, Any]]:
        """Read whatever has arrived; returns all events so far."""
        while self._read(0):
            pass
        return self.events

    def wait_for(self, topic: str, timeout: float = 5.0, start: int = 0, **fields: Any) -> dict[str, Any]:
        """The first event (from index `start`) on `topic` whose fields match; AssertionError at the deadline."""
        deadline = time.monotonic() + timeout
        index = start
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                if event["topic"] == topic and all(event.get(k) == v for k, v in fields.items()):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {topic} event with {fields} on {self.endpoint} within {timeout}s; got {self.events}"
                )
            self._read(remaining)

    def index(self, event: dict[str, Any]) -> int:
        return next(i for i, e in enumerate(self.events) if e is event)

    def sync(self, trigger: Callable[[], dict[str, Any] | None], topic: str = "view.leave",
             timeout: float = 10.0, attempt: float = 0.2) -> dict[str, Any]:
        """Call `trigger` until an event on `topic` with the fields it returned arrives; returns that event.

        `Cluster.mark` is the usual trigger: once its event is read, the subscription is
        in place and every later event will be seen. An event answering any earlier
        trigger counts too, and each attempt waits twice as long as the one before, so
        a slow daemon only makes this slower, never fail.
        """
        deadline = time.monotonic() + timeout
        start = len(self.events)
        wanted: list[dict[str, Any]] = []
        while True:
            wanted.append(trigger() or {})
            attempt_deadline = min(deadline, time.monotonic() + attempt)
            attempt *= 2
            index = start
            while True:
                while index < len(self.events):
                    event = self.events[index]
                    index += 1
                    if event["topic"] == topic and any(
                        all(event.get(k) == v for k, v in fields.items()) for fields in wanted
                    ):
                        return event
                remaining = attempt_deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._read(remaining)
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {topic} event answering {wanted} on {self.endpoint} within {timeout}s")


# Run on a private host by Cluster.send: argv = group, port, interface address, ttl;
# stdin = a JSON list of hex-encoded datagrams.
_SENDER = """
import json, socket, sys
group, port, interface, ttl = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
for datagram in json.load(sys.stdin):
    s.sendto(bytes.fromhex(datagram), (group, port))
"""


def render_toml(sections: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            else:
                text = repr(value)
            lines.append(f"{key} = {text}")
        lines.append("")
    return "\n".join(lines)
