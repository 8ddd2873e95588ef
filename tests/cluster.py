"""Real dsd processes on private hosts (or on loopback), for integration tests and benchmarks.

Every process is stopped by its pid and every namespace deleted on exit, even
when a test fails. Waiting is always on a condition with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from dsd.client import ControlClient, DaemonError, Unreachable
from tests.netns import PrivateNetwork

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
        for section, values in settings.items():
            sections.setdefault(section, {}).update(values)
        self.config.write_text(render_toml(sections))

    def start(self) -> "Daemon":
        command = self.cluster.prefix(self.host) + [sys.executable, "-m", "dsd", "-c", str(self.config)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        return self

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

    def try_request(self, cmd: str) -> dict[str, Any] | None:
        try:
            return self.request(cmd)
        except (Unreachable, DaemonError):
            return None

    def dsctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "dsctl", "-c", str(self.config), *args],
            capture_output=True, text=True, timeout=30,
        )

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Cluster:
    """Daemons on `hosts` private hosts (network namespaces), or on loopback when `net` is None."""

    def __init__(self, hosts: int, use_namespaces: bool = True) -> None:
        self.net = PrivateNetwork(hosts) if use_namespaces else None
        self._tmp = tempfile.TemporaryDirectory(prefix="dsd-test-")
        self.workdir = Path(self._tmp.name)
        self.daemons: dict[str, Daemon] = {}
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
        for daemon in self.daemons.values():
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.process.kill()
                daemon.process.wait(timeout=10)
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

    def live(self) -> list[Daemon]:
        return [d for d in self.daemons.values() if d.running]

    def leaders(self) -> dict[str, tuple[int, str | None]]:
        """Each live daemon's (term, leader); unreachable ones are missing."""
        beliefs = {}
        for daemon in self.live():
            result = daemon.try_request("leader")
            if result is not None:
                beliefs[daemon.name] = (result["term"], result["leader"])
        return beliefs

    def agreed(self, expected: str | None = None) -> tuple[int, str] | None:
        """(term, leader) if every live daemon sees every other one and agrees on the leader."""
        live = self.live()
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

    def wait_agreed(self, expected: str | None = None, timeout: float = 10.0) -> tuple[int, str]:
        try:
            return wait_until(lambda: self.agreed(expected), timeout, what=f"agreement on {expected or 'a leader'}")
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
