"""The README's first command: the demo cluster starts, agrees, and always stops.

Ctrl-C (SIGINT) stops every daemon within 2 s, every time; a SIGKILLed demo takes its
daemons with it; the view it prints is settled (no `candidate` row); a daemon that
cannot start makes it exit non-zero.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from typing import Iterator

import pytest

from tests.cluster import wait_until
from tests.integration.conftest import NAMESPACES_UNAVAILABLE
from tests.netns import PrivateNetwork
from tests.processes import gone, kill_group, spawn

STOPPED_WITHIN = 2.0  # seconds, from the demo's SIGINT (or its death) to every daemon gone
READY = "Ctrl-C stops every daemon"


class Demo:
    """`python -m dsd.demo` in a process group of its own; its output collected as it comes."""

    def __init__(self, prefix: list[str], port: int, *args: str) -> None:
        self.process = spawn(prefix + [sys.executable, "-m", "dsd.demo", "--port", str(port), *args],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self) -> list[int]:
        """Wait for the view; returns the daemons' pids from its first line."""
        wait_until(lambda: READY in self.output or self.process.poll() is not None, 30, what="the demo")
        assert READY in self.output, self.output
        listed = re.search(r"on loopback \(([^)]*)\)", self.output)
        assert listed, self.output
        return [int(part.split("=")[1]) for part in listed.group(1).split()]

    def finish(self, timeout: float = 10) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def close(self) -> None:
        kill_group(self.process)  # the daemons are in the demo's process group
        self._reader.join(timeout=5)


@pytest.fixture
def private_loopback() -> Iterator[list[str]]:
    """A command prefix that runs the demo on a private host's loopback (or on this one's without root)."""
    if NAMESPACES_UNAVAILABLE is not None:
        yield []
        return
    with PrivateNetwork(1) as net:
        yield net.prefix(1)


def port() -> int:
    return 21000 + os.getpid() % 20000


def all_gone(pids: list[int]) -> bool:
    return all(gone(pid) for pid in pids)


def test_demo_shows_a_settled_view_and_chat_works_through_it(private_loopback):
    demo = Demo(private_loopback, port())
    try:
        pids = demo.wait_ready()
        assert len(pids) == 3
        output = demo.output
        assert "leader: charlie  term: 1  servers: 3" in output
        rows = [line for line in output.splitlines() if re.match(r"^\s*\*?\s+(alpha|bravo|charlie)\b", line)]
        assert len(rows) == 3 and all(" alive " in row for row in rows), output
        assert sorted(next(word for word in row.split() if word in ("leader", "follower")) for row in rows) == [
            "follower", "follower", "leader"], output
        assert all(" voter " in row for row in rows), output
        assert "candidate" not in output and "discovering" not in output
        chat_line = next(line for line in demo.lines if line.startswith("Chat: "))
        command = shlex.split(chat_line[len("Chat: "):])
        assert command[-1] == "alice"
        chat = subprocess.run(private_loopback + command + ["--json"], input="hello from the demo\n",
                              capture_output=True, text=True, timeout=30)
        assert chat.returncode == 0, chat.stderr
        entries = [json.loads(line) for line in chat.stdout.splitlines()]
        assert [(e["kind"], e["user"], e["text"]) for e in entries if e["kind"] == "message"] == [
            ("message", "alice", "hello from the demo")]
        demo.process.send_signal(signal.SIGINT)
        assert demo.finish() == 0
        assert "stopped 3 daemons\n" in demo.output
        assert all_gone(pids)
    finally:
        demo.close()


def test_ctrl_c_stops_every_daemon_within_two_seconds_twenty_times_in_a_row(private_loopback):
    """Odd attempts signal the demo alone; even ones its whole process group, as a terminal's Ctrl-C does."""
    for attempt in range(20):
        demo = Demo(private_loopback, port())
        try:
            pids = demo.wait_ready()
            if attempt % 2:
                demo.process.send_signal(signal.SIGINT)
            else:
                os.killpg(demo.process.pid, signal.SIGINT)
            wait_until(lambda: all_gone(pids), STOPPED_WITHIN, interval=0.01,
                       what=f"every daemon gone after Ctrl-C (attempt {attempt + 1})")
            assert demo.finish() == 0
            assert "stopped 3 daemons\n" in demo.output, demo.output
        finally:
            demo.close()


def test_a_sigkilled_demo_takes_its_daemons_with_it(private_loopback):
    demo = Demo(private_loopback, port())
    try:
        pids = demo.wait_ready()
        demo.process.send_signal(signal.SIGKILL)  # the demo alone, not its group
        wait_until(lambda: all_gone(pids), STOPPED_WITHIN, interval=0.01, what="every daemon gone with the demo")
    finally:
        demo.close()


def test_the_demo_says_how_many_daemons_it_stopped_when_one_had_died(private_loopback):
    demo = Demo(private_loopback, port())
    try:
        pids = demo.wait_ready()
        os.kill(pids[0], signal.SIGKILL)
        wait_until(lambda: "alpha exited with code -9" in demo.output, 5, what="the demo noticing alpha died")
        demo.process.send_signal(signal.SIGINT)
        assert demo.finish() == 0
        assert "stopped 2 daemons; exited on their own: alpha (exit code -9)\n" in demo.output, demo.output
    finally:
        demo.close()


def test_a_daemon_that_cannot_start_makes_the_demo_fail(private_loopback):
    """Port 70000 is no port: every daemon stops on its configuration, and the demo says so."""
    demo = Demo(private_loopback, 70000)
    try:
        assert demo.finish(timeout=30) == 1
        assert "exited at start-up" in demo.output and "[cluster] port = 70000" in demo.output, demo.output
        report = re.search(r"^stopped (\d) daemons?(?:; exited on their own: (.*))?$", demo.output, re.MULTILINE)
        assert report, demo.output
        exited = report.group(2).split(", ") if report.group(2) else []
        assert int(report.group(1)) + len(exited) == 3 and exited, report.group(0)
        assert all(entry.endswith("(exit code 1)") for entry in exited), report.group(0)
    finally:
        demo.close()
