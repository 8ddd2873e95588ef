"""dsctl against a running 3-host cluster: output for people and for scripts, exit codes.

dsctl runs as a real process; it talks to the daemons over their ipc control
sockets, which are files and so reachable from outside the hosts' namespaces.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from dsctl.cli import OPERATOR_COMMANDS
from tests.cluster import wait_until
from tests.processes import kill_group, spawn

SERVER_FIELDS = {"name", "address", "priority", "state", "leader", "term", "last_seen"}
# Fields dsd adds beyond the issue's contract (documented so that a new one is a decision).
EXTRA_SERVER_FIELDS = {"role", "chat"}
STATS_COUNTERS = {"datagrams_sent", "datagrams_received", "datagrams_rejected", "elections_started",
                  "elections_won", "leader_changes", "uptime"}
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def dsctl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsctl", *args], capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == EXIT_OK, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def columns(header: str) -> list[tuple[str, int]]:
    """(title, start offset) of each column title (titles may hold single spaces: LAST SEEN)."""
    return [(m.group(), m.start()) for m in re.finditer(r"\S+(?: \S+)*", header)]


def test_view_prints_aligned_columns_with_the_leader_marked(cluster):
    a = cluster.daemons["a"]
    term, _ = cluster.wait_agreed("c")
    # A snapshot in which every peer is alive (one may be suspect for a moment under load).
    out = wait_until(lambda: (lambda text: " suspect " not in text and text)(ok(a.dsctl("view"))), 10,
                     what="a view with every peer alive")
    lines = out.rstrip("\n").split("\n")
    header, rows = lines[0], lines[1:4]
    assert lines[4] == "", out
    assert re.fullmatch(rf"leader: c\s+term: {term}\s+servers: 3", lines[5]), out
    titles = columns(header)
    names = [title for title, _ in titles]
    for required in ("NAME", "ADDRESS", "PRIORITY", "STATE", "LEADER", "LAST SEEN"):
        assert required in names, header
    assert names.index("NAME") < names.index("ADDRESS") < names.index("PRIORITY") < names.index("STATE")

    expected = {s["name"]: s for s in a.request("view")["servers"]}
    marked, order = [], []
    for row in rows:
        cells = {}
        for i, (title, start) in enumerate(titles):
            end = titles[i + 1][1] if i + 1 < len(titles) else len(row)
            # Aligned: every cell starts exactly under its title, after a gap of spaces.
            assert row[start - 2:start] == "  " and row[start] != " ", f"{title!r} misaligned in\n{out}"
            cells[title] = row[start:end].rstrip()
        if row[:titles[0][1]].strip():
            marked.append(cells["NAME"])
            assert row[:titles[0][1]].strip() == "*", out
        name = cells["NAME"].removesuffix(" (self)")
        order.append(name)
        assert cells["NAME"].endswith(" (self)") == (name == "a"), out
        server = expected[name]
        assert cells["ADDRESS"] == server["address"]
        assert cells["PRIORITY"] == str(server["priority"])
        assert cells["STATE"] == "alive"
        assert cells["LEADER"] == "c"
        assert re.fullmatch(r"\d+\.\d+s", cells["LAST SEEN"]), cells
    assert marked == ["c"], f"exactly the leader is marked:\n{out}"
    assert order == ["c", "b", "a"], f"listed by rank:\n{out}"


@pytest.mark.parametrize("order", ["after", "before"])
def test_view_json_has_exactly_the_documented_shape(cluster, order):
    a = cluster.daemons["a"]
    term, _ = cluster.wait_agreed("c")
    args = ("view", "--json") if order == "after" else ("--json", "view")
    view = json.loads(ok(a.dsctl(*args)))
    assert set(view) == {"self", "term", "leader", "servers", "clients", "chat_cluster"}
    assert view["clients"] == []
    assert (view["self"], view["term"], view["leader"]) == ("a", term, "c")
    assert [s["name"] for s in view["servers"]] == ["c", "b", "a"]
    for server in view["servers"]:
        assert SERVER_FIELDS <= set(server) and set(server) - SERVER_FIELDS <= EXTRA_SERVER_FIELDS, server
        assert isinstance(server["name"], str)
        assert isinstance(server["address"], str) and re.fullmatch(r"\d+\.\d+\.\d+\.\d+:\d+", server["address"])
        assert type(server["priority"]) is int and type(server["term"]) is int
        assert server["state"] in ("alive", "suspect")
        assert server["leader"] is None or isinstance(server["leader"], str)
        assert isinstance(server["last_seen"], (int, float)) and server["last_seen"] >= 0
    assert {s["name"]: s["chat"] for s in view["servers"]} == {"a": "voter", "b": "voter", "c": "voter"}
    me = next(s for s in view["servers"] if s["name"] == "a")
    assert me["last_seen"] == 0 and me["priority"] == 101 and me["leader"] == "c" and me["term"] == term


def test_leader_for_people_and_for_scripts(cluster):
    b = cluster.daemons["b"]
    term, _ = cluster.wait_agreed("c")
    assert json.loads(ok(b.dsctl("leader", "--json"))) == {"self": "b", "leader": "c", "term": term}
    assert ok(b.dsctl("leader")).strip() == f"c (term {term})"


def test_stats_has_the_counters_of_the_issue(cluster):
    c = cluster.daemons["c"]
    stats = json.loads(ok(c.dsctl("stats", "--json")))
    assert STATS_COUNTERS <= set(stats), stats
    assert all(isinstance(stats[key], (int, float)) for key in STATS_COUNTERS)
    assert stats["datagrams_sent"] > 0 and stats["datagrams_received"] > 0
    assert stats["elections_won"] >= 1 and stats["leader_changes"] >= 1 and stats["uptime"] > 0
    text = ok(c.dsctl("stats"))
    assert_no_reprs(text)
    # Grouped like `serf info`: a title, then `  key  value` lines, the values in one column.
    groups: dict[str, dict[str, str]] = {}
    starts = set()
    for line in text.splitlines():
        if not line.startswith("  "):
            assert line.endswith(":"), text
            group = groups.setdefault(line[:-1], {})
            continue
        key, rest = line.strip().split(None, 1)
        starts.add(line.index(rest, len(key) + 2))
        group[key] = rest
    assert list(groups) == ["cluster", "datagrams", "election", "chat"], text
    assert len(starts) == 1, f"values not aligned:\n{text}"
    shown = {f"{title}_{key}" if f"{title}_{key}" in stats else key for title, keys in groups.items()
             for key in keys}
    assert shown == set(stats), text
    assert int(groups["datagrams"]["sent"]) >= stats["datagrams_sent"]  # asked later: more since
    assert int(groups["election"]["elections_won"]) >= 1
    assert groups["datagrams"]["rejected_by_reason"].startswith("malformed 0, "), text
    assert re.fullmatch(r"\d+\.\ds|\d+m \d\ds", groups["cluster"]["uptime"]), text


def assert_no_reprs(text: str) -> None:
    """Human output: no Python dicts, lists, strings in quotes or None."""
    for token in ("{", "}", "[", "]", "'", "None", "True", "False"):
        assert token not in text, f"{token!r} in\n{text}"


def test_info_for_people_has_no_reprs(cluster):
    a = cluster.daemons["a"]
    info = json.loads(ok(a.dsctl("info", "--json")))
    assert info["tcp_endpoint"] is None
    text = ok(a.dsctl("info"))
    assert_no_reprs(text)
    assert re.search(r"^tcp_endpoint\s+-$", text, re.MULTILINE), text
    assert re.search(rf"^pid\s+{info['pid']}$", text, re.MULTILINE), text


@pytest.mark.parametrize("command", ["view", "leader", "stats", "info", "ping"])
def test_json_output_is_one_object_on_one_line(cluster, command):
    out = ok(cluster.daemons["b"].dsctl(command, "--json"))
    assert out.count("\n") == 1 and out.endswith("\n"), out
    assert isinstance(json.loads(out), dict)


def test_ping(cluster):
    assert ok(cluster.daemons["b"].dsctl("ping")).strip() == "pong"


def test_elect_on_the_leader_starts_an_election_in_a_new_term(cluster):
    term, _ = cluster.wait_agreed("c")
    said = ok(cluster.daemons["c"].dsctl("elect")).strip()
    # The term before the election, then the one the leader declared.
    assert said == f"election started (term was {term}, now {term + 1})", said
    new_term, _ = wait_until(lambda: (cluster.agreed("c") or (0, ""))[0] > term and cluster.agreed("c"), 5,
                             what="agreement on c in a newer term")
    assert new_term > term


def test_elect_on_a_follower_keeps_the_highest_leader_and_ends_the_election(cluster):
    term, _ = cluster.wait_agreed("c")
    ok(cluster.daemons["a"].dsctl("elect"))
    # The highest live node takes over, and it already leads: a must end up following it again.
    wait_until(lambda: cluster.roles() == {"a": "follower", "b": "follower", "c": "leader"}, 5,
               what="a back to follower")
    new_term, _ = cluster.wait_agreed("c")
    assert new_term >= term


def read_line(process: subprocess.Popen, deadline: float) -> str | None:
    """One line of the process's stdout, or None if none came before the deadline."""
    buffer = b""
    fd = process.stdout.fileno()
    while not buffer.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return None
        chunk = os.read(fd, 1)
        if not chunk:
            return None
        buffer += chunk
    return buffer.decode()


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_watch_streams_events_until_interrupted(cluster, as_json):
    a = cluster.daemons["a"]
    args = [sys.executable, "-m", "dsctl", "-c", str(a.config), "watch"] + (["--json"] if as_json else [])
    process = spawn(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Until watch's subscription is live, events pass it by: make events until one is printed.
        deadline = time.monotonic() + 10
        line = None
        while line is None and time.monotonic() < deadline:
            mark = cluster.mark(1)["name"]
            line = read_line(process, min(deadline, time.monotonic() + 0.3))
        assert line is not None, "watch printed nothing"
        lines = [line, read_line(process, time.monotonic() + 5)]
        assert lines[1] is not None
        if as_json:
            events = [json.loads(text) for text in lines]
            assert all(isinstance(e, dict) and e["node"] == "a" for e in events), lines
            topics = [(e["topic"], e["name"]) for e in events]
            assert ("view.leave", mark) in topics, lines
        else:
            assert any(f"a view.leave name={mark}" in text for text in lines), lines
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == EXIT_OK
        assert b"Traceback" not in process.stderr.read()
    finally:
        kill_group(process)
        process.stdout.close()
        process.stderr.close()


# ------------------------------------------------------------------ exit codes


def test_unreachable_when_no_socket_exists(tmp_path):
    endpoint = f"ipc://{tmp_path}/nothing/dsd.ctl"
    result = dsctl("-e", endpoint, "ping")
    assert result.returncode == EXIT_UNREACHABLE, result
    assert endpoint in result.stderr and result.stdout == ""


def test_unreachable_when_nobody_serves_an_existing_socket(tmp_path):
    # A socket file left behind by a crashed daemon: it exists, nobody listens on it.
    path = tmp_path / "stale.ctl"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    assert path.exists()
    endpoint = f"ipc://{path}"
    started = time.monotonic()
    result = dsctl("-e", endpoint, "--timeout", "0.1", "view", "--json")
    assert result.returncode == EXIT_UNREACHABLE, result
    assert endpoint in result.stderr and result.stdout == ""
    assert time.monotonic() - started < 10, "dsctl must give up, not hang"


def test_unreachable_endpoint_from_the_config_file(tmp_path):
    config = tmp_path / "dsd.toml"
    config.write_text(f'[node]\nruntime_dir = "{tmp_path}/run"\n')
    result = dsctl("-c", str(config), "--timeout", "0.1", "leader")
    assert result.returncode == EXIT_UNREACHABLE, result
    assert f"ipc://{tmp_path}/run/dsd.ctl" in result.stderr


@pytest.mark.parametrize("args", [
    ["frobnicate"],
    [],
    ["--timeout", "abc", "ping"],
    ["--timeout", "0", "ping"],
    ["ping", "--timeout", "-1"],
    ["view", "--no-such-option"],
], ids=["unknown-command", "no-command", "timeout-not-a-number", "timeout-zero", "timeout-negative",
        "unknown-option"])
def test_usage_errors_exit_2(tmp_path, args):
    result = dsctl("-e", f"ipc://{tmp_path}/none.ctl", *args)
    assert result.returncode == EXIT_USAGE, result
    assert result.stdout == "" and result.stderr.startswith("dsctl: "), result
    assert result.stderr.count("\n") == 1 and "--help" in result.stderr, result.stderr


@pytest.mark.parametrize("text, words", [
    ("[node]\npriority = -1\n", ["priority", "-1"]),
    ("[node]\nname = 'a'\nbogus = 1\n", ["bogus"]),
    ("[timing\n", ["TOML"]),
], ids=["bad-value", "unknown-key", "not-toml"])
def test_bad_config_file_exits_1_naming_it(tmp_path, text, words):
    config = tmp_path / "broken.toml"
    config.write_text(text)
    result = dsctl("-c", str(config), "ping")
    assert result.returncode == EXIT_FAILED, result
    assert str(config) in result.stderr and all(word in result.stderr for word in words), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_config_file_exits_1(tmp_path):
    result = dsctl("-c", str(tmp_path / "absent.toml"), "ping")
    assert result.returncode == EXIT_FAILED and "absent.toml" in result.stderr


def test_help_lists_every_command():
    out = ok(dsctl("--help"))
    listed = set(re.findall(r"^\s{4}([\w-]+)\s", out, flags=re.MULTILINE))
    assert set(OPERATOR_COMMANDS) | {"watch", "keygen"} == listed, out
    for command in OPERATOR_COMMANDS.values():
        assert command.help in " ".join(out.split()), command
    assert "Exit codes" in out


def test_server_key_of_a_daemon_without_tcp_endpoint_says_so(cluster):
    result = cluster.daemons["a"].dsctl("server-key")
    assert result.returncode == EXIT_FAILED
    assert "no TCP endpoint" in result.stderr and "(not_configured)" in result.stderr


def test_keygen_makes_a_client_keypair_and_never_overwrites_it(tmp_path):
    made = json.loads(ok(dsctl("keygen", str(tmp_path / "keys"), "alice", "--json")))
    assert made["public"] == str(tmp_path / "keys" / "alice.key")
    assert made["secret"] == str(tmp_path / "keys" / "alice.key_secret")
    assert f'public-key = "{made["public_key"]}"' in (tmp_path / "keys" / "alice.key").read_text()
    assert os.stat(made["secret"]).st_mode & 0o077 == 0
    secret = (tmp_path / "keys" / "alice.key_secret").read_text()
    again = dsctl("keygen", str(tmp_path / "keys"), "alice")
    assert again.returncode == EXIT_FAILED and "already exists" in again.stderr
    assert (tmp_path / "keys" / "alice.key_secret").read_text() == secret
    text = ok(dsctl("keygen", str(tmp_path / "keys"), "bob"))
    assert "bob.key_secret" in text and "client_keys" in text


def test_a_tcp_endpoint_without_server_key_is_refused_before_connecting():
    result = dsctl("-e", "tcp://127.0.0.1:1", "ping")
    assert result.returncode == EXIT_USAGE
    assert result.stderr.startswith("dsctl: tcp://127.0.0.1:1 is a TCP endpoint") and "--server-key" in result.stderr


def test_watch_says_when_its_daemon_stops_answering_and_when_it_is_back(make_cluster):
    cluster = make_cluster(1)
    daemon = cluster.add("solo")
    wait_until(lambda: daemon.try_request("ping"), 10, what="solo to answer")
    args = [sys.executable, "-m", "dsctl", "-c", str(daemon.config), "--timeout", "0.2", "watch"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        line = None
        while line is None and time.monotonic() < deadline:  # until watch's subscription is live
            cluster.mark(1)
            line = read_line(process, min(deadline, time.monotonic() + 0.3))
        assert line is not None, "watch printed nothing"
        daemon.kill()
        lost = read_stderr_line(process, 20)
        assert "still watching" in lost and daemon.endpoint in lost, lost
        daemon.start()
        back = read_stderr_line(process, 30)
        assert f"dsd at {daemon.endpoint} answers again" in back, back
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == EXIT_OK
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.stdout.close()
        process.stderr.close()


def read_stderr_line(process: subprocess.Popen, timeout: float) -> str:
    """The next line on the process's stderr; AssertionError if none comes in time."""
    fd = process.stderr.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    while not buffer.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        assert remaining > 0 and select.select([fd], [], [], remaining)[0], f"no line on stderr; got {buffer!r}"
        chunk = os.read(fd, 1)
        assert chunk, f"stderr closed; got {buffer!r}"
        buffer += chunk
    return buffer.decode()
