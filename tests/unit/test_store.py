"""Tests for dsd.store: both stores behave the same; SqliteStore also persists and guards its file."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dsd.store import (
    CHECKPOINT_EVERY,
    DEDUPE_SECONDS,
    FIELDS,
    Base,
    ChatState,
    FILENAME,
    SCHEMA_VERSION,
    Entry,
    MemoryStore,
    SqliteStore,
    Store,
    StoreError,
    open_store,
    retention_slack,
)
from tests.cluster import wait_until

Make = Callable[..., Store]
BIG = 10**6
T0 = 1764112345.123
T = 1764112345.0  # whole seconds: T + DEDUPE_SECONDS - DEDUPE_SECONDS == T exactly


def entry(
    seq: int,
    kind: str = "message",
    user: str = "alice",
    id: str | None = None,
    text: str | None = None,
    term: int = 3,
    time: float | None = None,
) -> Entry:
    return {
        "seq": seq,
        "term": term,
        "kind": kind,
        "user": user,
        "text": f"m{seq}" if text is None else text,
        "id": f"id{seq}" if id is None else id,
        "server": "h1",
        "session": "S" * 22,
        "time": T0 + seq if time is None else time,
    }


def config(seq: int, voters: str = "h1 h2 h3", term: int = 3) -> Entry:
    """A config entry: no user, no session, the voters in its (to the store opaque) JSON text."""
    text = json.dumps({"voters": voters.split()})
    return {**entry(seq, kind="config", user="", id=f"cfg{seq}", text=text, term=term), "session": ""}


def messages(first: int, last: int, term: int = 3) -> list[Entry]:
    return [entry(seq, term=term) for seq in range(first, last + 1)]


def seqs(entries: list[Entry]) -> list[int]:
    return [e["seq"] for e in entries]


def retained(store: Store) -> list[int]:
    return seqs(store.read(0, BIG))


def append_committed(store: Store, entries: list[Entry]) -> None:
    store.append(entries, commit=entries[-1]["seq"])


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """make(retention) -> a new, empty store of the parametrized kind."""
    opened: list[Store] = []

    def make(retention: int = 1000) -> Store:
        if request.param == "memory":
            store: Store = MemoryStore(retention)
        else:
            store = SqliteStore(str(tmp_path / f"state{len(opened)}" / FILENAME), retention)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "state" / FILENAME)


def everything(store: Store) -> tuple[object, ...]:
    """All a store shows, but the chat state."""
    return (
        store.read(0, BIG), store.latest(BIG), store.first_seq(), store.last_seq(), store.last_term(),
        store.committed(), store.users(), store.base(), store.last_config(),
    )


# ------------------------------------------------------------ append and read


def test_empty_store(make: Make) -> None:
    store = make()
    assert (store.last_seq(), store.last_term(), store.committed(), store.first_seq()) == (0, 0, 0, 1)
    assert store.read(0, 10) == []
    assert store.latest(10) == []
    assert store.find("alice", "id1") is None
    assert store.users() == {}
    assert store.base() == Base(0, 0, {}, None)
    assert store.last_config() is None
    assert store.state() == ChatState("", 0, "")
    assert (store.term_at(0), store.term_at(1), store.term_at(-1)) == (0, None, None)


def test_append_then_read_and_latest(make: Make) -> None:
    store = make()
    append_committed(store, messages(1, 5))
    append_committed(store, messages(6, 7))
    assert store.read(0, 100) == messages(1, 7)
    assert store.last_seq() == store.committed() == 7
    assert store.first_seq() == 1
    assert seqs(store.read(2, 3)) == [3, 4, 5]
    assert seqs(store.read(5, 100)) == [6, 7]
    assert seqs(store.read(-10, 2)) == [1, 2]
    assert store.read(7, 10) == []
    assert store.read(100, 10) == []
    assert store.read(0, 0) == []
    assert store.read(0, -1) == []
    assert store.latest(3) == messages(5, 7)
    assert store.latest(100) == messages(1, 7)
    assert store.latest(0) == []
    assert store.latest(-1) == []


def test_append_stores_entries_uncommitted(make: Make) -> None:
    store = make()
    store.append([entry(1, kind="join"), entry(2, id="x")] + messages(3, 5))
    assert (store.last_seq(), store.committed()) == (5, 0)
    assert seqs(store.read(0, BIG)) == [1, 2, 3, 4, 5]  # read gives uncommitted entries too
    assert store.latest(BIG) == []
    assert store.users() == {}
    assert store.find("alice", "x") is None


def test_read_up_to(make: Make) -> None:
    store = make()
    store.append(messages(1, 10), commit=4)
    assert seqs(store.read(0, BIG, upto=4)) == [1, 2, 3, 4]
    assert seqs(store.read(2, 1, upto=4)) == [3]
    assert seqs(store.read(2, BIG, upto=7)) == [3, 4, 5, 6, 7]
    assert seqs(store.read(0, BIG, upto=100)) == list(range(1, 11))
    assert store.read(4, BIG, upto=4) == []
    assert store.read(5, BIG, upto=2) == []
    assert store.read(0, BIG, upto=0) == []
    assert store.read(0, BIG, upto=-3) == []


def test_entries_come_back_as_plain_dicts_with_exactly_the_entry_keys(make: Make) -> None:
    store = make()
    batch = [entry(1, text="", id="k3J9_-"), entry(2, text="h\u00e9llo \u2603 \U0001f600\n"), config(3)]
    append_committed(store, batch)
    for got in store.read(0, 10) + store.latest(10) + [store.last_config()]:
        assert type(got) is dict
        assert tuple(got) == FIELDS
        assert [type(got[key]) for key in FIELDS] == [int, int, str, str, str, str, str, str, float]
    assert store.read(0, 10) == batch


def test_returned_and_appended_entries_are_copies(make: Make) -> None:
    store = make(1)
    batch = [entry(1, kind="join"), entry(2), config(3)]
    append_committed(store, batch)
    batch[1]["text"] = batch[2]["text"] = "changed by the caller"
    store.read(0, 10)[0]["text"] = "changed"
    store.latest(10)[0]["text"] = "changed"
    store.users()["alice"]["text"] = "changed"
    store.last_config()["text"] = "changed"  # type: ignore[index]
    assert store.read(0, 10) == [config(3)]
    assert store.users() == {"alice": entry(1, kind="join")}
    assert store.last_config() == config(3)
    base = store.base()
    assert base is not None and base.config is None
    append_committed(store, messages(4, 5))  # config(3) moves into the base
    store.base().config["text"] = "changed"  # type: ignore[union-attr,index]
    store.base().users["alice"]["text"] = "changed"  # type: ignore[union-attr]
    assert store.base() == Base(4, 3, {"alice": entry(1, kind="join")}, config(3))
    snapshot = Base(10, 3, {"alice": entry(1, kind="join")}, config(3))
    store.install(snapshot)
    snapshot.config["text"] = snapshot.users["alice"]["text"] = "changed"  # type: ignore[index]
    assert store.base() == Base(10, 3, {"alice": entry(1, kind="join")}, config(3))
    assert store.users() == {"alice": entry(1, kind="join")}
    assert store.last_config() == config(3)


def test_empty_append_changes_nothing_unless_it_commits(make: Make) -> None:
    store = make()
    store.append([])
    store.append(messages(1, 2))
    store.append([])
    assert (store.last_seq(), store.committed()) == (2, 0)
    assert retained(store) == [1, 2]
    store.append([], commit=1)
    assert (store.last_seq(), store.committed()) == (2, 1)
    store.append([], commit=1)
    assert store.committed() == 1


def test_append_can_commit_entries_held_before_and_in_its_batch(make: Make) -> None:
    store = make()
    store.append([entry(1, kind="join")])
    store.append([entry(2, kind="join", user="bob"), entry(3)], commit=2)
    assert (store.last_seq(), store.committed()) == (3, 2)
    assert store.users() == {"alice": entry(1, kind="join"), "bob": entry(2, kind="join", user="bob")}
    assert seqs(store.latest(BIG)) == [1, 2]
    assert store.find("alice", "id3") is None
    store.append([entry(4)], commit=4)
    assert store.find("alice", "id3") == 3


# ------------------------------------------------------- gaps and repeats


BAD_BATCHES = {
    "gap": [entry(5, kind="join", user="bob")],
    "repeat": [entry(3, kind="join", user="bob")],
    "repeat_of_the_first": [entry(1)],
    "gap_inside": [entry(4, kind="join", user="bob"), entry(6)],
    "repeat_inside": [entry(4, kind="join", user="bob"), entry(4)],
    "gap_at_the_end": [entry(4), entry(5), entry(7, kind="join", user="bob")],
    "missing_key": [entry(4, kind="join", user="bob"), {k: v for k, v in entry(5).items() if k != "time"}],
    "extra_key": [entry(4, kind="join", user="bob"), {**entry(5), "topic": "chat.message"}],
    "unknown_kind": [entry(4, kind="join", user="bob"), entry(5, kind="kick")],
    "seq_not_an_int": [entry(4, kind="join", user="bob"), {**entry(5), "seq": 5.0}],
    "seq_a_bool": [{**entry(4, kind="join", user="bob"), "seq": True}],
    "term_not_an_int": [entry(4, kind="join", user="bob"), {**entry(5), "term": "3"}],
    "negative_term": [entry(4, kind="join", user="bob"), entry(5, term=-1)],
    "time_not_a_number": [entry(4, kind="join", user="bob"), {**entry(5), "time": "now"}],
}


@pytest.mark.parametrize("commit", [None, 3, 4], ids=["uncommitted", "commit=3", "commit=4"])
@pytest.mark.parametrize("bad", BAD_BATCHES.values(), ids=BAD_BATCHES.keys())
def test_append_refuses_a_bad_batch_and_stores_none_of_it(
    make: Make, bad: list[Entry], commit: int | None
) -> None:
    store = make()
    store.append([entry(1, kind="join"), entry(2), entry(3)], commit=2)
    before = everything(store)
    with pytest.raises(ValueError):
        store.append(bad, commit=commit)
    assert everything(store) == before
    assert all(store.find(user, f"id{seq}") is None for user in ("alice", "bob") for seq in range(3, 8))
    store.append(messages(4, 5))  # the store is still usable, and the next seq is still 4
    assert retained(store) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("commit", [1, 6, -1, 3.0, True, "4"])
def test_append_refuses_a_bad_commit_and_stores_none_of_its_batch(make: Make, commit: object) -> None:
    store = make()
    store.append(messages(1, 3), commit=2)
    before = everything(store)
    with pytest.raises(ValueError, match="commit"):
        store.append(messages(4, 5), commit=commit)  # type: ignore[arg-type]
    assert everything(store) == before


def test_first_append_must_start_at_one(make: Make) -> None:
    store = make()
    with pytest.raises(ValueError, match="gap or a repeat"):
        store.append(messages(2, 3))
    with pytest.raises(ValueError):
        store.append(messages(0, 1))
    assert store.last_seq() == 0
    assert store.read(0, 10) == []


# --------------------------------------------------------------------- commit


def test_commit_moves_the_commit_point_and_updates_presence_latest_and_find(make: Make) -> None:
    store = make()
    alice, bob = entry(1, kind="join"), entry(2, kind="join", user="bob")
    store.append([alice, bob, entry(3, id="x"), entry(4, kind="leave")])
    store.commit(2)
    assert store.committed() == 2
    assert store.users() == {"alice": alice, "bob": bob}
    assert store.latest(BIG) == [alice, bob]
    assert store.find("alice", "x") is None
    store.commit(2)  # nothing to do
    assert store.committed() == 2
    store.commit(4)
    assert store.users() == {"bob": bob}
    assert seqs(store.latest(BIG)) == [1, 2, 3, 4]
    assert store.find("alice", "x") == 3


@pytest.mark.parametrize("seq", [1, 5, -1, 3.0, True, None])
def test_commit_refuses_a_seq_behind_the_commit_point_or_beyond_the_log(make: Make, seq: object) -> None:
    store = make()
    store.append(messages(1, 4), commit=2)
    before = everything(store)
    with pytest.raises(ValueError, match="commit"):
        store.commit(seq)  # type: ignore[arg-type]
    assert everything(store) == before


def test_message_and_config_entries_do_not_touch_presence(make: Make) -> None:
    store = make()
    alice = entry(1, kind="join")
    # A config entry names no user; this one names alice, to show that it still does not count as her leave.
    append_committed(store, [alice, entry(2), {**config(3), "user": "alice"}, config(4)])
    assert store.users() == {"alice": alice}


# ------------------------------------------------------------------- truncate


def test_truncate_drops_the_uncommitted_suffix_and_the_log_goes_on_from_there(make: Make) -> None:
    store = make()
    store.append(messages(1, 2, term=1), commit=2)
    store.append(messages(3, 6, term=2))
    store.truncate(4)
    assert (store.last_seq(), store.last_term(), store.committed()) == (4, 2, 2)
    assert retained(store) == [1, 2, 3, 4]
    assert store.term_at(5) is None
    store.truncate(4)  # nothing to do
    store.truncate(2)
    assert (store.last_seq(), store.last_term()) == (2, 1)
    store.append([entry(3, term=5, id="new")], commit=3)
    assert store.read(2, BIG) == [entry(3, term=5, id="new")]
    assert store.find("alice", "new") == 3
    assert store.find("alice", "id3") is None


@pytest.mark.parametrize("after", [2, 7, -1, 4.0, True, None])
def test_truncate_never_removes_committed_entries(make: Make, after: object) -> None:
    store = make()
    store.append([entry(1, kind="join")] + messages(2, 6), commit=3)
    before = everything(store)
    with pytest.raises(ValueError, match="truncate"):
        store.truncate(after)  # type: ignore[arg-type]
    assert everything(store) == before


def test_truncate_keeps_a_committed_entry_that_shares_its_id_with_a_truncated_one(make: Make) -> None:
    store = make()
    store.append([entry(1, id="x"), entry(2, id="x")], commit=1)
    store.truncate(1)
    assert store.find("alice", "x") == 1
    store.append([entry(2, id="x")], commit=2)
    assert store.find("alice", "x") == 2


def test_truncate_to_the_base_of_an_installed_snapshot(make: Make) -> None:
    store = make()
    store.install(Base(100, 7, {}, config(90)))
    store.append([config(101, "h1"), entry(102, term=8)])
    store.truncate(100)
    assert (store.last_seq(), store.last_term(), store.first_seq()) == (100, 7, 101)
    assert store.last_config() == config(90)


# -------------------------------------------------------------------- term_at


def test_term_at_held_entries_and_the_base(make: Make) -> None:
    store = make(3)
    store.append(messages(1, 2, term=1) + messages(3, 5, term=2) + messages(6, 7, term=4), commit=5)
    assert [store.term_at(seq) for seq in range(0, 9)] == [None, None, 1, 2, 2, 2, 4, 4, None]  # 2 is the base
    assert store.base().seq == 2  # type: ignore[union-attr]
    assert store.term_at(-1) is None
    store.install(Base(50, 6, {}))
    assert (store.term_at(49), store.term_at(50), store.term_at(51)) == (None, 6, None)


def test_term_at_an_untrimmed_start_is_zero(make: Make) -> None:
    store = make()
    store.append(messages(1, 1, term=2))
    assert (store.term_at(0), store.term_at(1)) == (0, 2)


# ----------------------------------------------------------------- retention


def test_retention_slack_policy() -> None:
    assert retention_slack(1) == 0
    assert retention_slack(9) == 0
    assert retention_slack(10) == 1
    assert retention_slack(5000) == 500
    assert retention_slack(10_000) == 1000
    assert retention_slack(10**9) == 1000


@pytest.mark.parametrize("retention", [0, -1, 1.5, None])
def test_retention_must_be_a_positive_integer(retention: object, path: str) -> None:
    with pytest.raises(ValueError, match="retention"):
        MemoryStore(retention)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retention"):
        SqliteStore(path, retention)  # type: ignore[arg-type]


def test_retention_trims_in_a_batch_back_to_retention(make: Make) -> None:
    store = make(10)  # slack 1: 11 entries are kept, the 12th trims back to 10
    append_committed(store, messages(1, 11))
    assert retained(store) == list(range(1, 12))
    append_committed(store, messages(12, 12))
    assert retained(store) == list(range(3, 13))
    assert store.first_seq() == 3
    assert store.last_seq() == 12
    assert seqs(store.latest(100)) == list(range(3, 13))
    assert seqs(store.read(0, 2)) == [3, 4]


def test_retention_never_trims_uncommitted_entries(make: Make) -> None:
    store = make(10)
    store.append(messages(1, 50))
    assert retained(store) == list(range(1, 51))  # 50 entries, none committed: none trimmed
    store.commit(20)
    assert retained(store) == list(range(11, 51))  # retention counts the committed ones
    assert seqs(store.latest(BIG)) == list(range(11, 21))
    assert store.first_seq() == 11
    store.commit(50)
    assert retained(store) == list(range(41, 51))


def test_retention_bounds_the_store_over_many_appends(make: Make) -> None:
    retention = 50
    store = make(retention)
    bound = retention + retention_slack(retention)
    last = 0
    for size in [1, 7, 13, 2, 30, 1, 1, 9, 40, 3] * 4:
        append_committed(store, messages(last + 1, last + size))
        last += size
        kept = retained(store)
        assert kept == list(range(store.first_seq(), last + 1))
        assert min(last, retention) <= len(kept) <= bound
        assert seqs(store.latest(BIG)) == kept
        assert store.last_seq() == last
    assert store.first_seq() > last - bound


def test_a_batch_larger_than_retention_keeps_only_its_tail(make: Make) -> None:
    store = make(10)
    append_committed(store, messages(1, 50))
    assert retained(store) == list(range(41, 51))
    assert store.first_seq() == 41
    assert store.last_seq() == 50
    assert store.read(0, 100) == messages(41, 50)


def test_retention_of_one(make: Make) -> None:
    store = make(1)
    append_committed(store, messages(1, 5))
    assert store.read(0, 10) == [entry(5)]
    assert store.latest(10) == [entry(5)]
    assert (store.first_seq(), store.last_seq()) == (5, 5)
    append_committed(store, messages(6, 6))
    assert retained(store) == [6]
    assert store.find("alice", "id6") == 6


def test_last_seq_users_and_find_survive_trimming(make: Make) -> None:
    store = make(10)
    append_committed(store, [entry(1, kind="join"), entry(2, kind="join", user="bob"), entry(3, id="dup-me")])
    append_committed(store, messages(4, 100))
    assert store.first_seq() > 3
    assert store.last_seq() == 100
    assert store.users() == {"alice": entry(1, kind="join"), "bob": entry(2, kind="join", user="bob")}
    assert store.find("alice", "dup-me") == 3
    assert store.find("alice", "id100") == 100
    append_committed(store, [entry(101, kind="leave", user="bob")])
    assert store.users() == {"alice": entry(1, kind="join")}
    assert store.last_seq() == 101


# ----------------------------------------------------------------------- base


def test_base_of_an_untrimmed_store_is_the_start(make: Make) -> None:
    store = make(10)
    assert store.base() == Base(0, 0, {})
    append_committed(store, [entry(1, kind="join")] + messages(2, 11))
    assert store.base() == Base(0, 0, {})
    assert store.last_term() == 3


def test_trimming_moves_the_base_with_the_presence_after_it(make: Make) -> None:
    store = make(10)  # slack 1: the 12th entry trims back to 3..12
    alice, bob, carol = entry(1, kind="join"), entry(5, kind="join", user="bob"), entry(2, kind="join", user="carol")
    append_committed(store, [alice, {**carol, "term": 2}, entry(3, kind="leave", user="carol")])
    append_committed(store, messages(4, 4) + [bob] + messages(6, 12))
    assert store.first_seq() == 3
    assert store.base() == Base(2, 2, {"alice": alice, "carol": {**carol, "term": 2}})  # her leave is seq 3
    append_committed(store, messages(13, 13))
    assert store.base().seq == 2  # type: ignore[union-attr]  # within the slack: no trim
    append_committed(store, messages(14, 14))
    assert store.base() == Base(4, 3, {"alice": alice})
    append_committed(store, messages(15, 16))
    assert store.base() == Base(6, 3, {"alice": alice, "bob": bob})
    assert list(store.base().users) == ["alice", "bob"]  # type: ignore[union-attr]


def test_trimming_keeps_the_latest_trimmed_config_in_the_base(make: Make) -> None:
    store = make(3)  # no slack: every commit trims back to 3 entries
    append_committed(store, [config(1, "h1"), config(2, "h1 h2")] + messages(3, 5))
    assert store.base() == Base(2, 3, {}, config(2, "h1 h2"))
    assert store.last_config() == config(2, "h1 h2")
    append_committed(store, [config(6, "h2")] + messages(7, 10))
    assert store.base() == Base(7, 3, {}, config(6, "h2"))
    assert store.last_config() == config(6, "h2")
    append_committed(store, messages(11, 20))
    assert store.base() == Base(17, 3, {}, config(6, "h2"))


def test_install_replaces_the_log_by_a_snapshot_and_the_log_continues_after_it(make: Make) -> None:
    store = make(10)
    append_committed(store, [entry(1, kind="join", user="old"), config(2)] + messages(3, 5))
    store.append(messages(6, 8))
    alice, bob = entry(90, kind="join"), entry(40, kind="join", user="bob")
    store.install(Base(100, 7, {"alice": alice, "bob": bob}, config(60, "h7")))
    assert (store.first_seq(), store.last_seq(), store.last_term(), store.committed()) == (101, 100, 7, 100)
    assert store.read(0, BIG) == store.latest(BIG) == []  # uncommitted entries went too
    assert store.find("alice", "id3") is None
    assert list(store.users()) == ["bob", "alice"]  # in seq order
    assert store.base() == Base(100, 7, {"bob": bob, "alice": alice}, config(60, "h7"))
    assert store.last_config() == config(60, "h7")
    with pytest.raises(ValueError, match="gap"):
        store.append([entry(100)])
    append_committed(store, [entry(101, kind="leave", user="bob")] + messages(102, 111))
    assert seqs(store.read(50, 3)) == [101, 102, 103]  # below the first retained: what is retained
    assert store.users() == {"alice": alice}
    append_committed(store, messages(112, 112))  # trims 101, bob's leave, into the base
    assert store.base() == Base(102, 3, {"alice": alice}, config(60, "h7"))


def test_install_of_a_base_without_config_leaves_none(make: Make) -> None:
    store = make()
    store.append([config(1)], commit=1)
    store.install(Base(10, 2, {}))
    assert store.last_config() is None
    assert store.base() == Base(10, 2, {}, None)


def test_install_clears_the_trimmed_ids(make: Make) -> None:
    store = make(1)
    append_committed(store, messages(1, 3))
    assert store.find("alice", "id1") == 1
    store.install(Base(10, 3, {}))
    assert store.find("alice", "id1") is None
    assert store.find("alice", "id3") is None


BAD_BASES = {
    "negative seq": Base(-1, 0, {}),
    "negative term": Base(5, -1, {}),
    "bool seq": Base(True, 0, {}),  # type: ignore[arg-type]
    "not a join": Base(5, 1, {"alice": entry(3)}),
    "join after the base": Base(5, 1, {"alice": entry(6, kind="join")}),
    "another user's join": Base(5, 1, {"bob": entry(3, kind="join")}),
    "missing key": Base(5, 1, {"alice": {k: v for k, v in entry(3, kind="join").items() if k != "time"}}),
    "config not a config": Base(5, 1, {}, entry(3)),
    "config after the base": Base(5, 1, {}, config(6)),
    "config at seq 0": Base(5, 1, {}, config(0)),
    "config missing key": Base(5, 1, {}, {k: v for k, v in config(3).items() if k != "text"}),
    "config seq a bool": Base(5, 1, {}, {**config(1), "seq": True}),
    "config not a dict": Base(5, 1, {}, "config"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("bad", BAD_BASES.values(), ids=BAD_BASES.keys())
def test_install_refuses_a_bad_base_and_changes_nothing(make: Make, bad: Base) -> None:
    store = make(10)
    store.append([entry(1, kind="join"), config(2)] + messages(3, 4), commit=3)
    before = everything(store)
    with pytest.raises(ValueError):
        store.install(bad)
    assert everything(store) == before


# ----------------------------------------------------------------------- find


def test_find_by_user_and_id(make: Make) -> None:
    store = make()
    append_committed(store, [entry(1, kind="join", id="p-1"), entry(2, id="abc"), entry(3, user="bob", id="abc")])
    assert store.find("alice", "abc") == 2
    assert store.find("bob", "abc") == 3
    assert store.find("alice", "p-1") == 1
    assert store.find("alice", "abd") is None
    assert store.find("carol", "abc") is None
    assert store.find("ALICE", "abc") is None


def test_find_gives_only_committed_entries(make: Make) -> None:
    store = make()
    store.append([entry(1, id="x"), entry(2, id="y"), entry(3, id="x")], commit=1)
    assert store.find("alice", "x") == 1  # the newest committed, not the uncommitted seq 3
    assert store.find("alice", "y") is None
    store.commit(3)
    assert (store.find("alice", "x"), store.find("alice", "y")) == (3, 2)


def test_find_returns_the_newest_of_a_repeated_pair_even_after_trimming(make: Make) -> None:
    store = make(3)
    append_committed(store, [entry(1, id="x"), entry(2), entry(3, id="x")])
    assert store.find("alice", "x") == 3
    append_committed(store, messages(4, 5))
    assert store.first_seq() == 3
    assert store.find("alice", "x") == 3
    append_committed(store, messages(6, 6))
    assert store.first_seq() == 4
    assert store.find("alice", "x") == 3  # trimmed: found among the trimmed ids


def test_find_after_trimming_within_and_beyond_dedupe_seconds(make: Make) -> None:
    store = make(1)  # no slack: every commit trims all but the last entry
    append_committed(store, [entry(1, time=T), entry(2, time=T + DEDUPE_SECONDS)])
    assert retained(store) == [2]
    assert store.find("alice", "id1") == 1  # exactly DEDUPE_SECONDS older than the newest: kept
    append_committed(store, [entry(3, time=T + DEDUPE_SECONDS + 0.5)])
    assert store.find("alice", "id1") is None  # older than that: forgotten at this trim
    assert (store.find("alice", "id2"), store.find("alice", "id3")) == (2, 3)


def test_trimmed_ids_are_forgotten_by_their_own_entry_time(make: Make) -> None:
    """Entry times need not follow seqs (another leader's clock): each trimmed id goes by its own."""
    store = make(1)
    append_committed(store, [entry(1, id="x", time=T + 10), entry(2, id="x", time=T), entry(3, time=T)])
    assert store.find("alice", "x") == 2
    append_committed(store, [entry(4, time=T + DEDUPE_SECONDS + 5)])  # forgets seq 2, not seq 1
    assert store.find("alice", "x") == 1
    append_committed(store, [entry(5, time=T + DEDUPE_SECONDS + 11)])
    assert store.find("alice", "x") is None


def test_trimmed_config_entries_are_not_found(make: Make) -> None:
    store = make(1)
    append_committed(store, [config(1), entry(2)])
    assert store.find("", "cfg1") is None


# ---------------------------------------------------------------------- users


def test_users_follow_join_leave_and_timeout(make: Make) -> None:
    store = make()
    alice, bob = entry(1, kind="join"), entry(2, kind="join", user="bob")
    append_committed(store, [alice, bob, entry(3, text="hi")])
    assert store.users() == {"alice": alice, "bob": bob}
    append_committed(store, [entry(4, kind="leave")])
    assert store.users() == {"bob": bob}
    append_committed(store, [entry(5, kind="timeout", user="bob")])
    assert store.users() == {}
    append_committed(store, [entry(6, kind="leave", user="nobody")])  # absent already: nothing to remove
    assert store.users() == {}


def test_rejoin_replaces_the_join_and_orders_users_by_join(make: Make) -> None:
    store = make()
    append_committed(store, [entry(1, kind="join"), entry(2, kind="join", user="bob")])
    rejoin = entry(3, kind="join", text="rejoined")
    append_committed(store, [rejoin])
    assert store.users() == {"alice": rejoin, "bob": entry(2, kind="join", user="bob")}
    assert list(store.users()) == ["bob", "alice"]
    append_committed(store, [entry(4, kind="timeout"), entry(5, kind="join", text="")])
    assert store.users()["alice"] == entry(5, kind="join", text="")


def test_presence_within_one_commit_follows_entry_order(make: Make) -> None:
    store = make()
    append_committed(store, [entry(1, kind="join", user="carol"), entry(2, kind="leave", user="carol")])
    assert store.users() == {}
    append_committed(store, [entry(3, kind="leave", user="dave"), entry(4, kind="join", user="dave")])
    assert store.users() == {"dave": entry(4, kind="join", user="dave")}
    erin, dave, erin_again = entry(5, "join", "erin"), entry(6, "join", "dave"), entry(7, "join", "erin")
    append_committed(store, [erin, dave, erin_again])
    assert store.users() == {"dave": dave, "erin": erin_again}
    assert list(store.users()) == ["dave", "erin"]


# ---------------------------------------------------------------- last_config


def test_last_config_is_the_latest_held_config_committed_or_not(make: Make) -> None:
    store = make()
    store.append([entry(1), config(2, "h1")], commit=1)
    assert store.last_config() == config(2, "h1")
    store.append([entry(3), config(4, "h1 h2"), entry(5)])
    assert store.last_config() == config(4, "h1 h2")


def test_last_config_after_truncate_falls_back_to_an_earlier_config_or_the_bases(make: Make) -> None:
    store = make(2)  # no slack
    append_committed(store, [config(1, "h1"), entry(2), entry(3)])  # config(1) is trimmed into the base
    store.append([config(4, "h1 h2"), entry(5), config(6, "h2"), entry(7)])
    store.truncate(6)
    assert store.last_config() == config(6, "h2")
    store.truncate(5)
    assert store.last_config() == config(4, "h1 h2")
    store.truncate(3)
    assert store.last_config() == config(1, "h1")
    assert store.base().config == config(1, "h1")  # type: ignore[union-attr]


def test_last_config_after_truncate_is_none_without_a_config_before(make: Make) -> None:
    store = make()
    store.append([entry(1), config(2)], commit=1)
    store.truncate(1)
    assert store.last_config() is None


# ---------------------------------------------------------------------- state


def test_state_is_saved_and_replaced(make: Make) -> None:
    store = make()
    store.save_state(ChatState("c-1", 4, "h2"))
    assert store.state() == ChatState("c-1", 4, "h2")
    store.save_state(ChatState("c-1", 5))
    assert store.state() == ChatState("c-1", 5, "")


BAD_STATES = {
    "negative epoch": ChatState("c", -1, ""),
    "float epoch": ChatState("c", 1.0, ""),  # type: ignore[arg-type]
    "bool epoch": ChatState("c", True, ""),  # type: ignore[arg-type]
    "cluster None": ChatState(None, 1, ""),  # type: ignore[arg-type]
    "voted_for an int": ChatState("c", 1, 2),  # type: ignore[arg-type]
    "not a ChatState": ("c", 1, ""),
}


@pytest.mark.parametrize("bad", BAD_STATES.values(), ids=BAD_STATES.keys())
def test_save_state_refuses_a_bad_state_and_keeps_the_old_one(make: Make, bad: ChatState) -> None:
    store = make()
    store.save_state(ChatState("c", 2, "h1"))
    with pytest.raises(ValueError):
        store.save_state(bad)
    assert store.state() == ChatState("c", 2, "h1")


def test_log_changes_leave_the_state_alone(make: Make) -> None:
    store = make(1)
    store.save_state(ChatState("c", 2, "h1"))
    store.append(messages(1, 4), commit=3)
    store.truncate(3)
    store.install(Base(10, 9, {}))
    assert store.state() == ChatState("c", 2, "h1")


# -------------------------------------------------------- both stores agree


def random_run(store: Store, seed: int) -> Iterator[tuple[object, ...]]:
    """Yield what `store` shows after each of a few hundred random operations, same ones for every store."""
    rng = random.Random(seed)
    term, time = 1, T0
    for step in range(400):
        last, committed = store.last_seq(), store.committed()
        op = rng.random()
        if op < 0.45:
            batch = []
            for seq in range(last + 1, last + 1 + rng.randint(0, 4)):
                time += rng.choice([1, 1, 1, -5, DEDUPE_SECONDS / 3])
                kind = rng.choice(["message"] * 4 + ["join", "leave", "timeout", "config"])
                if kind == "config":
                    batch.append({**config(seq, rng.choice(["h1", "h1 h2"]), term), "time": time})
                else:
                    user = rng.choice("abc")
                    batch.append(entry(seq, kind, user, id=f"i{rng.randint(0, 30)}", term=term, time=time))
            high = last + len(batch)
            store.append(batch, commit=rng.choice([None, rng.randint(committed, high)]))
        elif op < 0.75:
            store.commit(rng.randint(committed, last))
        elif op < 0.95:
            term += 1
            store.truncate(rng.randint(committed, last))
        elif op < 0.97:
            joined = rng.sample("abc", rng.randint(0, 3))
            users = {user: entry(last + 1 + i, "join", user) for i, user in enumerate(joined)}
            store.install(Base(last + 5, term, users, rng.choice([None, config(last + 4, "h9", term)])))
        else:
            store.save_state(ChatState("c", term, rng.choice(["", "h1"])))
        finds = {(user, f"i{i}"): store.find(user, f"i{i}") for user in "abc" for i in range(31)}
        terms = [store.term_at(seq) for seq in range(store.first_seq() - 2, store.last_seq() + 2)]
        yield step, everything(store), store.latest(3), finds, terms, store.state()


@pytest.mark.parametrize("seed", [1, 2])
def test_both_stores_agree_on_a_long_random_run(path: str, seed: int) -> None:
    memory, sqlite = MemoryStore(7), SqliteStore(path, 7)
    try:
        for in_memory, in_sqlite in zip(random_run(memory, seed), random_run(sqlite, seed), strict=True):
            assert in_memory == in_sqlite
    finally:
        sqlite.close()
    reopened = SqliteStore(path, 7)
    try:
        assert everything(reopened) == everything(memory)
        assert reopened.state() == memory.state()
    finally:
        reopened.close()


# ------------------------------------------------------------------ open_store


def test_open_store_without_state_dir_is_in_memory() -> None:
    store = open_store(None, 10)
    assert isinstance(store, MemoryStore)
    append_committed(store, messages(1, 20))
    assert retained(store) == list(range(11, 21))


def test_open_store_with_state_dir_creates_the_directory_and_file(tmp_path: Path) -> None:
    state_dir = tmp_path / "var" / "lib" / "dsd"
    store = open_store(str(state_dir), 10)
    try:
        assert isinstance(store, SqliteStore)
        append_committed(store, messages(1, 20))
        assert retained(store) == list(range(11, 21))
    finally:
        store.close()
    assert (state_dir / FILENAME).is_file()
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700


def test_sqlite_file_layout(path: str) -> None:
    SqliteStore(path, 10).close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {
            "entries", "presence", "base", "base_presence", "commit_point", "state", "base_config", "trimmed_ids"
        }
        for table in ("entries", "presence", "base_presence", "base_config"):
            assert {row[1] for row in db.execute(f"PRAGMA table_info({table})")} == set(FIELDS)
        assert {row[1] for row in db.execute("PRAGMA table_info(trimmed_ids)")} == {"user", "id", "seq", "time"}
        assert db.execute("SELECT * FROM commit_point").fetchall() == [(0,)]
        assert db.execute("SELECT * FROM state").fetchall() == [("", 0, "")]
        assert db.execute("SELECT * FROM base").fetchall() == [(0, 0)]

        def indexes(table: str) -> dict[str, list[str]]:
            names = [row[1] for row in db.execute(f"PRAGMA index_list({table})")]
            return {name: [row[2] for row in db.execute(f"PRAGMA index_info({name})")] for name in names}

        assert indexes("entries") == {"entries_user_id": ["user", "id"], "entries_config": ["seq"]}
        assert indexes("trimmed_ids") == {"trimmed_ids_user_id": ["user", "id"], "trimmed_ids_time": ["time"]}
    finally:
        db.close()


# ----------------------------------------------------------------- persistence


def reopen(store: SqliteStore, retention: int = 10) -> SqliteStore:
    store.close()
    return SqliteStore(store.path, retention)


def test_sqlite_store_persists_across_close_and_reopen(path: str) -> None:
    store = SqliteStore(path, 10)
    append_committed(store, [entry(1, "join"), entry(2, "join", "bob"), entry(3, "join", "carol")])
    append_committed(store, messages(4, 20) + [entry(21, kind="leave", user="bob"), entry(22, id="last")])
    before = everything(store)
    store = reopen(store)
    try:
        assert everything(store) == before
        assert store.last_seq() == 22
        assert store.first_seq() > 1
        assert list(store.users()) == ["alice", "carol"]
        assert store.find("alice", "last") == 22
        with pytest.raises(ValueError):
            store.append([entry(22)])
        append_committed(store, [entry(23, kind="timeout", user="carol")])
        assert store.last_seq() == 23
        assert list(store.users()) == ["alice"]
        store = reopen(store)
        assert store.last_seq() == 23
        assert store.users() == {"alice": entry(1, kind="join")}
    finally:
        store.close()


def test_uncommitted_entries_commit_point_state_and_config_survive_reopen(path: str) -> None:
    store = SqliteStore(path, 10)
    alice = entry(1, kind="join")
    store.append([alice, entry(2, id="x"), config(3, "h1 h2"), entry(4, kind="leave"), entry(5, id="y")], commit=2)
    store.save_state(ChatState("c-9", 6, "h2"))
    before = everything(store)
    store = reopen(store)
    try:
        assert everything(store) == before
        assert (store.committed(), store.last_seq()) == (2, 5)
        assert store.users() == {"alice": alice}
        assert (store.find("alice", "x"), store.find("alice", "y")) == (2, None)
        assert store.last_config() == config(3, "h1 h2")
        assert store.state() == ChatState("c-9", 6, "h2")
        store.truncate(3)
        assert store.last_config() == config(3, "h1 h2")
        store.truncate(2)
        store = reopen(store)
        assert (store.committed(), store.last_seq(), store.last_config()) == (2, 2, None)
        store.append([entry(3, id="y")], commit=3)
        assert store.find("alice", "y") == 3
    finally:
        store.close()


def test_base_config_and_trimmed_ids_survive_reopen(path: str) -> None:
    store = SqliteStore(path, 1)
    append_committed(store, [config(1), entry(2, id="x"), entry(3)])
    store = reopen(store, 1)
    try:
        assert store.base() == Base(2, 3, {}, config(1))
        assert store.last_config() == config(1)
        assert store.find("alice", "x") == 2  # hashed again from the trimmed ids on opening
        assert store.find("", "cfg1") is None
    finally:
        store.close()


def test_refused_append_is_not_persisted(path: str) -> None:
    store = SqliteStore(path, 100)
    store.append(messages(1, 3), commit=3)
    with pytest.raises(ValueError):
        store.append([entry(4, kind="join"), entry(6)], commit=4)
    store = reopen(store, 100)
    try:
        assert retained(store) == [1, 2, 3]
        assert store.users() == {}
        assert store.committed() == 3
    finally:
        store.close()


def block_deletes(path: str) -> sqlite3.Connection:
    """A trigger makes every delete of an entry fail, as a full disk would; drop it with unblock()."""
    other = sqlite3.connect(path)
    other.execute("CREATE TRIGGER no_delete BEFORE DELETE ON entries BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    other.commit()
    return other


def unblock(other: sqlite3.Connection) -> None:
    other.execute("DROP TRIGGER no_delete")
    other.commit()
    other.close()


def test_a_write_failing_inside_append_changes_nothing(path: str) -> None:
    """A failure half-way through the transaction (disk full, I/O error) rolls all of it back."""
    store = SqliteStore(path, 10)
    try:
        append_committed(store, [entry(1, kind="join")] + messages(2, 11))
        before = everything(store)
        other = block_deletes(path)  # the trim, the last step of committing, fails
        batch = [entry(12, kind="leave"), config(13)]
        with pytest.raises(sqlite3.Error, match="disk full"):
            store.append(batch, commit=13)
        assert everything(store) == before
        assert store.find("alice", "id12") is None
        store.append(batch)  # no commit: no trim
        with pytest.raises(sqlite3.Error, match="disk full"):
            store.commit(12)
        assert (store.committed(), store.last_seq(), store.users()) == (11, 13, {"alice": entry(1, kind="join")})
        with pytest.raises(sqlite3.Error, match="disk full"):
            store.truncate(12)
        assert (store.last_seq(), store.last_term(), store.last_config()) == (13, 3, config(13))
        unblock(other)
        store.commit(13)
        assert (store.first_seq(), store.last_seq(), store.committed()) == (4, 13, 13)
        assert store.users() == {}
        assert store.find("alice", "id2") == 2
    finally:
        store.close()


def test_a_write_failing_inside_install_changes_nothing(path: str) -> None:
    store = SqliteStore(path, 10)
    try:
        store.append([entry(1, kind="join"), config(2)] + messages(3, 5), commit=3)
        before = everything(store)
        other = block_deletes(path)
        with pytest.raises(sqlite3.Error, match="disk full"):
            store.install(Base(100, 7, {}))
        assert everything(store) == before
        unblock(other)
    finally:
        store.close()


def test_reopening_with_a_smaller_retention_trims_at_once(path: str) -> None:
    store = SqliteStore(path, 1000)
    store.append(messages(1, 100), commit=80)
    store = reopen(store, 10)
    try:
        assert retained(store) == list(range(71, 101))
        assert store.first_seq() == 71
        assert (store.committed(), store.last_seq()) == (80, 100)
    finally:
        store.close()


def test_last_seq_survives_reopen_after_everything_old_was_trimmed(path: str) -> None:
    store = SqliteStore(path, 1)
    append_committed(store, messages(1, 500))
    store = reopen(store, 1)
    try:
        assert (store.first_seq(), store.last_seq(), store.committed()) == (500, 500, 500)
        append_committed(store, messages(501, 501))
        assert retained(store) == [501]
    finally:
        store.close()


def test_installed_snapshot_survives_reopen(path: str) -> None:
    store = SqliteStore(path, 10)
    store.append(messages(1, 5), commit=3)
    alice = entry(90, kind="join")
    store.install(Base(100, 7, {"alice": alice}, config(80)))
    store = reopen(store)
    try:
        assert (store.first_seq(), store.last_seq(), store.last_term(), store.committed()) == (101, 100, 7, 100)
        assert store.base() == Base(100, 7, {"alice": alice}, config(80))
        assert store.users() == {"alice": alice} and store.read(0, BIG) == []
        assert store.last_config() == config(80)
        append_committed(store, messages(101, 102))
        assert retained(store) == [101, 102]
    finally:
        store.close()


# -------------------------------------------------------------- older files


def version_2_file(path: str, retention: int, entries: list[Entry], base: Base | None = None) -> None:
    """A store as dsd wrote it before the uncommitted log (schema version 2): every entry committed."""
    store = SqliteStore(path, retention)
    if base is not None:
        store.install(base)
    if entries:
        append_committed(store, entries)
    store.close()
    db = sqlite3.connect(path)
    for table in ("commit_point", "state", "base_config", "trimmed_ids"):
        db.execute(f"DROP TABLE {table}")
    db.execute("DROP INDEX entries_config")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()


def version_1_file(path: str, entries: list[Entry], first: int) -> None:
    """A store as dsd wrote it before the base table (schema version 1), retaining `first`.. only."""
    version_2_file(path, BIG, entries)
    db = sqlite3.connect(path)
    db.execute("DROP TABLE base")
    db.execute("DROP TABLE base_presence")
    db.execute("DELETE FROM entries WHERE seq < ?", (first,))
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()


def assert_schema_3(path: str) -> None:
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'entries_config'").fetchone()
    finally:
        db.close()


def test_a_version_2_file_is_upgraded_with_every_entry_committed(path: str) -> None:
    alice, bob = entry(1, kind="join", term=1), entry(2, kind="join", user="bob", term=1)
    leave = entry(13, kind="leave", user="bob", term=4)
    version_2_file(path, 10, [alice, bob] + messages(3, 12, term=2) + [leave] + messages(14, 15, term=4))
    store = SqliteStore(path, 10)
    try:
        assert (store.first_seq(), store.last_seq(), store.committed(), store.last_term()) == (6, 15, 15, 4)
        assert store.state() == ChatState("", 4, "")
        assert store.base() == Base(5, 2, {"alice": alice, "bob": bob}, None)
        assert store.users() == {"alice": alice}
        assert store.last_config() is None
        assert seqs(store.latest(BIG)) == list(range(6, 16))
        assert store.find("alice", "id15") == 15
        store.append([config(16), entry(17, term=5)])
        store.truncate(16)
        store.commit(16)
        assert store.last_config() == config(16)
        store = reopen(store)
        assert (store.committed(), store.last_config(), store.state().epoch) == (16, config(16), 4)
    finally:
        store.close()
    assert_schema_3(path)


def test_a_version_2_file_holding_only_a_snapshot_takes_its_epoch_from_the_base(path: str) -> None:
    alice = entry(90, kind="join")
    version_2_file(path, 10, [], Base(100, 7, {"alice": alice}))
    store = SqliteStore(path, 10)
    try:
        assert (store.last_seq(), store.committed(), store.last_term()) == (100, 100, 7)
        assert store.state() == ChatState("", 7, "")
        assert store.base() == Base(100, 7, {"alice": alice}, None)
    finally:
        store.close()


def test_an_untrimmed_version_1_file_is_upgraded_with_its_base(path: str) -> None:
    version_1_file(path, [entry(1, kind="join")] + messages(2, 20), 1)
    store = SqliteStore(path, 10)
    try:
        assert store.base() == Base(10, 3, {"alice": entry(1, kind="join")})  # trimmed on opening
        assert retained(store) == list(range(11, 21))
        assert (store.committed(), store.state()) == (20, ChatState("", 3, ""))
        assert store.find("alice", "id5") == 5  # trimmed on opening, within DEDUPE_SECONDS
    finally:
        store.close()
    assert_schema_3(path)


def test_a_trimmed_version_1_file_keeps_its_entries_but_has_no_base_until_it_installs_one(path: str) -> None:
    version_1_file(path, messages(1, 30), 11)
    store = SqliteStore(path, 10)
    try:
        assert store.base() is None
        assert (store.first_seq(), store.last_seq(), store.last_term(), store.committed()) == (21, 30, 3, 30)
        assert (store.term_at(20), store.term_at(21)) == (None, 3)  # the term at an unknown base is unknown
        assert store.state() == ChatState("", 3, "")
        append_committed(store, [config(31)] + messages(32, 40))
        assert store.base() is None and store.first_seq() > 21
        store = reopen(store)
        assert store.last_config() == config(31)  # trimmed, yet kept although the base is unknown
        store.install(Base(50, 4, {}))
        assert store.base() == Base(50, 4, {})
    finally:
        store.close()


# -------------------------------------------------------------- refused files


def assert_one_line_naming(error: pytest.ExceptionInfo[StoreError], path: str) -> None:
    message = str(error.value)
    assert path in message
    assert "\n" not in message


def test_state_dir_under_a_regular_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    path = str(tmp_path / "file" / "state" / FILENAME)
    with pytest.raises(StoreError) as error:
        SqliteStore(path, 10)
    assert_one_line_naming(error, path)


def test_a_directory_in_place_of_the_file_is_a_store_error(path: str) -> None:
    os.makedirs(path)
    with pytest.raises(StoreError) as error:
        SqliteStore(path, 10)
    assert_one_line_naming(error, path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_unwritable_directory_is_a_store_error(tmp_path: Path, existing: bool) -> None:
    state_dir = tmp_path / "state"
    path = str(state_dir / FILENAME)
    if existing:
        store = SqliteStore(path, 10)
        store.append(messages(1, 3))
        store.close()
        os.chmod(path, 0o400)
    state_dir.mkdir(exist_ok=True)
    os.chmod(state_dir, 0o500)
    try:
        with pytest.raises(StoreError) as error:
            SqliteStore(path, 10)
    finally:
        os.chmod(state_dir, 0o700)
    assert_one_line_naming(error, path)


@pytest.mark.parametrize(
    "content", [b"hello, this is not a database\n" * 100, os.urandom(8192)], ids=["text", "random"]
)
def test_a_file_that_is_not_sqlite_is_refused_untouched(path: str, content: bytes) -> None:
    os.makedirs(os.path.dirname(path))
    Path(path).write_bytes(content)
    with pytest.raises(StoreError) as error:
        SqliteStore(path, 10)
    assert_one_line_naming(error, path)
    assert Path(path).read_bytes() == content


def test_another_programs_sqlite_file_is_refused_untouched(path: str) -> None:
    os.makedirs(os.path.dirname(path))
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE entries (seq INTEGER PRIMARY KEY)")
    db.commit()
    db.close()
    content = Path(path).read_bytes()
    with pytest.raises(StoreError, match="not a dsd chat store") as error:
        SqliteStore(path, 10)
    assert_one_line_naming(error, path)
    assert Path(path).read_bytes() == content
    assert not os.path.exists(path + "-wal")


def test_a_newer_schema_is_refused(path: str) -> None:
    store = SqliteStore(path, 10)
    store.append(messages(1, 3))
    store.close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer") as error:
        SqliteStore(path, 10)
    assert_one_line_naming(error, path)
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 3
    finally:
        db.close()


def test_the_log_is_checkpointed_into_the_database_file_by_a_thread_that_stops_at_close(path: str) -> None:
    store = SqliteStore(path, BIG)
    try:
        size = os.path.getsize(path)
        for seq in range(1, 2 * CHECKPOINT_EVERY + 1):
            store.append([entry(seq)])
        wait_until(lambda: os.path.getsize(path) > size, 10, what="a checkpoint into the database file")
    finally:
        store.close()
    assert not os.path.exists(path + "-wal")  # the last connection to close checkpoints it all
    assert not any(thread.name == "dsd-checkpoint" for thread in threading.enumerate())
    reopened = SqliteStore(path, BIG)
    try:
        assert reopened.last_seq() == 2 * CHECKPOINT_EVERY
    finally:
        reopened.close()


def test_the_base_carries_the_trimmed_ids_and_installing_it_keeps_them_findable(make: Make) -> None:
    """A daemon that catches up from a snapshot still recognises a retry of a trimmed message."""
    source = make(1)
    append_committed(source, [entry(1, id="m1"), entry(2, id="m2"), entry(3, id="m3")])
    base = source.base()
    assert base is not None and [(user, id, seq) for user, id, seq, _ in base.ids] == [("alice", "m1", 1), ("alice", "m2", 2)]
    target = make(1)
    target.install(base)
    assert target.find("alice", "m1") == 1 and target.find("alice", "m2") == 2
    assert target.find("alice", "m3") is None  # after the base: the target gets it as an entry
    assert target.base() is not None and target.base().ids == base.ids  # and passes them on


@pytest.mark.parametrize("row", [("alice", "m1"), ("alice", "m1", 9, 1.0), ("alice", "m1", 0, 1.0),
                                 (1, "m1", 1, 1.0), ("alice", "m1", 1, "late")])
def test_install_refuses_a_malformed_trimmed_id(make: Make, row: tuple) -> None:
    store = make()
    with pytest.raises(ValueError, match="trimmed id"):
        store.install(Base(5, 1, {}, None, (row,)))
    assert store.committed() == 0
