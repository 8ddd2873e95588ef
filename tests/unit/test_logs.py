"""Log lines: JSON lines with fields, and the names and term on every peer and election line."""

from __future__ import annotations

import io
import json
import logging
from typing import Iterator

import pytest

from dsd import logs
from dsd.core.actions import Log
from tests.unit.drivers import Driver, hb


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        yield stream
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_time_level_node_event_and_fields(captured):
    logs.setup("alpha", "info", logs.JSON, captured)
    logging.getLogger("dsd").info("leader is now %s (term %d)", "c", 2,
                                  extra={"fields": {"leader": "c", "term": 2, "event": "not this"}})
    logging.getLogger("dsd").debug("below the level")
    [line] = lines(captured)
    assert line["event"] == "leader is now c (term 2)"  # a field cannot hide the message
    assert (line["level"], line["node"], line["logger"], line["leader"], line["term"]) == ("info", "alpha", "dsd", "c", 2)
    assert line["time"].endswith("Z") and len(line["time"]) == len("2026-11-30T10:00:00.123Z")


def test_text_lines_are_unchanged_and_restyle_switches_to_json(captured):
    logs.setup("alpha", "info", logs.TEXT, captured)
    logging.getLogger("dsd").info("plain", extra={"fields": {"term": 1}})
    assert captured.getvalue().rstrip().endswith("alpha INFO dsd: plain")
    logs.restyle("alpha", logs.JSON)
    logging.getLogger("dsd").info("now json", extra={"fields": {"term": 1}})
    assert json.loads(captured.getvalue().splitlines()[-1])["term"] == 1


def test_peer_events_are_logged_with_the_peer_the_leader_and_the_term(captured):
    logs.setup("alpha", "info", logs.JSON, captured)
    log = logging.getLogger("dsd")
    logs.peer_event(log, "view.join", {"name": "b", "address": "10.0.0.2:5008", "priority": 100,
                                       "incarnation": 7, "restarted": False}, 3, "c")
    logs.peer_event(log, "view.dead", {"name": "b", "silence": 1.0123}, 3, "c")
    logs.peer_event(log, "leader", {"leader": "c", "term": 3, "previous": None}, 3, "c")  # not a peer event
    join, dead = lines(captured)
    assert join["event"] == "peer b joined from 10.0.0.2:5008"
    assert (join["peer"], join["change"], join["leader"], join["term"]) == ("b", "join", "c", 3)
    assert dead["event"] == "peer b is dead (silent for 1.01s)"
    assert (dead["peer"], dead["silence"], dead["term"]) == ("b", 1.012, 3)


def test_every_election_log_line_of_the_core_names_the_leader_and_the_term():
    """c follows a; a dies; b (higher than c) stays alive but never answers, so c takes over."""
    d = Driver("c", 50)
    d.receive(hb("a", 200, term=4, leader="a"), 0.0625)
    d.run(1.0, [hb("b", 100, term=4, leader="a")])
    d.run(4.0, [hb("b", 100, term=4, state="candidate")])
    logged = [action for _, action in d.history if isinstance(action, Log)]
    texts = [log.text for log in logged]
    assert "leader is now a (term 4)" in texts and "no ANSWER from any higher node: taking over" in texts, texts
    for log in logged:
        assert "term" in log.fields and "leader" in log.fields, log
    became = next(log for log in logged if log.text == "leader is now c (term 5)")
    assert became.fields == {"leader": "c", "previous": None, "term": 5}
