"""The dsd process itself: configuration checks, one daemon per endpoint, SIGHUP,
--daemon with a pidfile, and the systemd notify protocol.

Every dsd here runs inside a private host, even the ones expected to exit at once:
if such a check broke, the daemon would start, and it must not start on the
machine's real network.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

import pytest

from tests.chatclients import request
from tests.cluster import FAST, Daemon, wait_until


def control_socket(daemon: Daemon) -> Path:
    return Path(daemon.endpoint.removeprefix("ipc://"))


def wait_log(daemon: Daemon | Path, text: str, timeout: float = 5, count: int = 1) -> str:
    """Wait until `text` appears `count` times in the daemon's log (or the given log file)."""
    read = (lambda: daemon.read_text(errors="replace") if daemon.exists() else "") if isinstance(daemon, Path) \
        else daemon.logs
    return wait_until(lambda: read().count(text) >= count and read(), timeout, what=f"{text!r} in the log")


def events_processed(daemon: Daemon, before: int, more: int) -> None:
    wait_until(lambda: daemon.request("stats")["events_published"] >= before + more, 5,
               what="the daemon to publish the marker's events")


# ------------------------------------------------------------------ configuration


def test_check_config_prints_the_effective_settings_and_starts_nothing(make_cluster):
    cluster = make_cluster(1)
    daemon = cluster.add("solo", priority=7, start=False, election={"preempt": False})
    result = daemon.run("--check-config")
    assert result.returncode == 0, result
    settings = tomllib.loads(result.stdout)
    assert settings["node"]["name"] == "solo" and settings["node"]["priority"] == 7
    assert settings["node"]["runtime_dir"] == f"{daemon.dir}/run"
    assert settings["timing"] == {key: float(value) for key, value in FAST.items()}
    assert settings["election"] == {"preempt": False}
    assert settings["control"] == {"endpoint": daemon.endpoint, "feed": f"ipc://{daemon.dir}/run/dsd.feed",
                                   "tcp_endpoint": "", "tcp_feed": "",
                                   "server_key": f"{daemon.dir}/state/server.key_secret",
                                   "client_keys": "", "any_client": False, "admin_keys": ""}
    # Keys the file leaves out are shown with their defaults.
    assert settings["cluster"]["group"] == "239.255.77.1"
    assert settings["cluster"]["port"] == cluster.cluster_settings.get("port", 5008)
    assert settings["log"] == {"level": "debug", "format": "text"}
    assert settings["metrics"] == {"listen": ""}
    assert str(daemon.config) in result.stdout.splitlines()[0]
    assert not control_socket(daemon).exists(), "--check-config must not start the daemon"


@pytest.mark.parametrize("settings, words", [
    ({"node": {"priority": -1}}, ["[node] priority = -1", "0 to"]),
    ({"timing": {"heartbeat_interval": "fast"}}, ['[timing] heartbeat_interval = "fast"', "seconds"]),
    ({"cluster": {"ttl": 300}}, ["[cluster] ttl = 300", "0 to 255"]),
    ({"node": {"colour": "red"}}, ['[node] colour = "red"', "unknown key"]),
    ({"timing": {"heartbeat_interval": 0.5, "failure_timeout": 0.6}},
     ["[timing] failure_timeout = 0.6", "heartbeat_interval = 0.5"]),
], ids=["priority-negative", "interval-not-a-number", "ttl-too-big", "unknown-key", "timeout-too-short"])
def test_bad_config_value_exits_1_with_one_line_and_starts_nothing(make_cluster, settings, words):
    cluster = make_cluster(1)
    daemon = cluster.add("solo", start=False, **settings)
    result = daemon.run()
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(daemon.config) in lines[0] and all(word in lines[0] for word in words), lines[0]
    assert result.stdout == ""
    assert not (daemon.dir / "run").exists(), "nothing may start"


def test_second_daemon_on_the_same_endpoints_refuses_and_the_first_keeps_working(make_cluster):
    cluster = make_cluster(2)
    first = cluster.add("a", priority=101)
    cluster.add("b", priority=102)
    term, _ = cluster.wait_agreed("b")
    for host in (1, 2):  # the same host, and another host sharing the directory
        result = first.run(host=host)
        assert result.returncode == 1, result
        message = result.stderr.strip()
        assert "already running" in message and first.endpoint in message, message
        assert len(message.splitlines()) == 1, message
    assert first.running and control_socket(first).exists()
    assert first.request("ping") == {"pong": True}
    assert first.request("info")["pid"] == first.pid
    assert cluster.wait_agreed("b") == (term, "b")
    assert "another node uses the name" not in first.logs()


def test_ipc_sockets_are_for_the_owner_and_group_only(make_cluster):
    cluster = make_cluster(1)
    daemon = cluster.add("a")
    cluster.wait_agreed("a")
    for name in ("dsd.ctl", "dsd.feed"):
        mode = (daemon.dir / "run" / name).stat().st_mode & 0o777
        assert mode == 0o660, f"{name}: {oct(mode)}"


# ------------------------------------------------------------------ SIGHUP


def test_sighup_reloads_timings_and_log_level(make_cluster):
    cluster = make_cluster(1)
    # Slow heartbeats and slow start-up probes (backing off from discovery_timeout).
    daemon = cluster.add("solo", start=False, log={"level": "info"},
                         timing={"heartbeat_interval": 1.0, "failure_timeout": 3.0, "discovery_timeout": 1.0})
    daemon.start()
    wait_log(daemon, "leader is now solo")
    before = daemon.request("stats")["events_published"]
    cluster.mark(1)
    events_processed(daemon, before, 2)
    assert " DEBUG " not in daemon.logs(), "info level: no debug lines yet"

    daemon.configure(log={"level": "debug"}, timing={"heartbeat_interval": 0.05, "failure_timeout": 0.4})
    daemon.signal(signal.SIGHUP)
    wait_log(daemon, "reloaded")
    # Heartbeats every 50 ms now: twenty more go out in a second. At the old interval,
    # 4 s would see at most 5 heartbeats and 3 probes.
    sent = daemon.request("stats")["datagrams_sent"]
    wait_until(lambda: daemon.request("stats")["datagrams_sent"] >= sent + 20, 4,
               what="heartbeats at the reloaded interval")
    mark = cluster.mark(1)["name"]
    wait_log(daemon, f"DEBUG dsd: event view.join {{'name': '{mark}'")
    assert daemon.running and daemon.request("ping") == {"pong": True}


def test_sighup_with_a_broken_file_keeps_the_running_configuration(make_cluster):
    cluster = make_cluster(1)
    daemon = cluster.add("solo", start=False, log={"level": "info"})
    daemon.start()
    wait_log(daemon, "leader is now solo")
    term = daemon.request("leader")["term"]
    daemon.configure(log={"level": "debug"}, timing={"heartbeat_interval": -1})
    daemon.signal(signal.SIGHUP)
    line = wait_log(daemon, "reload failed, keeping the running configuration")
    failure = next(l for l in line.splitlines() if "reload failed" in l)
    assert str(daemon.config) in failure and "heartbeat_interval" in failure and "-1" in failure, failure

    assert daemon.running and daemon.request("ping") == {"pong": True}
    before = daemon.request("stats")["events_published"]
    cluster.mark(1)
    events_processed(daemon, before, 2)
    assert " DEBUG " not in daemon.logs(), "the log level of the broken file must not apply"
    assert daemon.request("leader") == {"self": "solo", "leader": "solo", "term": term}

    # Once the file is fixed, the next SIGHUP applies it.
    daemon.configure(timing={"heartbeat_interval": FAST["heartbeat_interval"]})
    daemon.signal(signal.SIGHUP)
    wait_log(daemon, "reloaded")
    mark = cluster.mark(1)["name"]
    wait_log(daemon, f"event view.join {{'name': '{mark}'")


# ------------------------------------------------------------------ --daemon


def process_gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie awaiting its reaper counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_daemon_mode_detaches_writes_the_pidfile_and_stops_on_sigterm(make_cluster):
    cluster = make_cluster(1)
    daemon = cluster.add("solo", start=False)
    pidfile, log = daemon.dir / "dsd.pid", daemon.dir / "detached.log"
    pid = None
    try:
        launcher = daemon.run("--daemon", "--pidfile", str(pidfile), "--log-file", str(log))
        assert launcher.returncode == 0, launcher
        pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, what="the pidfile"))
        assert wait_until(lambda: daemon.try_request("ping"), 10, what="ping") == {"pong": True}
        assert daemon.request("info")["pid"] == pid
        assert os.getsid(pid) != os.getsid(0), "detached from our session"
        wait_log(log, "started: dsd")
        wait_until(lambda: daemon.request("leader")["leader"] == "solo", 5, what="solo to lead itself")

        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: process_gone(pid), 10, what=f"pid {pid} to exit")
        pid = None
        text = wait_log(log, "stopping: leaving the cluster")
        assert "Traceback" not in text and " ERROR " not in text, text
        wait_until(lambda: not pidfile.exists(), 5, what="the pidfile to be removed")
    finally:
        if pid is None and pidfile.exists():
            try:
                pid = int(pidfile.read_text().strip())
            except ValueError:
                pid = None
        if pid is not None and not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def kill_detached(pidfile: Path, *pids: int | None) -> None:
    """SIGKILL what a test detached, by the pids it knows and the one in the pidfile."""
    for pid in {*pids, read_pid(pidfile)}:
        if pid is not None and not process_gone(pid):
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: process_gone(pid), 10, what=f"pid {pid} to exit")


def start_detached(daemon: Daemon, pidfile: Path, previous: int | None = None) -> int:
    """`dsd --daemon --pidfile`: its pid once the pidfile names a new process that answers."""
    launcher = daemon.run("--daemon", "--pidfile", str(pidfile), "--log-file", str(daemon.dir / "detached.log"))
    assert launcher.returncode == 0, launcher
    pid = wait_until(lambda: (read_pid(pidfile) or previous) != previous and read_pid(pidfile), 10,
                     what="the pidfile to name the new daemon")
    wait_until(lambda: daemon.try_request("info", timeout=1) and daemon.request("info")["pid"] == pid, 10,
               what=f"pid {pid} to answer")
    return pid


def test_a_pidfile_left_by_a_killed_daemon_does_not_block_the_next_start(make_cluster):
    cluster = make_cluster(1)
    daemon = cluster.add("solo", start=False)
    other = cluster.add("other", host=1, start=False)  # its own endpoints: only the pidfile is shared
    pidfile = daemon.dir / "dsd.pid"
    first = second = None
    try:
        first = start_detached(daemon, pidfile)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: process_gone(first), 10, what="the first daemon to die")
        assert read_pid(pidfile) == first, "kill -9 leaves the pidfile behind"
        second = start_detached(daemon, pidfile, previous=first)
        assert second != first
        # A live holder, though, is refused, before detaching, with one line naming it.
        again = other.run("--daemon", "--pidfile", str(pidfile))
        assert again.returncode == 1, again
        assert again.stderr.count("\n") == 1 and f"held by running process {second}" in again.stderr, again
        assert read_pid(pidfile) == second and daemon.request("info")["pid"] == second
    finally:
        kill_detached(pidfile, first, second)


def test_a_pidfile_in_a_missing_directory_is_an_error_before_detaching(make_cluster):
    daemon = make_cluster(1).add("solo", start=False)
    pidfile = daemon.dir / "no" / "such" / "dir" / "d.pid"
    result = daemon.run("--daemon", "--pidfile", str(pidfile))
    try:
        assert result.returncode == 1, result
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and str(pidfile) in lines[0] and "No such file or directory" in lines[0], lines
        assert not control_socket(daemon).exists() and daemon.try_request("ping") is None, "no daemon may run"
    finally:
        kill_detached(pidfile)


def test_check_config_refuses_an_interface_this_host_does_not_have(make_cluster):
    daemon = make_cluster(1).add("solo", start=False, cluster={"interface": "nosuch0"})
    for args in (["--check-config"], []):
        result = daemon.run(*args)
        assert result.returncode == 1, result
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and result.stdout == "", result
        assert lines[0].startswith(f"dsd: {daemon.config}: [cluster] interface = 'nosuch0': "), lines[0]
        assert "eth0" in lines[0] or "lo" in lines[0], "it names the interfaces there are"
    assert not control_socket(daemon).exists()


@pytest.mark.parametrize("args", [["--pidfile", "/tmp/x.pid"], ["--log-file", "/tmp/x.log"], ["--bogus"],
                                  ["--log-level", "loud"], ["extra"]],
                         ids=["pidfile-without-daemon", "log-file-without-daemon", "unknown-option",
                              "bad-log-level", "stray-argument"])
def test_usage_errors_exit_2_with_one_line(make_cluster, args):
    daemon = make_cluster(1).add("solo", start=False)
    result = daemon.run(*args)
    assert result.returncode == 2, result
    assert result.stderr.startswith("dsd: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr and not control_socket(daemon).exists()


# ------------------------------------------------------------------ systemd notify


class NotifySocket:
    """The manager's end of $NOTIFY_SOCKET: a datagram socket drained by a thread, as systemd does.

    Draining all the time matters: the queue of a unix datagram socket is short
    (net.unix.max_dgram_qlen, 10 by default), and dsd drops notifications that do
    not fit rather than block its event loop.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self._changed = threading.Condition()
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.settimeout(0.05)
        self._open = True
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while self._open:
            try:
                message = self._socket.recv(4096).decode()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._changed:
                self.messages.append(message)
                self._changed.notify_all()

    def close(self) -> None:
        self._open = False
        self._thread.join(timeout=5)
        self._socket.close()

    def wait_for(self, predicate, timeout: float = 5, what: str = "", count: int = 1) -> str:
        """The `count`th notification matching `predicate`."""
        def found() -> str | None:
            matches = [m for m in self.messages if predicate(m)]
            return matches[count - 1] if len(matches) >= count else None

        with self._changed:
            if not self._changed.wait_for(found, timeout):
                raise AssertionError(f"no notification {what} within {timeout}s; got {self.messages}")
            return found()


def test_systemd_notify_ready_status_watchdog_and_stopping(make_cluster):
    cluster = make_cluster(2)
    sockets = {name: NotifySocket(cluster.workdir / f"{name}.notify") for name in ("a", "b")}
    try:
        daemons = {}
        for name, priority in (("a", 101), ("b", 102)):
            daemons[name] = cluster.add(name, priority=priority, start=False)
            daemons[name].start(env={"NOTIFY_SOCKET": str(sockets[name].path), "WATCHDOG_USEC": "200000"})
        for name, daemon in daemons.items():
            manager = sockets[name]
            manager.wait_for(lambda m: m == "READY=1", what="READY=1")
            assert control_socket(daemon).exists(), "READY=1 only once the sockets are bound"
        term, _ = cluster.wait_agreed("b")
        sockets["a"].wait_for(lambda m: m.startswith("STATUS=") and "following b" in m, what="a following b")
        sockets["b"].wait_for(lambda m: m.startswith("STATUS=") and f"leader of term {term}" in m,
                              what="b leading")
        for manager in sockets.values():
            # Every WATCHDOG_USEC / 2 = 0.1 s.
            manager.wait_for(lambda m: m == "WATCHDOG=1", what="WATCHDOG=1", count=3)

        daemons["a"].signal(signal.SIGTERM)
        sockets["a"].wait_for(lambda m: m == "STOPPING=1", what="STOPPING=1")
        assert daemons["a"].process.wait(timeout=10) == 0
        assert sockets["a"].messages.index("READY=1") < sockets["a"].messages.index("STOPPING=1")
    finally:
        for manager in sockets.values():
            manager.close()


def test_a_manager_that_stops_reading_notifications_does_not_stall_the_daemon(make_cluster):
    """Notifications are advisory: a full notify socket must not block the event loop.

    A blocked send holds up heartbeats; peers then declare the daemon dead and elect.
    """
    cluster = make_cluster(2)
    path = cluster.workdir / "wedged.notify"
    wedged = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    wedged.bind(str(path))  # and never read
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    probe.setblocking(False)
    try:
        follower = cluster.add("a", priority=101, start=False)
        follower.start(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "100000"})
        leader = cluster.add("b", priority=102)
        term, _ = cluster.wait_agreed("b")
        with leader.feed() as feed:
            feed.sync(lambda: cluster.mark(2))
            first = len(feed.events)

            def queue_full() -> bool:
                try:
                    probe.sendto(b"X-TEST=1", str(path))
                except BlockingIOError:
                    return True
                return False

            wait_until(queue_full, 10, what="the notify queue to fill up")
            # Watchdog pings every 50 ms keep meeting a full queue for five failure timeouts.
            deadline = time.monotonic() + 5 * FAST["failure_timeout"]
            while time.monotonic() < deadline:
                assert set(cluster.leaders().values()) <= {(term, "b")}, cluster.describe()
            assert follower.running and follower.request("ping") == {"pong": True}
            assert follower.request("stats")["pauses_detected"] == 0, "the event loop stalled"
            events = feed.drain()[first:]
            membership = ("view.dead", "view.leave", "view.join")
            assert not [e for e in events if e["topic"] in membership and e["name"] == "a"], events
            assert not [e for e in events if e["topic"] == "leader"], events
    finally:
        probe.close()
        wedged.close()


def test_a_relative_config_path_is_made_absolute(make_cluster):
    """`dsd --daemon` changes to /, so a relative -c path would break SIGHUP and `dsctl info`."""
    daemon = make_cluster(1).add("solo", start=False)
    relative = os.path.relpath(daemon.config, daemon.dir.parent)
    result = subprocess.run([sys.executable, "-m", "dsd", "-c", relative, "--check-config"],
                            cwd=daemon.dir.parent, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result
    assert f'from "{daemon.config}"' in result.stdout.splitlines()[0]


def test_sighup_leaves_chat_settings_to_the_next_restart(make_cluster):
    """[chat] settings wait for the restart: the running core keeps its limits."""
    daemon = make_cluster(1).add("solo", log={"level": "info"})
    wait_log(daemon, "leader is now solo")
    daemon.configure(chat={"bootstrap_expect": 3, "max_message": 10})
    daemon.signal(signal.SIGHUP)
    wait_log(daemon, "reloaded")
    assert "[chat] changed; those take effect at the next restart" in daemon.logs()
    session = "solo-session-0001"
    assert request(daemon, "chat.join", user="ann", session=session)["seq"] > 0
    sent = request(daemon, "chat.send", user="ann", session=session, id="m1", text="longer than ten bytes")
    assert sent["seq"] > 0, "max_message = 10 waits for the restart"
