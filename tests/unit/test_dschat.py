"""dschat: the pure bookkeeping, the rendering, the arguments, and the real process
(piped, --json) against the fake daemons of tests/fake_chat_daemon.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from dschat import render
from dschat.cli import Action, main, parse_input
from dschat.session import _entries
from dschat.session import feed_address
from dschat.state import ChatState
from tests.cluster import wait_until
from tests.fake_chat_daemon import FakeChat
from tests.processes import kill_group, spawn

ROOT = Path(__file__).resolve().parents[2]
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_REFUSED = 0, 1, 2, 3, 4
FAST = ["--timeout", "0.2"]  # 3 silent tries of 0.2 s and a daemon is lost
# For the tests not about silence. A reply slower than --timeout is taken for lost and the
# request asked again, which a loaded machine can make happen even at the default 1 s; a
# chat.join asked again is logged again, and the exact streams these tests expect would differ.
PATIENT = ["--timeout", "10"]
# How long to wait for anything a dschat or the fake does. Generous: on a loaded machine a
# dschat can take more than 10 s just to start, and a passing test never waits this long.
WAIT = 60.0


def entry(seq: int, kind: str = "message", user: str = "bob", text: str = "", **extra: Any) -> dict[str, Any]:
    return {"seq": seq, "kind": kind, "user": user, "text": text or f"m{seq}", "id": f"id{seq}",
            "server": "h1", "time": 1764112345.5, **extra}


def seqs(entries: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in entries]


def without_repeated_joins(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`entries` less the joins logged twice because the reply to the first was slow.

    A reply slower than --timeout (0.2 s with FAST: a loaded machine does that) is taken
    for lost and the request asked again. `chat.send` is idempotent (its id); `chat.join`
    is not: the repeat is logged too, as "rejoined", right after the join it repeats.
    """
    kept: list[dict[str, Any]] = []
    for e in entries:
        if e["kind"] == "join" and kept and kept[-1]["kind"] == "join" and kept[-1]["user"] == e["user"]:
            continue
        kept.append(e)
    return kept


# --- ChatState: what is shown, what is owed ----------------------------------------------------

def test_history_sets_the_start_and_feed_entries_already_shown_are_dropped():
    state = ChatState("alice")
    # Subscribed first: feed entries that arrive before the history reply are held.
    assert state.receive([entry(5), entry(6)]) == []
    shown = state.start([entry(3), entry(4), entry(5)], last_seq=5)
    assert seqs(shown) == [3, 4, 5, 6]
    assert seqs(state.receive([entry(5), entry(6), entry(7)])) == [7]
    assert state.wanted() is None


def test_empty_history_starts_after_the_daemons_last_seq():
    state = ChatState("alice")
    assert state.start([], last_seq=41) == []
    assert state.receive([entry(41)]) == []
    assert seqs(state.receive([entry(42)])) == [42]


def test_a_skipped_seq_asks_for_since_and_the_fetch_fills_the_gap():
    state = ChatState("alice")
    state.start([entry(1)], last_seq=1)
    assert seqs(state.receive([entry(2)])) == [2]
    assert state.receive([entry(4), entry(5)]) == []  # 3 was lost on the feed
    assert state.wanted() == 2
    assert seqs(state.receive([entry(3), entry(4)])) == [3, 4, 5]  # since(2) overlaps the held ones
    assert state.wanted() is None and state.last_seq == 5


def test_a_trimmed_gap_is_skipped_once_and_held_entries_after_it_are_shown():
    state = ChatState("alice")
    state.start([entry(1)], last_seq=1)
    assert state.receive([entry(6)]) == []  # 2..5 missed on the feed
    assert state.skip_to(2) == 0  # nothing is missing before 2
    assert state.skip_to(5) == 3  # the daemon keeps nothing before 5
    assert state.last_seq == 4 and state.wanted() == 4
    assert seqs(state.receive([entry(5), entry(6)])) == [5, 6]
    assert state.skip_to(5) == 0 and state.wanted() is None


def test_a_heartbeat_past_the_last_seq_shown_asks_for_since():
    state = ChatState("alice")
    state.start([entry(1)], last_seq=1)
    state.note_last(1)
    assert state.wanted() is None
    state.note_last(3)  # the feed dropped the tail: no later entry would reveal the gap
    assert state.wanted() == 1
    state.receive([entry(2), entry(3)])
    assert state.wanted() is None


def test_unacknowledged_messages_are_resent_in_order_with_their_ids():
    state = ChatState("alice")
    state.start([], last_seq=0)
    first, second, third = (state.submit(text) for text in ("one", "two", "three"))
    assert len({first.id, second.id, third.id}) == 3
    assert state.next_to_send() is first
    state.acknowledge(first.id, 1)
    # Failover: "two" was sent, its reply lost; the new daemon's log shows it anyway.
    state.receive([entry(1, user="alice", text="one", id=first.id),
                   entry(2, user="alice", text="two", id=second.id)])
    assert second.seq == 2
    assert state.next_to_send() is third and third.id == state.unacknowledged()[0].id
    state.receive([entry(3, user="bob", text="three", id=third.id)])  # someone else's id: not ours
    assert state.unacknowledged() == [third]


def test_failures_name_each_line_not_delivered():
    state = ChatState("alice")
    state.submit("fine", line=1)
    big = state.submit("x" * 100, line=2)
    lost = state.submit("lost", line=4)
    state.acknowledge(state.next_to_send().id, 1)
    state.refuse(big.id, "message of 100 bytes exceeds 64 (too_large)")
    assert state.failures() == [
        f"line 2 {'x' * 39 + '…'!r}: refused: message of 100 bytes exceeds 64 (too_large)",
        f"line 4 'lost': not acknowledged (id {lost.id})",
    ]
    state.acknowledge(lost.id, 2)
    assert state.failures()[1:] == []


# --- rendering ---------------------------------------------------------------------------------

def test_entries_show_local_time_user_and_text():
    stamp = time.strftime("%H:%M:%S", time.localtime(1764112345.5))
    lines = [render.plain(render.entry_fragments(e, "alice")) for e in (
        entry(1, text="hello"),
        entry(2, "join"), entry(3, "join", text="rejoined"), entry(4, "leave"), entry(5, "timeout"),
        entry(6, "poll", text="new kind"),
    )]
    assert lines == [
        f"{stamp} <bob> hello",
        f"{stamp} --> bob joined (on h1)",
        f"{stamp} --> bob rejoined (on h1)",
        f"{stamp} <-- bob left",
        f"{stamp} <-- bob timed out",
        f"{stamp} --- bob poll new kind",
    ]
    assert ("class:me", "<alice>") in render.entry_fragments(entry(7, user="alice"), "alice")


def test_text_from_others_cannot_drive_the_terminal():
    assert render.clean("héllo wörld") == "héllo wörld"
    assert render.clean("\x1b[2Jgone\r\nx\u202eevil") == "\\x1b[2Jgone\\r\\nx\\u202eevil"
    line = render.plain(render.entry_fragments(entry(1, user="b\x1bob", text="a\x07"), "alice"))
    assert "\x1b" not in line and "\x07" not in line


def test_json_lines_have_exactly_the_entry_keys():
    frame = {**entry(9, text="hi"), "topic": "chat.message", "node": "h2"}
    assert json.loads(render.entry_json(frame)) == entry(9, text="hi")
    assert list(json.loads(render.entry_json(frame))) == list(render.JSON_KEYS)


def test_who_and_status():
    users = [{"user": "bob", "server": "h2", "since": 1764112345.0},
             {"user": "alice", "server": "h1", "since": 1764112345.0}]
    who = render.render_who(users, "alice").splitlines()
    assert who[0].split() == ["USER", "SERVER", "SINCE"]
    assert who[1].split()[:3] == ["alice", "(you)", "h1"] and who[2].split()[:2] == ["bob", "h2"]
    assert render.render_who([], "alice") == "nobody is here"
    view = {"self": "h1", "leader": "h2", "term": 4, "servers": [
        {"name": "h2", "state": "alive", "role": "leader", "leader": "h2", "term": 4},
        {"name": "h1", "state": "alive", "role": "follower", "leader": "h2", "term": 4}]}
    status = render.render_status(view, {"uptime": 5, "chat_messages": 12}, users, "alice", "h1",
                                  "ipc:///run/dsd/dsd.ctl", 12, 3, 1).splitlines()
    assert status[0].split() == ["SERVER", "STATE", "ROLE", "LEADER", "TERM"]
    assert status[1].split() == ["*", "h2", "alive", "leader", "h2", "4"]
    assert status[2].split() == ["h1", "alive", "follower", "h2", "4"]
    assert status[4:] == [
        "leader: h2  term: 4",
        "users: 2 (alice, bob)",
        "you: alice on h1 via ipc:///run/dsd/dsd.ctl",
        "messages: last seq 12, you sent 3 (1 not yet acknowledged)",
        "daemon: chat_messages 12",
    ]


def test_status_wraps_to_the_terminal_and_shows_no_reprs():
    view = {"self": "h1", "leader": "h1", "term": 2, "servers": [
        {"name": "h1", "state": "alive", "role": "leader", "leader": "h1", "term": 2}]}
    stats = {"chat_role": "leader", "chat_last_seq": 40, "link_messages_sent": 7, "chat_quorum": 0,
             "link_messages_by_peer": {"h2": 3, "h3": 4}, "chat_leader": None}
    users = [{"user": f"user{i}", "server": "h1"} for i in range(12)]
    lines = render.render_status(view, stats, users, "user0", "h1", "ipc:///run/dsd/dsd.ctl",
                                 40, 1, 0, width=40).splitlines()
    prose = lines[3:]
    assert all(len(line) <= 40 for line in prose), lines
    assert prose[0] == "leader: h1  term: 2" and prose[1].startswith("users: 12 (user0, ")
    continued = [line for line in prose if line.startswith("  ")]
    assert len(continued) >= 3, prose  # the users and the counters went on over several lines
    text = " ".join(line.strip() for line in prose)
    assert "link_messages_by_peer h2 3, h3 4" in text and "chat_leader -" in text, text
    assert "{" not in text and "None" not in text


def test_typed_lines():
    assert parse_input("hello\n") == Action("send", "hello")
    assert parse_input("   ") == Action("nothing")
    assert parse_input("//who") == Action("send", "/who")
    for name in ("who", "status", "help", "quit"):
        assert parse_input(f"/{name}") == Action(name)
    assert parse_input("/history") == Action("history", count=20)
    assert parse_input("/history 5") == Action("history", count=5)
    for bad in ("/history 0", "/history 1001", "/history x", "/who me", "/nick bob"):
        assert parse_input(bad).kind == "invalid", bad
    assert "unknown command /nick" in parse_input("/nick bob").text


def test_a_feed_bound_on_all_interfaces_is_reached_on_the_control_host():
    assert feed_address("tcp://h2.lan:5555", "tcp://*:5556") == "tcp://h2.lan:5556"
    assert feed_address("tcp://10.0.0.2:5555", "tcp://0.0.0.0:5556") == "tcp://10.0.0.2:5556"
    assert feed_address("ipc:///run/dsd/dsd.ctl", "ipc:///run/dsd/dsd.feed") == "ipc:///run/dsd/dsd.feed"


# --- arguments ----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    [], ["bad name"], ["-bob"], ["a" * 33], ["--history", "-1", "alice"], ["--history", "1001", "alice"],
    ["--history", "x", "alice"], ["--timeout", "0", "alice"], ["--failover", "-1", "alice"],
    ["alice", "bob"],
])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("dschat: ") and err.count("\n") == 1 and "dschat --help" in err, err


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    for code in ("0  ok", "1  failed", "2  usage", "3  daemon unreachable", "4  name refused"):
        assert code in out


def test_a_bad_configuration_is_one_line_and_exit_1(tmp_path, capsys):
    config = tmp_path / "dsd.toml"
    config.write_text("[control]\nendpoint = 'nope'\n")
    assert main(["-c", str(config), "alice"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith(f"dschat: {config}: [control] endpoint") and err.count("\n") == 1


@pytest.mark.parametrize("argv, words", [
    (["-e", "tcp://h2.lan:5009", "alice"], ["tcp://h2.lan:5009 is a TCP endpoint", "--server-key KEY"]),
    (["--discover", "alice"], ["--discover finds TCP endpoints", "--server-key KEY"]),
    (["-e", "tcp://h2.lan:5009", "--server-key", "not-a-key", "alice"], ["--server-key not-a-key: neither"]),
    (["-e", "ipc:///x", "--key", "/k.key_secret", "alice"], ["--key goes with --server-key"]),
], ids=["tcp-without-server-key", "discover-without-server-key", "bad-server-key", "key-alone"])
def test_curve_option_errors_are_one_line_before_connecting(argv, words, capsys, monkeypatch):
    monkeypatch.setattr("dschat.cli.discover", lambda cluster: pytest.fail("probed"))
    monkeypatch.setattr("dschat.cli._run", lambda *a: pytest.fail("connected"))
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("dschat: ") and err.count("\n") == 1 and all(word in err for word in words), err


def test_discover_without_multicast_says_to_name_a_daemon_with_e(tmp_path, capsys, monkeypatch):
    public = tmp_path / "cluster.key"
    public.write_text('metadata\ncurve\n    public-key = "' + "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7" + '"\n')
    config = tmp_path / "dsd.toml"
    config.write_text('[cluster]\nmulticast = false\npeers = ["10.0.1.5"]\n')
    monkeypatch.setattr("dschat.cli.discover", lambda cluster: pytest.fail("probed"))
    monkeypatch.setattr("dschat.cli._run", lambda *a: pytest.fail("connected"))
    assert main(["-c", str(config), "--discover", "--server-key", str(public), "alice"]) == 1
    err = capsys.readouterr().err
    assert "[cluster] multicast = false" in err and "dschat -e tcp://HOST:PORT" in err and err.count("\n") == 1, err


# --- the real process against fake daemons -------------------------------------------------------

class Dschat:
    """A dschat process: stdin written by the test, stdout and stderr collected as they arrive."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DSD_CONFIG"}
        self.process = spawn(
            [sys.executable, "-m", "dschat", *args], cwd=ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def write(self, *lines: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("".join(line + "\n" for line in lines))
        self.process.stdin.flush()

    def finish(self, timeout: float = WAIT) -> int:
        """Close stdin (end of input) and wait for the exit status."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.wait(timeout)

    def wait(self, timeout: float = WAIT) -> int:
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out]

    def shown(self, text: str) -> bool:
        return any(e["kind"] == "message" and e["text"] == text for e in self.entries())

    def kill(self) -> None:
        kill_group(self.process)
        self.wait()


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[FakeChat]:
    fake = FakeChat(tmp_path, ("h1", "h2"))
    yield fake
    fake.close()


@pytest.fixture
def clients() -> Iterator[list[Dschat]]:
    started: list[Dschat] = []
    yield started
    for client in started:
        client.kill()


@pytest.fixture
def dschat(clients: list[Dschat]):
    def start(*args: str) -> Dschat:
        client = Dschat(*args)
        clients.append(client)
        return client
    return start


def ep(chat: FakeChat, *names: str) -> list[str]:
    return [arg for name in names for arg in ("-e", chat.daemons[name].endpoint)]


def assert_one_stream(client: Dschat, chat: FakeChat) -> list[dict[str, Any]]:
    """stdout is the log from the first entry shown on: each seq once, in order, as logged."""
    entries = client.entries()
    log = chat.entries()
    first = entries[0]["seq"]
    assert entries == log[first - 1:first - 1 + len(entries)], (entries, log)
    return entries


def test_piped_json_sends_every_line_and_prints_what_is_delivered(chat, dschat):
    chat.post("bob", "before")
    client = dschat(*ep(chat, "h1"), *PATIENT, "--json", "alice")
    client.write("hello", "", "world")  # the empty line is skipped, not sent
    wait_until(lambda: client.shown("world"), WAIT, what="alice's lines on her stdout")
    chat.post("bob", "hi alice")
    wait_until(lambda: client.shown("hi alice"), WAIT, what="bob's line on alice's stdout")
    assert client.finish() == EXIT_OK, client.err
    entries = assert_one_stream(client, chat)
    assert all(list(e) == list(render.JSON_KEYS) for e in entries)
    # Piped, the history before the join is not shown (README: that is for the terminal).
    assert [(e["kind"], e["user"], e["text"]) for e in entries] == [
        ("join", "alice", ""), ("message", "alice", "hello"),
        ("message", "alice", "world"), ("message", "bob", "hi alice"), ("leave", "alice", ""),
    ]
    assert entries[-1] == chat.entries()[-1]  # left cleanly, and shown to the end
    assert client.err == []


def test_history_shows_the_last_n_entries_then_the_feed(chat, dschat):
    for n in range(5):
        chat.post("bob", f"old {n}")
    client = dschat(*ep(chat, "h1"), *PATIENT, "--json", "--history", "2", "alice")
    client.write("new")
    wait_until(lambda: client.shown("new"), WAIT, what="alice's line")
    assert client.finish() == EXIT_OK, client.err
    # The last 2 at the time of the history request: the join is already one of them.
    assert [(e["kind"], e["text"]) for e in assert_one_stream(client, chat)] == [
        ("message", "old 4"), ("join", ""), ("message", "new"), ("leave", "")]

    quiet = dschat(*ep(chat, "h1"), *PATIENT, "--json", "--history", "0", "carol")
    assert quiet.finish() == EXIT_OK, quiet.err
    # Nothing from before its own join, which is where a run without history starts.
    assert [(e["kind"], e["user"]) for e in quiet.entries()] == [("join", "carol"), ("leave", "carol")]


def test_text_output_for_people(chat, dschat):
    client = dschat(*ep(chat, "h1"), *PATIENT, "alice")
    client.write("hello")
    assert client.finish() == EXIT_OK, client.err
    stamp = r"\d\d:\d\d:\d\d"
    assert len(client.out) == 3, client.out
    assert re.fullmatch(rf"{stamp} --> alice joined \(on h1\)", client.out[0])
    assert re.fullmatch(rf"{stamp} <alice> hello", client.out[1])
    assert re.fullmatch(rf"{stamp} <-- alice left", client.out[2])


def test_an_entry_the_feed_skips_is_fetched_with_since(chat, dschat):
    client = dschat(*ep(chat, "h1"), *PATIENT, "--json", "alice")
    client.write("first")
    wait_until(lambda: client.shown("first"), WAIT, what="alice's first line")
    chat.post("bob", "lost on the feed", unpublished_by=("h1",))
    chat.post("bob", "published")
    wait_until(lambda: client.shown("published"), WAIT, what="bob's second line")
    assert client.finish() == EXIT_OK, client.err
    assert [e["text"] for e in assert_one_stream(client, chat)][-4:-1] == ["first", "lost on the feed", "published"]
    assert chat.requests("h1", "chat.since")


def test_entries_trimmed_before_a_since_fetch_are_skipped_with_a_notice(chat, dschat):
    client = dschat(*ep(chat, "h1"), *PATIENT, "--json", "alice")
    client.write("first")
    wait_until(lambda: client.shown("first"), WAIT, what="alice's first line")
    gone = [chat.post("bob", f"trimmed {n}", unpublished_by=("h1",)) for n in range(3)]
    chat.trim(gone[-1] + 1)
    chat.post("bob", "kept")
    wait_until(lambda: client.shown("kept"), WAIT, what="the entry after the trimmed ones")
    assert client.finish() == EXIT_OK, client.err
    texts = [e["text"] for e in client.entries()]
    assert "kept" in texts and not any(text.startswith("trimmed") for text in texts)
    assert any(f"3 entries before seq {gone[-1] + 1} are no longer kept" in line for line in client.err), client.err


def test_a_name_in_use_is_refused_with_exit_4(chat, dschat):
    alice = dschat(*ep(chat, "h1"), *PATIENT, "--json", "alice")
    alice.write("here")
    wait_until(lambda: alice.shown("here"), WAIT, what="the first alice")
    second = dschat(*ep(chat, "h2"), *PATIENT, "--json", "alice")
    assert second.finish() == EXIT_REFUSED
    assert second.out == []
    assert "taken" in "\n".join(second.err)
    assert alice.finish() == EXIT_OK, alice.err


def test_no_daemon_is_exit_3_naming_the_endpoints(tmp_path, dschat):
    chat = FakeChat(tmp_path, ("gone",))
    stale = chat.daemons["gone"].endpoint  # a socket file nobody serves any more
    chat.close()
    client = dschat("-e", f"ipc://{tmp_path}/none.ctl", "-e", stale, *FAST, "alice")
    assert client.finish() == EXIT_UNREACHABLE
    err = "\n".join(client.err)
    assert f"no daemon at ipc://{tmp_path}/none.ctl" in err
    assert f"no answer from {stale} after 3 tries of 0.2s" in err


def test_the_hint_about_tcp_keys_is_given_once(dschat, tmp_path):
    from dsd.curve import keygen

    key = keygen(str(tmp_path), "server")[2]
    client = dschat("-e", "tcp://127.0.0.1:9", "-e", "tcp://127.0.0.1:10", "--server-key", key, *FAST, "alice")
    assert client.finish() == EXIT_UNREACHABLE
    err = "\n".join(client.err)
    assert "no answer from tcp://127.0.0.1:9" in err and "no answer from tcp://127.0.0.1:10" in err, err
    assert err.count("wrong --server-key") == 1, err


def test_the_configuration_names_the_daemon(chat, dschat, tmp_path):
    config = tmp_path / "dsd.toml"
    config.write_text(f"[control]\nendpoint = '{chat.daemons['h2'].endpoint}'\n"
                      f"feed = 'ipc://{tmp_path}/unused.feed'\n")
    client = dschat("-c", str(config), *PATIENT, "--json", "alice")
    client.write("via the config")
    assert client.finish() == EXIT_OK, client.err
    assert client.entries()[-1]["server"] == "h2"


def test_a_refused_line_is_named_in_the_exit_status(chat, dschat):
    client = dschat(*ep(chat, "h1"), *PATIENT, "--json", "alice")
    client.write("ok", "x" * 65, "also ok")
    assert client.finish() == EXIT_FAILED
    assert chat.messages() == ["ok", "also ok"]
    err = "\n".join(client.err)
    assert "1 of 3 lines not delivered" in err
    assert "line 2 'xxx" in err and "too_large" in err


def test_rate_limited_is_retried_after_a_backoff(chat, dschat):
    chat.call(lambda: chat.daemons["h1"].faults.update({"chat.send": ["rate_limited"] * 4}))
    client = dschat(*ep(chat, "h1"), *PATIENT, "--json", "alice")
    client.write("one", "two")
    assert client.finish() == EXIT_OK, client.err
    assert chat.messages() == ["one", "two"]
    assert sum("rate_limited" in line for line in client.err) == 1, client.err  # once, not per retry


def test_a_lost_reply_is_retried_with_the_same_id_and_recorded_once(chat, dschat):
    chat.call(lambda: chat.daemons["h1"].faults.update({"chat.send": ["lose_reply"]}))
    client = dschat(*ep(chat, "h1"), *FAST, "--json", "alice")
    client.write("once")
    assert client.finish() == EXIT_OK, client.err
    sends = chat.requests("h1", "chat.send")  # twice, or more if a reply was slower than 0.2 s
    assert len(sends) >= 2 and len({args["id"] for args in sends}) == 1
    assert chat.messages() == ["once"]


def test_a_full_daemon_is_passed_over_for_the_next_endpoint(chat, dschat):
    chat.call(lambda: chat.daemons["h1"].always.update({"chat.join": "too_many_clients"}))
    client = dschat(*ep(chat, "h1", "h2"), *PATIENT, "--json", "alice")
    client.write("on h2")
    assert client.finish() == EXIT_OK, client.err
    assert chat.messages() == ["on h2"] and chat.requests("h2", "chat.join")


def test_lines_never_acknowledged_are_named_after_the_wait(chat, dschat):
    chat.call(lambda: chat.daemons["h1"].always.update({"chat.send": "unavailable"}))
    client = dschat(*ep(chat, "h1"), *PATIENT, "--json", "--wait", "1", "alice")
    client.write("stuck")
    assert client.finish() == EXIT_FAILED
    assert any("line 1 'stuck': not acknowledged" in line for line in client.err), client.err
    assert chat.messages() == []
    assert chat.entries()[-1]["kind"] == "leave"  # it still left cleanly


def test_a_silent_daemon_is_given_up_after_the_failover_time(chat, dschat):
    client = dschat(*ep(chat, "h1"), *FAST, "--failover", "1", "--json", "alice")
    wait_until(lambda: client.entries(), WAIT, what="the join")
    chat.call(lambda: setattr(chat.daemons["h1"], "frozen", True))
    client.write("into the void")
    assert client.finish() == EXIT_UNREACHABLE
    err = "\n".join(client.err)
    assert "no daemon answered for 1s" in err
    assert "line 1 'into the void': not acknowledged" in err


def test_one_endpoint_is_retried_until_it_answers_again(chat, dschat):
    client = dschat(*ep(chat, "h1"), *FAST, "--json", "alice")
    wait_until(lambda: client.entries(), WAIT, what="the join")
    h1 = chat.daemons["h1"]

    def freeze() -> tuple[int, int]:
        # Counted as it freezes: the start alone may have asked for info (or joined) twice,
        # when a reply was slower than the 0.2 s timeout.
        h1.frozen = True
        return len(h1.sent("info")), len(h1.sent("chat.join"))
    infos, joins = chat.call(freeze)
    client.write("patience")
    # Lost (3 silent tries of the send), then it asks the same daemon for info again: it
    # is unfrozen only once it has asked in vain, so it must have retried to get through.
    wait_until(lambda: any(f"lost {h1.endpoint}" in line for line in client.err), WAIT, what="the daemon lost")
    lost = next(line for line in client.err if f"lost {h1.endpoint}" in line)
    assert "reconnecting for up to" in lost and "failing over" not in lost, lost  # nowhere else to go
    wait_until(lambda: len(chat.requests("h1", "info")) > infos, WAIT, what="a reconnection attempt")
    chat.call(lambda: setattr(h1, "frozen", False))
    wait_until(lambda: client.shown("patience"), WAIT, what="the line, once the daemon answers")
    assert client.finish() == EXIT_OK, client.err
    assert chat.messages() == ["patience"]
    assert any(f"connected to h1 at {h1.endpoint}" in line for line in client.err), client.err
    assert len(chat.requests("h1", "chat.join")) > joins  # joined again after the freeze...
    texts = [e["text"] for e in assert_one_stream(client, chat) if e["kind"] == "join"]
    assert texts[0] == "" and texts[1:] and set(texts[1:]) == {"rejoined"}, texts  # ...with the same session


@pytest.mark.parametrize("crash", ["crash_before", "crash_after"])
def test_failover_to_the_next_daemon_resumes_without_gap_or_duplicate(chat, dschat, crash):
    """h1 dies while handling line 3: before recording it, or after (its reply never comes)."""
    client = dschat(*ep(chat, "h1", "h2"), *FAST, "--json", "alice")
    client.write("one", "two")
    wait_until(lambda: client.shown("two"), WAIT, what="the first lines")
    # For "three" only: "two" may yet be sent again if its reply was slow.
    chat.call(lambda: chat.daemons["h1"].faults.update({"chat.send three": [crash]}))
    client.write("three")
    wait_until(lambda: chat.call(lambda: chat.daemons["h1"].closed), WAIT, what="h1 to crash")
    chat.post("bob", "while alice was away")  # published by h2 only: alice must fetch it
    client.write("four", "five")
    wait_until(lambda: client.shown("five"), WAIT, what="the lines after the failover")
    assert client.finish() == EXIT_OK, client.err

    # Recorded before the crash, or re-sent after bob's line went in.
    middle = ["three", "while alice was away"] if crash == "crash_after" else ["while alice was away", "three"]
    assert chat.messages() == ["one", "two", *middle, "four", "five"]
    entries = assert_one_stream(client, chat)
    assert [(e["kind"], e["text"], e["server"]) for e in without_repeated_joins(entries) if e["kind"] == "join"] == [
        ("join", "", "h1"), ("join", "rejoined", "h2")]
    sessions = {args["session"] for name in ("h1", "h2") for args in chat.requests(name, "chat.join")}
    assert len(sessions) == 1  # the same session on both daemons
    three = [args["id"] for name in ("h1", "h2") for args in chat.requests(name, "chat.send")
             if args["text"] == "three"]
    if crash == "crash_before":  # re-sent to h2 with its original id
        assert any(args["text"] == "three" for args in chat.requests("h2", "chat.send"))
    assert len(set(three)) == 1
    assert any("lost " + chat.daemons["h1"].endpoint in line for line in client.err), client.err


def test_heartbeats_reveal_a_lost_tail_and_a_dead_daemon_while_idle(chat, dschat):
    client = dschat(*ep(chat, "h1", "h2"), *FAST, "--heartbeat", "0.2", "--json", "alice")
    wait_until(lambda: client.entries(), WAIT, what="the join")
    chat.post("bob", "the last word", unpublished_by=("h1",))  # nothing after it reveals the gap
    wait_until(lambda: client.shown("the last word"), WAIT, what="the heartbeat's last_seq to fetch it")
    chat.call(chat.daemons["h1"].close)
    wait_until(lambda: any("connected to h2" in line for line in client.err), WAIT, what="an idle failover")
    client.write("still here")
    assert client.finish() == EXIT_OK, client.err
    assert [e["text"] for e in without_repeated_joins(assert_one_stream(client, chat))] == [
        "", "the last word", "rejoined", "still here", ""]


def test_timed_out_by_the_daemon_it_joins_again(chat, dschat):
    client = dschat(*ep(chat, "h1"), "--heartbeat", "0.2", *PATIENT, "--json", "alice")
    wait_until(lambda: client.entries(), WAIT, what="the join")

    def time_out() -> None:
        del chat.present["alice"]
        chat._append("timeout", "alice", "", "h1", "t1")
    chat.call(time_out)
    wait_until(lambda: [e["text"] for e in client.entries() if e["kind"] == "join"] == ["", "rejoined"], WAIT,
               what="a join after the heartbeat's not_joined")
    client.write("back")
    assert client.finish() == EXIT_OK, client.err
    assert [e["kind"] for e in assert_one_stream(client, chat)] == ["join", "timeout", "join", "message", "leave"]


def test_interactive_in_a_terminal(chat):
    """On a pty: lines are sent, /commands answered, others' lines printed above the prompt."""
    pty = pytest.importorskip("pty")
    chat.post("bob", "earlier")
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
    process = spawn([sys.executable, "-m", "dschat", *ep(chat, "h1"), *PATIENT, "alice"], cwd=ROOT, env=env,
                    stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    screen = bytearray()

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the pty
                return
            if not data:
                return
            screen.extend(data)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def seen(text: str) -> bool:
        return text in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))
    try:
        wait_until(lambda: seen("/help lists the commands"), WAIT, what="the welcome line")
        assert seen("<bob> earlier")
        os.write(master, b"hello\r")
        wait_until(lambda: seen("<alice> hello"), WAIT, what="alice's message")
        os.write(master, b"/nope\r")
        wait_until(lambda: seen("unknown command /nope"), WAIT, what="the unknown command refused")
        os.write(master, b"/who\r")
        wait_until(lambda: seen("alice (you)"), WAIT, what="/who")
        os.write(master, b"half")
        chat.post("bob", "while alice types")
        wait_until(lambda: seen("<bob> while alice types"), WAIT, what="bob's line above the prompt")
        os.write(master, b"\x15\x04")  # Ctrl-U clears the line, Ctrl-D quits
        assert process.wait(WAIT) == EXIT_OK
    finally:
        kill_group(process)
        reader.join(WAIT)
        os.close(master)
    assert chat.messages() == ["earlier", "hello", "while alice types"]
    assert chat.entries()[-1]["kind"] == "leave"


def test_a_feed_message_of_several_entries_gives_each_and_skips_the_malformed() -> None:
    good = [json.dumps(entry(seq)).encode() for seq in (7, 8)]
    assert _entries([b"chat.message", good[0], b"{not json", b'{"seq": "9"}', b"[]", good[1]]) == [entry(7), entry(8)]
    assert _entries([b"chat.message"]) == []
