"""chat.send_many: one reply for a batch of messages, each answered as chat.send would be."""

from __future__ import annotations

import json

import pytest

from dsd.commands import MAX_SEND_MANY, Request, RequestError, batch_of, parse_request


def test_the_batch_replies_once_every_message_has_its_answer_in_the_order_sent() -> None:
    first, second, third = batch_of(Request([b"client"], "r7"), 3)
    assert second.settle({"seq": 12}, None) is None
    assert first.settle(None, ("rate_limited", "slow down")) is None
    assert second.settle({"seq": 99}, None) is None  # answered already: ignored
    reply = json.loads(third.settle({"seq": 13}, None))
    assert reply == {"ok": True, "rid": "r7", "result": {"results": [
        {"code": "rate_limited", "message": "slow down"}, {"seq": 12}, {"seq": 13}]}}


def test_send_many_takes_1_to_256_messages_of_exactly_id_and_text() -> None:
    def parse(messages: object) -> dict:
        payload = {"cmd": "chat.send_many", "args": {"user": "u", "session": "s", "messages": messages}}
        return parse_request(json.dumps(payload).encode())[1]

    good = {"id": "m1", "text": "hi"}
    assert parse([good] * MAX_SEND_MANY)["messages"] == [good] * MAX_SEND_MANY
    for bad in ([], [good] * (MAX_SEND_MANY + 1), [{"id": "m1"}], [{**good, "x": 1}], [{"id": 1, "text": "hi"}],
                "m1", [good, "m2"]):
        with pytest.raises(RequestError) as caught:
            parse(bad)
        assert caught.value.code == "bad_args" and caught.value.message.startswith("messages must be"), bad
