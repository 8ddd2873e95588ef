"""`[log] format = "json"` on real daemons: every line is a JSON object, peer and election lines carry fields."""

from __future__ import annotations

import json

from tests.cluster import FAST, wait_until


def test_json_logs_name_the_peer_the_leader_and_the_term(make_cluster):
    cluster = make_cluster(2)
    a = cluster.add("a", priority=101, log={"level": "info", "format": "json"})
    b = cluster.add("b", priority=102, log={"level": "info", "format": "json"})
    term, _ = cluster.wait_agreed("b")
    b.kill()

    def lines() -> list[dict]:
        return [json.loads(line) for line in a.logs().splitlines()]  # every line must parse

    wait_until(lambda: any(line["event"].startswith("leader is now a") for line in lines()), 10,
               what="a taking over in its log")
    logged = lines()
    assert all({"time", "level", "node", "event"} <= set(line) and line["node"] == "a" for line in logged)
    join = next(line for line in logged if line.get("change") == "join")
    assert (join["peer"], join["event"].split(" from ")[0]) == ("b", "peer b joined")
    became = next(line for line in logged if line["event"].startswith("leader is now a"))
    assert became["leader"] == "a" and became["term"] > term
    dead = next(line for line in logged if line.get("change") == "dead")
    # The fields say where the daemon stands once it has acted on the death: a leads, in the new term.
    assert (dead["peer"], dead["leader"], dead["term"]) == ("b", "a", became["term"])
    assert dead["silence"] >= FAST["failure_timeout"]
    followed = next(line for line in logged if line["event"] == f"leader is now b (term {term})")
    assert followed["leader"] == "b" and followed["term"] == term
