"""Who votes on the chat log: the configuration, carried by the log itself, and its quorum rule.

A configuration is an entry of kind ``config`` in the log; its text is JSON:
``{"cluster": ID, "voters": [[name, priority], ...], "old": null | [[name, priority], ...]}``.
Every daemon obeys the latest configuration in its log, committed or not (Raft §6).

The quorum rule, as data:

| configuration            | a set of daemons S is a quorum when                              |
|--------------------------|------------------------------------------------------------------|
| n voters, n odd          | S holds more than n/2 of them                                    |
| n voters, n even         | S holds more than n/2, or exactly n/2 and the highest-ranked one |
| joint (``old`` not null) | S is a quorum of ``voters`` and a quorum of ``old``              |

The even case is Corosync's auto_tie_breaker: of two halves, only the one holding the
highest-ranked voter (rank = (priority, name), as for the bully election) goes on. Any two
quorums of one configuration share a voter, which is all the safety argument needs.

Membership changes go through a joint configuration (Raft's joint consensus): the sequencer
appends ``{voters: new, old: current}``; while that is the latest, every decision needs a
quorum of both; once it is committed the sequencer appends ``{voters: new, old: null}``.
Joint consensus rather than single-server changes because the tie-breaker breaks the
overlap single-server changes rely on: {a, b, c} and {a, b, c, d} with d ranked highest
have the disjoint quorums {a, b} and {c, d}.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

Voters = dict[str, int]  # name -> priority, as when the voter was added
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
CLUSTER = re.compile(r"[a-z0-9-]{1,64}\Z")
MAX_VOTERS = 1000


def quorum_of(voters: Voters, names: Collection[str]) -> bool:
    """Whether `names` hold a quorum of `voters` (the table above, one configuration)."""
    if not voters:
        return False
    held = sum(1 for voter in voters if voter in names)
    if 2 * held != len(voters):
        return 2 * held > len(voters)
    return top(voters) in names


def top(voters: Voters) -> str:
    """The highest-ranked voter: the tie-breaker of an even configuration."""
    return max(voters, key=lambda name: (voters[name], name))


@dataclass(frozen=True)
class Config:
    """One configuration: the cluster it belongs to, its voters, and the previous voters while joint."""

    cluster: str
    voters: Voters
    old: Voters | None = None

    @property
    def joint(self) -> bool:
        return self.old is not None

    def everyone(self) -> set[str]:
        """Every daemon whose vote counts now (both sides of a joint configuration)."""
        return set(self.voters) | set(self.old or ())

    def is_quorum(self, names: Collection[str]) -> bool:
        return quorum_of(self.voters, names) and (self.old is None or quorum_of(self.old, names))

    def shortfall(self, names: Collection[str]) -> str:
        """Why `names` are no quorum, for a client: how many of the voters they hold."""
        voters = self.voters if not quorum_of(self.voters, names) or self.old is None else self.old
        held = sum(1 for voter in voters if voter in names)
        return f"this daemon's side of the network holds {held} of the chat's {len(voters)} voters"

    def text(self) -> str:
        body: dict[str, Any] = {
            "cluster": self.cluster,
            "voters": sorted([name, priority] for name, priority in self.voters.items()),
            "old": None if self.old is None else sorted([n, p] for n, p in self.old.items()),
        }
        return json.dumps(body, separators=(",", ":"))


def parse(text: str) -> Config:
    """The configuration a config entry's text holds; ValueError if it is not one."""
    try:
        body = json.loads(text)
    except ValueError:
        raise ValueError("config: not JSON") from None
    if not isinstance(body, dict) or set(body) != {"cluster", "voters", "old"}:
        raise ValueError("config: keys must be cluster, voters, old")
    cluster = body["cluster"]
    if not isinstance(cluster, str) or not CLUSTER.match(cluster):
        raise ValueError("config: bad cluster id")
    voters = _voters(body["voters"])
    old = None if body["old"] is None else _voters(body["old"])
    return Config(cluster, voters, old)


def _voters(value: object) -> Voters:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_VOTERS:
        raise ValueError("config: voters must be a non-empty list")
    voters: Voters = {}
    for pair in value:
        if (not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str)
                or not NAME.match(pair[0]) or type(pair[1]) is not int or not 0 <= pair[1] <= 2**31):
            raise ValueError("config: a voter is [name, priority]")
        if pair[0] in voters:
            raise ValueError("config: a voter twice")
        voters[pair[0]] = pair[1]
    return voters
