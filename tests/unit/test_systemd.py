"""sd_notify client (dsd.io.systemd) and the shipped unit file (systemd/dsd.service)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsd.io.systemd import Notifier

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "dsd.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed"
)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's notify socket."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield sock, str(path)
    sock.close()


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def assert_nothing_received(sock: socket.socket) -> None:
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


# --- Notifier -----------------------------------------------------------------


def test_sends_each_state_as_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled

    notifier.ready()
    assert receive(sock) == "READY=1"
    notifier.status("3 peers, leader b")
    assert receive(sock) == "STATUS=3 peers, leader b"
    notifier.watchdog()
    assert receive(sock) == "WATCHDOG=1"
    notifier.stopping()
    assert receive(sock) == "STOPPING=1"
    notifier.close()


def test_reloading_carries_monotonic_timestamp(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    lines = receive(sock).split("\n")
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    assert len(lines) == 2
    notifier.close()


def test_status_is_a_single_line(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.status("joining\nREADY=1\r\nsoon")
    # A newline must not let status text smuggle in another assignment.
    assert receive(sock) == "STATUS=joining READY=1 soon"
    notifier.close()


def test_abstract_namespace_socket() -> None:
    name = f"dsd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.ready()
        assert receive(sock) == "READY=1"
        notifier.close()


def test_keeps_one_close_on_exec_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.ready()
    notifier.watchdog()
    assert [receive(sock), receive(sock)] == ["READY=1", "WATCHDOG=1"]
    own = notifier._sock
    assert own is not None
    assert own.get_inheritable() is False
    notifier.status("x")
    assert notifier._sock is own
    receive(sock)

    notifier.close()
    assert own.fileno() == -1
    notifier.ready()
    assert_nothing_received(sock)


@pytest.mark.parametrize("env", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative/path"}])
def test_disabled_notifier_does_nothing(env: dict[str, str]) -> None:
    notifier = Notifier(env)
    assert not notifier.enabled
    notifier.ready()
    notifier.status("x")
    notifier.reloading()
    notifier.watchdog()
    notifier.stopping()
    assert notifier._sock is None
    notifier.close()


def test_vanished_socket_does_not_raise_and_logs_once(
    listener: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.ready()
    assert receive(sock) == "READY=1"
    sock.close()
    os.unlink(path)

    with caplog.at_level(logging.DEBUG, logger="dsd.systemd"):
        notifier.watchdog()
        notifier.watchdog()
        notifier.stopping()
    failures = [r for r in caplog.records if r.name == "dsd.systemd"]
    assert len(failures) == 1
    assert failures[0].levelno == logging.DEBUG
    notifier.close()


def test_never_created_socket_does_not_raise(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing")})
    notifier.ready()
    notifier.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "nope"}, None),
        ({}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "ten"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert Notifier(env).watchdog_interval() == expected


# --- unit file ----------------------------------------------------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> values, in order (systemd keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


def test_unit_matches_what_the_daemon_does() -> None:
    """Settings the daemon's behaviour relies on; systemd-analyze would accept their absence."""
    s = unit_settings(UNIT.read_text())
    expected = {
        "Service.Type": ["notify"],
        "Service.NotifyAccess": ["main"],
        "Service.ExecReload": ["/bin/kill -HUP $MAINPID"],
        "Service.KillSignal": ["SIGTERM"],
        "Service.WatchdogSec": ["10s"],
        "Service.Restart": ["on-failure"],
        "Service.DynamicUser": ["yes"],
        "Service.RuntimeDirectory": ["dsd"],
        "Service.StateDirectory": ["dsd"],
        "Service.CapabilityBoundingSet": [""],
        "Install.WantedBy": ["multi-user.target"],
    }
    for key, value in expected.items():
        assert s.get(key) == value, key
    families = set(s["Service.RestrictAddressFamilies"][0].split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}


@needs_analyze
def test_unit_security_exposure_is_low() -> None:
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for dsd\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 1.5, result.stdout


@needs_analyze
def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    # `verify` checks that ExecStart= names an executable, and /usr/local/bin/dsd
    # exists only once dsd is installed system-wide. Verify a copy that starts a
    # stand-in script instead; every other line is the shipped one. The copy keeps
    # the name dsd.service because verify derives the unit name from the file name.
    stub = tmp_path / "dsd"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert "\nExecStart=/usr/local/bin/dsd\n" in text
    copy = tmp_path / "dsd.service"
    copy.write_text(text.replace("\nExecStart=/usr/local/bin/dsd\n", f"\nExecStart={stub}\n"))

    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    about_unit = [line for line in result.stderr.splitlines() if "dsd.service" in line]
    assert about_unit == [], result.stderr
    assert result.returncode == 0, result.stderr


# --- the cluster secret as a systemd credential ------------------------------------------------

README = UNIT.parents[1] / "README.md"
CREDENTIAL = "LoadCredential=dsd.key:/etc/dsd.key"
CREDENTIAL_PATH = "/run/credentials/dsd.service/dsd.key"


def test_the_readme_and_the_unit_give_the_secret_as_a_credential() -> None:
    """DynamicUser=yes has no fixed user to own the secret: systemd passes it as a credential."""
    for text in (README.read_text(), UNIT.read_text()):
        assert CREDENTIAL in text
        assert f'secret_file = "{CREDENTIAL_PATH}"' in text
    assert "owned by the dsd user" not in README.read_text()


def test_dsd_reads_the_secret_as_a_service_sees_its_credential(tmp_path: Path) -> None:
    # systemd's copy: mode 0400, owned by the service's (dynamic) user, not by whoever runs this.
    from dsd.auth import read_keyring

    path = tmp_path / "credentials" / "dsd.service" / "dsd.key"
    path.parent.mkdir(parents=True)
    path.write_text("bSwm0ASoSkU9dSWMnEfFn0lIxH2mp3W0ucEBEqUIrvc=\n")
    path.chmod(0o400)
    if os.geteuid() == 0:
        os.chown(path, 61234, 61234)
    keyring = read_keyring(str(path))
    assert keyring is not None and len(keyring.keys) == 1


@needs_analyze
def test_the_unit_with_the_credential_verifies(tmp_path: Path) -> None:
    stub = tmp_path / "dsd"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    text = UNIT.read_text().replace("\nExecStart=/usr/local/bin/dsd\n", f"\nExecStart={stub}\n")
    copy = tmp_path / "dsd.service"
    copy.write_text(text.replace("\n[Service]\n", f"\n[Service]\n{CREDENTIAL}\n", 1))
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(copy)],
                            capture_output=True, text=True, check=False)
    assert [line for line in result.stderr.splitlines() if "dsd.service" in line] == [], result.stderr
    assert result.returncode == 0, result.stderr
