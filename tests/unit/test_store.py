"""Tests for dsd.store: both stores behave the same; SqliteStore also persists and guards its file."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dsd.store import (
    CHECKPOINT_EVERY,
    FIELDS,
    Base,
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


def entry(
    seq: int, kind: str = "message", user: str = "alice", id: str | None = None, text: str | None = None
) -> Entry:
    return {
        "seq": seq,
        "term": 3,
        "kind": kind,
        "user": user,
        "text": f"m{seq}" if text is None else text,
        "id": f"id{seq}" if id is None else id,
        "server": "h1",
        "session": "S" * 22,
        "time": 1764112345.123 + seq,
    }


def messages(first: int, last: int) -> list[Entry]:
    return [entry(seq) for seq in range(first, last + 1)]


def seqs(entries: list[Entry]) -> list[int]:
    return [e["seq"] for e in entries]


def retained(store: Store) -> list[int]:
    return seqs(store.read(0, BIG))


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


# ------------------------------------------------------------ append and read


def test_empty_store(make: Make) -> None:
    store = make()
    assert store.last_seq() == 0
    assert store.first_seq() == 1
    assert store.read(0, 10) == []
    assert store.latest(10) == []
    assert store.find("alice", "id1") is None
    assert store.users() == {}


def test_append_then_read_and_latest(make: Make) -> None:
    store = make()
    store.append(messages(1, 5))
    store.append(messages(6, 7))
    assert store.read(0, 100) == messages(1, 7)
    assert store.last_seq() == 7
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


def test_entries_come_back_as_plain_dicts_with_exactly_the_entry_keys(make: Make) -> None:
    store = make()
    batch = [entry(1, text="", id="k3J9_-"), entry(2, text="h\u00e9llo \u2603 \U0001f600\n")]
    store.append(batch)
    for got in store.read(0, 10) + store.latest(10):
        assert type(got) is dict
        assert tuple(got) == FIELDS
        assert [type(got[key]) for key in FIELDS] == [int, int, str, str, str, str, str, str, float]
    assert store.read(0, 10) == batch


def test_returned_and_appended_entries_are_copies(make: Make) -> None:
    store = make()
    batch = [entry(1, kind="join"), entry(2)]
    store.append(batch)
    batch[1]["text"] = "changed by the caller"
    store.read(0, 10)[0]["text"] = "changed"
    store.latest(10)[1]["text"] = "changed"
    store.users()["alice"]["text"] = "changed"
    assert store.read(0, 10) == [entry(1, kind="join"), entry(2)]
    assert store.users() == {"alice": entry(1, kind="join")}


def test_empty_append_changes_nothing(make: Make) -> None:
    store = make()
    store.append([])
    store.append(messages(1, 2))
    store.append([])
    assert store.last_seq() == 2
    assert retained(store) == [1, 2]


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
}


@pytest.mark.parametrize("bad", BAD_BATCHES.values(), ids=BAD_BATCHES.keys())
def test_append_refuses_a_bad_batch_and_stores_none_of_it(make: Make, bad: list[Entry]) -> None:
    store = make()
    store.append([entry(1, kind="join"), entry(2), entry(3)])
    with pytest.raises(ValueError):
        store.append(bad)
    assert store.read(0, 100) == [entry(1, kind="join"), entry(2), entry(3)]
    assert store.last_seq() == 3
    assert store.users() == {"alice": entry(1, kind="join")}
    assert all(store.find(user, f"id{seq}") is None for user in ("alice", "bob") for seq in range(4, 8))
    store.append(messages(4, 5))  # the store is still usable, and the next seq is still 4
    assert retained(store) == [1, 2, 3, 4, 5]


def test_first_append_must_start_at_one(make: Make) -> None:
    store = make()
    with pytest.raises(ValueError, match="gap or a repeat"):
        store.append(messages(2, 3))
    with pytest.raises(ValueError):
        store.append(messages(0, 1))
    assert store.last_seq() == 0
    assert store.read(0, 10) == []


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
    store.append(messages(1, 11))
    assert retained(store) == list(range(1, 12))
    store.append(messages(12, 12))
    assert retained(store) == list(range(3, 13))
    assert store.first_seq() == 3
    assert store.last_seq() == 12
    assert seqs(store.latest(100)) == list(range(3, 13))
    assert seqs(store.read(0, 2)) == [3, 4]


def test_retention_bounds_the_store_over_many_appends(make: Make) -> None:
    retention = 50
    store = make(retention)
    bound = retention + retention_slack(retention)
    last = 0
    for size in [1, 7, 13, 2, 30, 1, 1, 9, 40, 3] * 4:
        store.append(messages(last + 1, last + size))
        last += size
        kept = retained(store)
        assert kept == list(range(store.first_seq(), last + 1))
        assert min(last, retention) <= len(kept) <= bound
        assert seqs(store.latest(BIG)) == kept
        assert store.last_seq() == last
    assert store.first_seq() > last - bound


def test_a_batch_larger_than_retention_keeps_only_its_tail(make: Make) -> None:
    store = make(10)
    store.append(messages(1, 50))
    assert retained(store) == list(range(41, 51))
    assert store.first_seq() == 41
    assert store.last_seq() == 50
    assert store.read(0, 100) == messages(41, 50)


def test_retention_of_one(make: Make) -> None:
    store = make(1)
    store.append(messages(1, 5))
    assert store.read(0, 10) == [entry(5)]
    assert store.latest(10) == [entry(5)]
    assert (store.first_seq(), store.last_seq()) == (5, 5)
    store.append(messages(6, 6))
    assert retained(store) == [6]
    assert store.find("alice", "id5") is None
    assert store.find("alice", "id6") == 6


def test_last_seq_users_and_find_survive_trimming(make: Make) -> None:
    store = make(10)
    store.append([entry(1, kind="join"), entry(2, kind="join", user="bob"), entry(3, id="dup-me")])
    store.append(messages(4, 100))
    assert store.first_seq() > 3
    assert store.last_seq() == 100
    assert store.users() == {"alice": entry(1, kind="join"), "bob": entry(2, kind="join", user="bob")}
    assert store.find("alice", "dup-me") is None
    assert store.find("alice", "id100") == 100
    store.append([entry(101, kind="leave", user="bob")])
    assert store.users() == {"alice": entry(1, kind="join")}
    assert store.last_seq() == 101


# ----------------------------------------------------------------------- base


def test_base_of_an_untrimmed_store_is_the_start(make: Make) -> None:
    store = make(10)
    assert store.base() == Base(0, 0, {})
    store.append([entry(1, kind="join")] + messages(2, 11))
    assert store.base() == Base(0, 0, {})
    assert store.last_term() == 3


def test_trimming_moves_the_base_with_the_presence_after_it(make: Make) -> None:
    store = make(10)  # slack 1: the 12th entry trims back to 3..12
    alice, bob, carol = entry(1, kind="join"), entry(5, kind="join", user="bob"), entry(2, kind="join", user="carol")
    store.append([alice, {**carol, "term": 2}, entry(3, kind="leave", user="carol")])
    store.append(messages(4, 4) + [bob] + messages(6, 12))
    assert store.first_seq() == 3
    assert store.base() == Base(2, 2, {"alice": alice, "carol": {**carol, "term": 2}})  # her leave is seq 3
    store.append(messages(13, 13))
    assert store.base().seq == 2  # within the slack: no trim
    store.append(messages(14, 14))
    assert store.base() == Base(4, 3, {"alice": alice})
    store.append(messages(15, 16))
    assert store.base() == Base(6, 3, {"alice": alice, "bob": bob})
    assert list(store.base().users) == ["alice", "bob"]


def test_install_replaces_the_log_by_a_snapshot_and_the_log_continues_after_it(make: Make) -> None:
    store = make(10)
    store.append([entry(1, kind="join", user="old")] + messages(2, 5))
    alice, bob = entry(90, kind="join"), entry(40, kind="join", user="bob")
    store.install(Base(100, 7, {"alice": alice, "bob": bob}))
    assert (store.first_seq(), store.last_seq(), store.last_term()) == (101, 100, 7)
    assert store.read(0, BIG) == store.latest(BIG) == []
    assert store.find("alice", "id3") is None
    assert list(store.users()) == ["bob", "alice"]  # in seq order
    assert store.base() == Base(100, 7, {"bob": bob, "alice": alice})
    with pytest.raises(ValueError, match="gap"):
        store.append([entry(100)])
    store.append([entry(101, kind="leave", user="bob")] + messages(102, 111))
    assert seqs(store.read(50, 3)) == [101, 102, 103]  # below the first retained: what is retained
    assert store.users() == {"alice": alice}
    store.append(messages(112, 112))  # trims 101, bob's leave, into the base
    assert store.base() == Base(102, 3, {"alice": alice})


BAD_BASES = {
    "negative seq": Base(-1, 0, {}),
    "negative term": Base(5, -1, {}),
    "bool seq": Base(True, 0, {}),  # type: ignore[arg-type]
    "not a join": Base(5, 1, {"alice": entry(3)}),
    "join after the base": Base(5, 1, {"alice": entry(6, kind="join")}),
    "another user's join": Base(5, 1, {"bob": entry(3, kind="join")}),
    "missing key": Base(5, 1, {"alice": {k: v for k, v in entry(3, kind="join").items() if k != "time"}}),
}


@pytest.mark.parametrize("bad", BAD_BASES.values(), ids=BAD_BASES.keys())
def test_install_refuses_a_bad_base_and_changes_nothing(make: Make, bad: Base) -> None:
    store = make(10)
    store.append([entry(1, kind="join")] + messages(2, 3))
    before = store.read(0, BIG), store.users(), store.base(), store.last_seq()
    with pytest.raises(ValueError):
        store.install(bad)
    assert (store.read(0, BIG), store.users(), store.base(), store.last_seq()) == before


# ----------------------------------------------------------------------- find


def test_find_by_user_and_id(make: Make) -> None:
    store = make()
    store.append([entry(1, kind="join", id="p-1"), entry(2, id="abc"), entry(3, user="bob", id="abc")])
    assert store.find("alice", "abc") == 2
    assert store.find("bob", "abc") == 3
    assert store.find("alice", "p-1") == 1
    assert store.find("alice", "abd") is None
    assert store.find("carol", "abc") is None
    assert store.find("ALICE", "abc") is None


def test_find_returns_the_newest_of_a_repeated_pair_even_after_the_older_is_trimmed(make: Make) -> None:
    store = make(3)
    store.append([entry(1, id="x"), entry(2), entry(3, id="x")])
    assert store.find("alice", "x") == 3
    store.append(messages(4, 5))
    assert store.first_seq() == 3
    assert store.find("alice", "x") == 3
    store.append(messages(6, 6))
    assert store.find("alice", "x") is None


# ---------------------------------------------------------------------- users


def test_users_follow_join_leave_and_timeout(make: Make) -> None:
    store = make()
    alice, bob = entry(1, kind="join"), entry(2, kind="join", user="bob")
    store.append([alice, bob, entry(3, text="hi")])
    assert store.users() == {"alice": alice, "bob": bob}
    store.append([entry(4, kind="leave")])
    assert store.users() == {"bob": bob}
    store.append([entry(5, kind="timeout", user="bob")])
    assert store.users() == {}
    store.append([entry(6, kind="leave", user="nobody")])  # absent already: nothing to remove
    assert store.users() == {}


def test_rejoin_replaces_the_join_and_orders_users_by_join(make: Make) -> None:
    store = make()
    store.append([entry(1, kind="join"), entry(2, kind="join", user="bob")])
    rejoin = entry(3, kind="join", text="rejoined")
    store.append([rejoin])
    assert store.users() == {"alice": rejoin, "bob": entry(2, kind="join", user="bob")}
    assert list(store.users()) == ["bob", "alice"]
    store.append([entry(4, kind="timeout"), entry(5, kind="join", text="")])
    assert store.users()["alice"] == entry(5, kind="join", text="")


def test_presence_within_one_batch_follows_entry_order(make: Make) -> None:
    store = make()
    store.append([entry(1, kind="join", user="carol"), entry(2, kind="leave", user="carol")])
    assert store.users() == {}
    store.append([entry(3, kind="leave", user="dave"), entry(4, kind="join", user="dave")])
    assert store.users() == {"dave": entry(4, kind="join", user="dave")}
    erin, dave, erin_again = entry(5, "join", "erin"), entry(6, "join", "dave"), entry(7, "join", "erin")
    store.append([erin, dave, erin_again])
    assert store.users() == {"dave": dave, "erin": erin_again}
    assert list(store.users()) == ["dave", "erin"]


# ------------------------------------------------------------------ open_store


def test_open_store_without_state_dir_is_in_memory() -> None:
    store = open_store(None, 10)
    assert isinstance(store, MemoryStore)
    store.append(messages(1, 20))
    assert retained(store) == list(range(11, 21))


def test_open_store_with_state_dir_creates_the_directory_and_file(tmp_path: Path) -> None:
    state_dir = tmp_path / "var" / "lib" / "dsd"
    store = open_store(str(state_dir), 10)
    try:
        assert isinstance(store, SqliteStore)
        store.append(messages(1, 20))
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
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert {row[1] for row in db.execute("PRAGMA table_info(entries)")} == set(FIELDS)
        assert {row[1] for row in db.execute("PRAGMA table_info(presence)")} == set(FIELDS)
        indexes = [row[1] for row in db.execute("PRAGMA index_list(entries)")]
        columns = [[row[2] for row in db.execute(f"PRAGMA index_info({name})")] for name in indexes]
        assert columns == [["user", "id"]]
    finally:
        db.close()


# ----------------------------------------------------------------- persistence


def everything(store: Store) -> tuple[object, ...]:
    return store.read(0, BIG), store.latest(5), store.first_seq(), store.last_seq(), store.users()


def test_sqlite_store_persists_across_close_and_reopen(path: str) -> None:
    store = SqliteStore(path, 10)
    store.append([entry(1, "join"), entry(2, "join", "bob"), entry(3, "join", "carol")])
    store.append(messages(4, 20) + [entry(21, kind="leave", user="bob"), entry(22, id="last")])
    before = everything(store)
    store.close()

    store = SqliteStore(path, 10)
    try:
        assert everything(store) == before
        assert store.last_seq() == 22
        assert store.first_seq() > 1
        assert list(store.users()) == ["alice", "carol"]
        assert store.find("alice", "last") == 22
        with pytest.raises(ValueError):
            store.append([entry(22)])
        store.append([entry(23, kind="timeout", user="carol")])
        assert store.last_seq() == 23
        assert list(store.users()) == ["alice"]
    finally:
        store.close()

    store = SqliteStore(path, 10)
    try:
        assert store.last_seq() == 23
        assert store.users() == {"alice": entry(1, kind="join")}
    finally:
        store.close()


def test_refused_append_is_not_persisted(path: str) -> None:
    store = SqliteStore(path, 100)
    store.append(messages(1, 3))
    with pytest.raises(ValueError):
        store.append([entry(4, kind="join"), entry(6)])
    store.close()
    store = SqliteStore(path, 100)
    try:
        assert retained(store) == [1, 2, 3]
        assert store.users() == {}
    finally:
        store.close()


def test_a_write_failing_inside_append_changes_nothing(path: str) -> None:
    """A failure half-way through the transaction (disk full, I/O error) rolls all of it back."""
    store = SqliteStore(path, 10)
    try:
        store.append([entry(1, kind="join")] + messages(2, 11))
        other = sqlite3.connect(path)  # a trigger makes the trim, the last step of append, fail
        other.execute(
            "CREATE TRIGGER no_trim BEFORE DELETE ON entries BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        other.commit()
        batch = [entry(12, kind="leave"), entry(13)]
        with pytest.raises(sqlite3.Error, match="disk full"):
            store.append(batch)
        assert (store.first_seq(), store.last_seq()) == (1, 11)
        assert store.read(0, BIG) == [entry(1, kind="join")] + messages(2, 11)
        assert store.users() == {"alice": entry(1, kind="join")}
        assert store.find("alice", "id13") is None
        other.execute("DROP TRIGGER no_trim")
        other.commit()
        other.close()
        store.append(batch)
        assert (store.first_seq(), store.last_seq()) == (4, 13)
        assert store.users() == {}
    finally:
        store.close()


def test_reopening_with_a_smaller_retention_trims_at_once(path: str) -> None:
    store = SqliteStore(path, 1000)
    store.append(messages(1, 100))
    store.close()
    store = SqliteStore(path, 10)
    try:
        assert retained(store) == list(range(91, 101))
        assert store.first_seq() == 91
        assert store.last_seq() == 100
    finally:
        store.close()


def test_last_seq_survives_reopen_after_everything_old_was_trimmed(path: str) -> None:
    store = SqliteStore(path, 1)
    store.append(messages(1, 500))
    store.close()
    store = SqliteStore(path, 1)
    try:
        assert (store.first_seq(), store.last_seq()) == (500, 500)
        store.append(messages(501, 501))
        assert retained(store) == [501]
    finally:
        store.close()


def test_installed_snapshot_survives_reopen(path: str) -> None:
    store = SqliteStore(path, 10)
    store.append(messages(1, 5))
    alice = entry(90, kind="join")
    store.install(Base(100, 7, {"alice": alice}))
    store.close()
    store = SqliteStore(path, 10)
    try:
        assert (store.first_seq(), store.last_seq(), store.last_term()) == (101, 100, 7)
        assert store.base() == Base(100, 7, {"alice": alice})
        assert store.users() == {"alice": alice} and store.read(0, BIG) == []
        store.append(messages(101, 102))
        assert retained(store) == [101, 102]
    finally:
        store.close()


def version_1_file(path: str, entries: list[Entry], first: int) -> None:
    """A store as dsd wrote it before the base table (schema version 1), retaining `first`.. only."""
    store = SqliteStore(path, BIG)
    store.append(entries)
    store.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE base")
    db.execute("DROP TABLE base_presence")
    db.execute("DELETE FROM entries WHERE seq < ?", (first,))
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()


def test_an_untrimmed_version_1_file_is_upgraded_with_its_base(path: str) -> None:
    version_1_file(path, [entry(1, kind="join")] + messages(2, 20), 1)
    store = SqliteStore(path, 10)
    try:
        assert store.base() == Base(10, 3, {"alice": entry(1, kind="join")})  # trimmed on opening
        assert retained(store) == list(range(11, 21))
    finally:
        store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    db.close()


def test_a_trimmed_version_1_file_keeps_its_entries_but_has_no_base_until_it_installs_one(path: str) -> None:
    version_1_file(path, messages(1, 30), 11)
    store = SqliteStore(path, 10)
    try:
        assert store.base() is None
        assert (store.first_seq(), store.last_seq(), store.last_term()) == (21, 30, 3)
        store.append(messages(31, 40))
        assert store.base() is None and store.first_seq() > 21
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
