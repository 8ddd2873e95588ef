"""The link codec: MessagePack against JSON for the same typed messages (msgspec both ways).

    python -m bench.codecs [--entries N] [--rounds R]

An APPEND of N chat entries (64-byte texts), encoded once and decoded with validation, as a
follower does; figures in microseconds per entry and bytes per message.
"""

from __future__ import annotations

import argparse
import time

import msgspec

from dsd import linkwire
from dsd.core.link_messages import AnyLinkMessage, Append


def _append(count: int) -> Append:
    entry = {"seq": 0, "term": 7, "kind": "message", "user": "alice", "text": "x" * 64, "id": "m-1",
             "server": "h1", "session": "alice-session-0001", "time": 1_765_000_000.123456}
    return Append("n3", 7, "c0ffee", 999, 7, [dict(entry, seq=1000 + i, id=f"m-{i}") for i in range(count)], 999)


def _per_entry(call, rounds: int, count: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        call()
    return (time.perf_counter() - start) / rounds / count * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=64, help="entries per APPEND (default 64)")
    parser.add_argument("--rounds", type=int, default=3000, help="messages encoded and decoded (default 3000)")
    args = parser.parse_args(argv)
    message = _append(args.entries)
    json_decoder = msgspec.json.Decoder(AnyLinkMessage)

    def json_decode(data: bytes) -> AnyLinkMessage:
        decoded = json_decoder.decode(data)
        linkwire.check(decoded)
        return decoded

    codecs = {
        "MessagePack (dsd.linkwire)": (lambda: linkwire.encode(message), linkwire.decode),
        "JSON (msgspec.json, the same types)": (lambda: msgspec.json.encode(message), json_decode),
    }
    print(f"APPEND of {args.entries} entries, {args.rounds} rounds\n")
    print("| codec | bytes per message | encode µs/entry | decode + validate µs/entry |")
    print("|---|---|---|---|")
    for name, (encode, decode) in codecs.items():
        data = encode()
        assert decode(data) == message
        print(f"| {name} | {len(data):,} | {_per_entry(encode, args.rounds, args.entries):.2f} "
              f"| {_per_entry(lambda: decode(data), args.rounds, args.entries):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
