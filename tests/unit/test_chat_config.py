"""The chat's configurations (`dsd.core.chat.config`): the quorum rule with its tie-breaker,
joint configurations, and the strict parsing of a config entry's text.

The expected answers are written out as tables, not computed with the rule under test.
"""

from __future__ import annotations

import itertools
import json

import pytest

from dsd.core.chat.config import MAX_VOTERS, Config, parse, quorum_of, top


def voters(names: str, priority: int = 100) -> dict[str, int]:
    """One voter per letter, all of one priority: the tie-breaker is then the last name."""
    return {name: priority for name in names}


# (voters, the names held, a quorum?) for 1..6 voters of equal priority (top = the last letter).
QUORUM_TABLE = [
    ("a", "", False),
    ("a", "a", True),
    ("ab", "", False),
    ("ab", "a", False),  # half, without the top-ranked voter
    ("ab", "b", True),  # half, with it
    ("ab", "ab", True),
    ("abc", "a", False),
    ("abc", "c", False),  # the tie-breaker plays no part in an odd configuration
    ("abc", "ab", True),
    ("abc", "bc", True),
    ("abc", "abc", True),
    ("abcd", "d", False),
    ("abcd", "ab", False),
    ("abcd", "bc", False),
    ("abcd", "ad", True),
    ("abcd", "cd", True),
    ("abcd", "abc", True),
    ("abcd", "abcd", True),
    ("abcde", "ab", False),
    ("abcde", "de", False),
    ("abcde", "abc", True),
    ("abcde", "cde", True),
    ("abcdef", "ef", False),
    ("abcdef", "abc", False),
    ("abcdef", "cde", False),
    ("abcdef", "abf", True),
    ("abcdef", "def", True),
    ("abcdef", "abcd", True),
    ("abcdef", "abcdef", True),
]


@pytest.mark.parametrize(("names", "held", "expected"), QUORUM_TABLE)
def test_quorum_of_follows_the_table(names: str, held: str, expected: bool) -> None:
    assert quorum_of(voters(names), set(held)) is expected
    assert Config("c", voters(names)).is_quorum(set(held)) is expected


def test_names_that_are_not_voters_do_not_count() -> None:
    assert not quorum_of(voters("abc"), {"a", "x", "y", "z"})
    assert not quorum_of(voters("abcd"), {"a", "x", "y"})


def test_no_voters_is_never_a_quorum() -> None:
    assert not quorum_of({}, set())
    assert not quorum_of({}, {"a"})


def test_the_tie_breaker_is_the_highest_priority_then_the_highest_name() -> None:
    by_priority = {"a": 200, "b": 100}
    assert top(by_priority) == "a"
    assert quorum_of(by_priority, {"a"}) and not quorum_of(by_priority, {"b"})
    four = {"a": 100, "b": 300, "c": 100, "d": 100}
    assert top(four) == "b"
    assert quorum_of(four, {"a", "b"}) and not quorum_of(four, {"c", "d"})
    assert top({"x": 5, "y": 5}) == "y"


@pytest.mark.parametrize("count", range(1, 7))
def test_any_two_quorums_of_one_configuration_share_a_voter(count: int) -> None:
    names = "abcdef"[:count]
    mixed = {name: priority for name, priority in zip(names, (100, 300, 100, 200, 100, 300))}
    for config in (voters(names), mixed):
        subsets = [set(c) for r in range(count + 1) for c in itertools.combinations(names, r)]
        quorums = [s for s in subsets if quorum_of(config, s)]
        assert quorums, "the whole configuration is a quorum"
        for one, other in itertools.combinations(quorums, 2):
            assert one & other, (config, one, other)
        # exactly one of each complementary pair is a quorum in an even configuration
        if count % 2 == 0:
            for s in subsets:
                if len(s) * 2 == count:
                    assert quorum_of(config, s) != quorum_of(config, set(names) - s)


def test_a_joint_configuration_needs_a_quorum_of_both_sides() -> None:
    joint = Config("c", voters("abcd"), old=voters("abc"))
    assert joint.joint and joint.everyone() == set("abcd")
    assert not joint.is_quorum({"a", "b"})  # old: 2 of 3; new: 2 of 4 without d
    assert not joint.is_quorum({"a", "d"})  # new: 2 of 4 with d; old: 1 of 3
    assert not joint.is_quorum({"c", "d"})  # the disjoint quorum the tie-breaker gives the new side
    assert joint.is_quorum({"a", "b", "d"})
    assert joint.is_quorum({"a", "c", "d"})
    assert joint.is_quorum(set("abcd"))
    plain = Config("c", voters("abcd"))
    assert plain.is_quorum({"c", "d"}) and not plain.joint and plain.everyone() == set("abcd")


def test_a_joint_removal_needs_the_old_voters_too() -> None:
    joint = Config("c", voters("ab"), old=voters("abc"))  # removing c
    assert joint.everyone() == set("abc")
    assert joint.is_quorum({"a", "b"})
    assert not joint.is_quorum({"b"})  # new: half with the top b; old: 1 of 3
    assert not joint.is_quorum({"a", "c"})  # old: 2 of 3; new: half without the top
    assert joint.is_quorum({"b", "c"})  # both: half of the new with b, 2 of the 3 old


def test_shortfall_says_how_many_voters_this_side_holds() -> None:
    config = Config("c", voters("abcde"))
    assert config.shortfall({"a", "x"}) == "this daemon's side of the network holds 1 of the chat's 5 voters"
    joint = Config("c", voters("abcd"), old=voters("ab"))
    assert joint.shortfall({"a", "b"}) == "this daemon's side of the network holds 2 of the chat's 4 voters"
    assert joint.shortfall({"a", "c", "d"}) == "this daemon's side of the network holds 1 of the chat's 2 voters"


def test_text_is_canonical_json_and_parses_back() -> None:
    config = Config("my-cluster", {"b": 7, "a": 100}, old={"a": 100})
    assert config.text() == '{"cluster":"my-cluster","voters":[["a",100],["b",7]],"old":[["a",100]]}'
    assert parse(config.text()) == config
    plain = Config("x1", {"n.a_m-e": 0, "z": 2**31})
    assert parse(plain.text()) == plain and json.loads(plain.text())["old"] is None


GOOD = {"cluster": "c", "voters": [["a", 1]], "old": None}


def bad(**changes: object) -> str:
    return json.dumps({**GOOD, **changes})


@pytest.mark.parametrize("text", [
    "",
    "not json",
    "[]",
    '"config"',
    json.dumps({"cluster": "c", "voters": [["a", 1]]}),  # no old
    json.dumps({**GOOD, "extra": 1}),
    bad(cluster=""),
    bad(cluster="Upper"),
    bad(cluster="has space"),
    bad(cluster="x" * 65),
    bad(cluster=7),
    bad(cluster=None),
    bad(voters=[]),
    bad(voters=None),
    bad(voters="a"),
    bad(voters={"a": 1}),
    bad(voters=[["a"]]),
    bad(voters=[["a", 1, 2]]),
    bad(voters=[("a", 1), ["a", 2]]),  # a voter twice
    bad(voters=[["", 1]]),
    bad(voters=[["a b", 1]]),
    bad(voters=[["n" * 65, 1]]),
    bad(voters=[[1, 1]]),
    bad(voters=[["a", -1]]),
    bad(voters=[["a", 2**31 + 1]]),
    bad(voters=[["a", 1.0]]),
    bad(voters=[["a", True]]),
    bad(voters=[["a", "1"]]),
    bad(voters=["a"]),
    bad(old=[]),
    bad(old=[["a", -1]]),
    bad(old="a"),
    bad(voters=[[f"v{i}", 1] for i in range(MAX_VOTERS + 1)]),
])
def test_parse_refuses_what_is_not_a_configuration(text: str) -> None:
    with pytest.raises(ValueError):
        parse(text)


def test_parse_takes_the_largest_configuration_allowed() -> None:
    many = [[f"v{i}", 1] for i in range(MAX_VOTERS)]
    assert len(parse(bad(voters=many)).voters) == MAX_VOTERS
