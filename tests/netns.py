"""Private hosts for tests and benchmarks: network namespaces joined by a bridge (DESIGN.md 6).

Nothing started here can reach the machine's real network: each host has only
its own loopback and a veth into a bridge that itself lives in a namespace.
`RoutedNetwork` puts the hosts on two such bridges joined by a router namespace, the
way multicast does not cross (issue 11).
Where namespaces cannot be made (not root), `loopback_only()` says why and
callers fall back to daemons sharing the root namespace's loopback interface.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

SUBNET = "10.77.0"


def run(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def namespaces_unavailable() -> str | None:
    """None if private hosts can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = f"dsdprobe{uuid.uuid4().hex[:8]}"
    try:
        run("ip", "netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as error:
        return f"cannot create a network namespace: {error}"
    run("ip", "netns", "del", probe)
    return None


class PrivateNetwork:
    """`count` hosts h1..hN at 10.77.0.i/24 on one bridge; use as a context manager."""

    def __init__(self, count: int) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.count = count
        self.switch = f"dsd{self.tag}sw"
        self.hosts = [f"dsd{self.tag}h{i}" for i in range(1, count + 1)]
        self._made: list[str] = []
        self._split_bridge = False  # br1, made by the first split()

    def __enter__(self) -> "PrivateNetwork":
        try:
            self.create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def create(self) -> None:
        self._add_namespace(self.switch)
        self._in(self.switch, "ip", "link", "add", "br0", "type", "bridge")
        self._in(self.switch, "ip", "link", "set", "br0", "up")
        for i in range(1, self.count + 1):
            host, veth = self.hosts[i - 1], self._veth(i)
            self._add_namespace(host)
            run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", host)
            run("ip", "link", "set", veth, "netns", self.switch)
            self._in(self.switch, "ip", "link", "set", veth, "master", "br0", "up")
            self._in(host, "ip", "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            self._in(host, "ip", "link", "set", "eth0", "up")
            self._in(host, "ip", "link", "set", "lo", "up")
            self._in(host, "ip", "route", "add", "224.0.0.0/4", "dev", "eth0")

    def destroy(self) -> None:
        """Delete every namespace made (their veths go with them)."""
        for name in reversed(self._made):
            subprocess.run(["ip", "netns", "del", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._made.clear()

    def address(self, i: int) -> str:
        return f"{SUBNET}.{i}"

    def prefix(self, i: int) -> list[str]:
        """The command prefix that runs a program on host i."""
        return ["ip", "netns", "exec", self.hosts[i - 1]]

    def cut(self, i: int) -> None:
        """Unplug host i from the bridge."""
        self._in(self.switch, "ip", "link", "set", self._veth(i), "down")

    def reconnect(self, i: int) -> None:
        self._in(self.switch, "ip", "link", "set", self._veth(i), "up")

    def split(self, hosts: list[int]) -> None:
        """Move `hosts` to a second bridge: two groups that each still see their own members."""
        if not self._split_bridge:
            self._in(self.switch, "ip", "link", "add", "br1", "type", "bridge")
            self._in(self.switch, "ip", "link", "set", "br1", "up")
            self._split_bridge = True
        for i in hosts:
            self._in(self.switch, "ip", "link", "set", self._veth(i), "master", "br1")

    def unsplit(self, hosts: list[int]) -> None:
        for i in hosts:
            self._in(self.switch, "ip", "link", "set", self._veth(i), "master", "br0")

    def _veth(self, i: int) -> str:
        return f"d{self.tag}v{i}"

    def _add_namespace(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self._made.append(name)

    def _in(self, namespace: str, *args: str) -> None:
        run("ip", "netns", "exec", namespace, *args)


class RoutedNetwork(PrivateNetwork):
    """Hosts 1..`first` on 10.77.1.0/24 and the rest on 10.77.2.0/24, each subnet a bridge,
    joined by a router namespace (.254 on both). The router forwards unicast only: it
    routes no multicast, so the daemons of one subnet never hear the other's group."""

    def __init__(self, count: int, first: int) -> None:
        super().__init__(count)
        self.first = first
        self.router = f"dsd{self.tag}rt"

    def create(self) -> None:
        self._add_namespace(self.switch)
        self._add_namespace(self.router)
        for subnet in (1, 2):
            bridge, leg = f"br{subnet}", f"r{self.tag}l{subnet}"
            self._in(self.switch, "ip", "link", "add", bridge, "type", "bridge")
            self._in(self.switch, "ip", "link", "set", bridge, "up")
            run("ip", "link", "add", leg, "type", "veth", "peer", "name", f"eth{subnet}", "netns", self.router)
            run("ip", "link", "set", leg, "netns", self.switch)
            self._in(self.switch, "ip", "link", "set", leg, "master", bridge, "up")
            self._in(self.router, "ip", "addr", "add", f"10.77.{subnet}.254/24", "dev", f"eth{subnet}")
            self._in(self.router, "ip", "link", "set", f"eth{subnet}", "up")
        self._in(self.router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for i in range(1, self.count + 1):
            host, veth, subnet = self.hosts[i - 1], self._veth(i), self.subnet(i)
            self._add_namespace(host)
            run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", host)
            run("ip", "link", "set", veth, "netns", self.switch)
            self._in(self.switch, "ip", "link", "set", veth, "master", f"br{subnet}", "up")
            self._in(host, "ip", "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            self._in(host, "ip", "link", "set", "eth0", "up")
            self._in(host, "ip", "link", "set", "lo", "up")
            self._in(host, "ip", "route", "add", "default", "via", f"10.77.{subnet}.254")
            self._in(host, "ip", "route", "add", "224.0.0.0/4", "dev", "eth0")

    def subnet(self, i: int) -> int:
        return 1 if i <= self.first else 2

    def address(self, i: int) -> str:
        return f"10.77.{self.subnet(i)}.{i}"

    def cut_subnet(self, subnet: int) -> None:
        """Unplug the router from `subnet`: each side still reaches its own hosts."""
        self._in(self.router, "ip", "link", "set", f"eth{subnet}", "down")

    def heal_subnet(self, subnet: int) -> None:
        self._in(self.router, "ip", "link", "set", f"eth{subnet}", "up")
