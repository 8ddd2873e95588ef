"""Every usage error of dsctl and dschat: exit 2, exactly one line on stderr, no traceback.

The programs run as real processes, as a user would run them, so that a traceback from
anywhere (argparse, libzmq, the key files) would show. None of these may reach a daemon:
the endpoints are either malformed or would need a key that is missing or unusable.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dsd.curve import keygen
from dsd.human import duration, value
from dsd.usage import UsageError, check_endpoint, seconds

ROOT = Path(__file__).resolve().parents[2]
EXIT_USAGE = 2

BAD_ENDPOINTS = ["foo", "tcp://", "tcp://host", "tcp://*:5009", "tcp://a b:5009", "tcp://h:0", "tcp://h:99999",
                 "udp://h:5009", "inproc://x", "ipc://", "ipc:///" + "a" * 200, "", "ipc:/run/dsd.ctl"]
BAD_SECONDS = ["abc", "0", "-1", "nan", "inf", "1e308", ""]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("keys")
    public, secret, key = keygen(str(directory), "alice")
    return {"public": public, "secret": secret, "key": key}


def run(program: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", program, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)


def dsctl_cases(keys: dict[str, str], tmp: Path) -> list[list[str]]:
    tcp = "tcp://127.0.0.1:1"
    return ([["-e", endpoint, "ping"] for endpoint in BAD_ENDPOINTS]
            + [["--timeout", text, "-e", "ipc:///nonexistent", "ping"] for text in BAD_SECONDS]
            + [[], ["frobnicate"], ["view", "--no-such-option"], ["keygen"], ["keygen", str(tmp)],
               ["keygen", str(tmp), "bad/name"], ["keygen", str(tmp), ""],
               ["-e", tcp, "ping"],  # a TCP endpoint without --server-key
               ["-e", tcp, "--server-key", "not-a-key", "ping"],
               ["-e", tcp, "--server-key", str(tmp / "missing.key"), "ping"],
               ["-e", tcp, "--server-key", keys["key"], "--key", keys["public"], "ping"],  # the public file
               ["-e", tcp, "--server-key", keys["key"], "--key", str(tmp / "missing"), "ping"],
               ["--key", keys["secret"], "-e", "ipc:///nonexistent", "ping"]])  # --key alone


def dschat_cases(keys: dict[str, str], tmp: Path) -> list[list[str]]:
    tcp = "tcp://127.0.0.1:1"
    return ([["-e", endpoint, "alice"] for endpoint in BAD_ENDPOINTS]
            + [["-e", "ipc:///nonexistent", option, text, "alice"]
               for option in ("--timeout", "--failover", "--heartbeat", "--wait") for text in BAD_SECONDS]
            + [[], ["bad name"], ["-bob"], ["a" * 33], ["alice", "bob"], ["--history", "x", "alice"],
               ["--history", "-1", "alice"], ["--history", "1001", "alice"],
               ["--discover", "alice"],  # no --server-key: the endpoints it would find are TCP
               ["-e", tcp, "alice"],
               ["-e", tcp, "--server-key", "not-a-key", "alice"],
               ["-e", tcp, "--server-key", keys["key"], "--key", keys["public"], "alice"],
               ["-e", "ipc:///nonexistent", "--key", keys["secret"], "alice"]])


@pytest.mark.parametrize("program", ["dsctl", "dschat"])
def test_every_bad_argument_is_exit_2_and_one_line(program, keys, tmp_path):
    cases = dsctl_cases(keys, tmp_path) if program == "dsctl" else dschat_cases(keys, tmp_path)
    wrong = []
    for args in cases:
        result = run(program, *args)
        lines = result.stderr.splitlines()
        if (result.returncode != EXIT_USAGE or result.stdout or len(lines) != 1
                or not lines[0].startswith(f"{program}: ") or "Traceback" in result.stderr):
            wrong.append((args, result.returncode, result.stdout, result.stderr))
    assert not wrong, "\n".join(map(repr, wrong))
    assert list(tmp_path.iterdir()) == [], "nothing may be made (keygen with a bad name)"


def test_the_message_says_what_is_allowed():
    with pytest.raises(UsageError, match=r"-e 'foo': not a daemon endpoint; give ipc://PATH .* or tcp://HOST:PORT"):
        check_endpoint("foo")
    assert check_endpoint("tcp://h2.lan:5009") == "tcp://h2.lan:5009"
    assert check_endpoint("ipc:///run/dsd/dsd.ctl") == "ipc:///run/dsd/dsd.ctl"
    assert seconds("0.25") == 0.25


# --- the formatter for people --------------------------------------------------------------------

def test_json_values_read_as_words_never_as_python_reprs():
    assert value(None) == "-"
    assert value({"malformed": 0, "bad_tag": 2}) == "malformed 0, bad_tag 2"
    assert value({}) == "none" and value([]) == "none"
    assert value(["a", None]) == "a, -"
    assert value(True) == "yes" and value(0.5) == "0.5" and value(3) == "3"
    assert [duration(s) for s in (5.04, 65, 3725, 90061)] == ["5.0s", "1m 05s", "1h 02m", "1d 01h"]
