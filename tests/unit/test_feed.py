"""The feed: consecutive events of one topic travel as one message `[topic, json, json, ...]`."""

from __future__ import annotations

import json
from pathlib import Path

import zmq

from dsd.io.control import FEED_BATCH, Feed, runs


def test_consecutive_events_of_one_topic_are_one_run_and_order_is_kept() -> None:
    events = [("chat.message", {"seq": 1}), ("chat.message", {"seq": 2}), ("chat.presence", {"seq": 3}),
              ("chat.message", {"seq": 4}), ("view.join", {"peer": "b"}), ("view.join", {"peer": "c"})]
    assert runs(events) == [
        ("chat.message", [{"seq": 1}, {"seq": 2}]), ("chat.presence", [{"seq": 3}]),
        ("chat.message", [{"seq": 4}]), ("view.join", [{"peer": "b"}, {"peer": "c"}]),
    ]
    assert runs([]) == []


def test_a_run_is_one_message_of_its_events_each_stamped_with_topic_and_node(tmp_path: Path) -> None:
    context = zmq.Context()
    endpoint = f"ipc://{tmp_path}/feed"
    feed = Feed(context, endpoint, "n1")
    sub = context.socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.SUBSCRIBE, b"chat.message")
        sub.connect(endpoint)
        for _ in range(200):  # a SUB misses what is published before its subscription reaches the PUB
            feed.publish("chat.message", [{"seq": 0}])
            if sub.poll(20, zmq.POLLIN):
                break
        while sub.poll(50, zmq.POLLIN):
            sub.recv_multipart()
        feed.publish("chat.message", [{"seq": 1, "text": "a"}, {"seq": 2, "text": "é"}])
        assert sub.poll(2000, zmq.POLLIN)
        topic, *bodies = sub.recv_multipart()
        events = [json.loads(body) for body in bodies]
        assert topic == b"chat.message"
        assert [(e["topic"], e["node"], e["seq"], e["text"]) for e in events] == [
            ("chat.message", "n1", 1, "a"), ("chat.message", "n1", 2, "é")]
        assert events[0]["time"] == events[1]["time"]
        feed.publish("chat.message", [{"seq": seq} for seq in range(3, 3 + 2 * FEED_BATCH + 3)])
        sizes, seqs = [], []
        while sub.poll(500, zmq.POLLIN):
            bodies = sub.recv_multipart()[1:]
            sizes.append(len(bodies))
            seqs += [json.loads(body)["seq"] for body in bodies]
        assert sizes == [FEED_BATCH, FEED_BATCH, 3] and seqs == list(range(3, 3 + 2 * FEED_BATCH + 3))
    finally:
        sub.close(linger=0)
        feed.close()
        context.term()

