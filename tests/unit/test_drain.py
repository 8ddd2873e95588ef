"""The control socket served from the event loop's reader (`Drain`): every request answered,
at once or deferred, however many arrive together."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from dsd.io.control import YIELD_EVERY, ControlServer, cancel

COUNT = 3 * YIELD_EVERY + 7  # more than one wake-up's worth


def test_a_burst_of_requests_gets_every_reply_immediate_and_deferred(tmp_path: Path) -> None:
    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        context = zmq.Context()
        server: ControlServer

        def handle(payload: bytes, envelope: list[bytes], admin: bool) -> bytes | None:
            if int(payload) % 2:
                return b"now " + payload
            loop.call_soon(server.reply, envelope, b"later " + payload)  # a send outside the drain
            return None

        server = ControlServer(context, f"ipc://{tmp_path}/ctl", handle)
        task = asyncio.ensure_future(server.serve())
        client_context = zmq.asyncio.Context()
        client = client_context.socket(zmq.DEALER)
        client.connect(server.endpoint)
        try:
            for i in range(COUNT):
                await client.send_multipart([b"", str(i).encode()])
            replies = [(await asyncio.wait_for(client.recv_multipart(), 10))[1] for _ in range(COUNT)]
            await client.send_multipart([b"no delimiter"])
            bad = json.loads((await asyncio.wait_for(client.recv_multipart(), 10))[-1])
            assert bad["error"]["code"] == "bad_request" and server.rejected == 1
            return replies
        finally:
            client.close(linger=0)
            client_context.term()
            await cancel(task)
            server.close()
            context.term()

    replies = asyncio.run(main())
    expected = {(b"now " if i % 2 else b"later ") + str(i).encode() for i in range(COUNT)}
    assert len(replies) == COUNT and set(replies) == expected


def test_a_handler_that_raises_ends_serve_with_its_error(tmp_path: Path) -> None:
    async def main() -> None:
        context = zmq.Context()

        def handle(payload: bytes, envelope: list[bytes], admin: bool) -> bytes | None:
            raise RuntimeError("boom")

        server = ControlServer(context, f"ipc://{tmp_path}/ctl", handle)
        client = context.socket(zmq.DEALER)
        client.connect(server.endpoint)
        client.send_multipart([b"", b"x"])
        try:
            await asyncio.wait_for(server.serve(), 10)
        finally:
            client.close(linger=0)
            server.close()
            context.term()

    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(main())


def test_done_follows_each_wake_ups_messages_and_no_message_waits_after_the_last_done(tmp_path: Path) -> None:
    """The daemon ends its batch of chat inputs in `done`: every message handled must be
    followed by a `done`, and a flood is cut into batches of at most YIELD_EVERY."""
    async def main() -> list[str]:
        context = zmq.Context()
        calls: list[str] = []

        def handle(payload: bytes, envelope: list[bytes], admin: bool) -> bytes | None:
            calls.append("handle")
            return b"ok"

        server = ControlServer(context, f"ipc://{tmp_path}/ctl", handle, done=lambda: calls.append("done"))
        task = asyncio.ensure_future(server.serve())
        client_context = zmq.asyncio.Context()
        client = client_context.socket(zmq.DEALER)
        client.connect(server.endpoint)
        try:
            for i in range(COUNT):
                await client.send_multipart([b"", str(i).encode()])
            for _ in range(COUNT):
                await asyncio.wait_for(client.recv_multipart(), 10)
            return calls
        finally:
            client.close(linger=0)
            client_context.term()
            await cancel(task)
            server.close()
            context.term()

    calls = asyncio.run(main())
    assert calls.count("handle") == COUNT and calls[-1] == "done"
    batches = "".join("h" if call == "handle" else "d" for call in calls).split("d")
    assert max(len(batch) for batch in batches) <= YIELD_EVERY
