"""Coupled chaos: random partitions, restarts, long crashes and link loss, with the real election
driving the chat, then a heal; the log must be one log and nothing acknowledged lost.

A long crash outlasts remove_dead_after, so the configuration shrinks, and the daemon's return
grows it again. `python -m tests.sim.chaos --seeds 1000 --daemons 3 5 7` prints one line per
size with the violations found; tests/sim/test_chat_safety.py runs a few seeds of each.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import replace

from tests.chatsim import LIMITS
from tests.coupled import Coupled

CHAOS_LIMITS = replace(LIMITS, remove_dead_after=1.0)


def run(seed: int, n: int, steps: int = 60, chat_loss: float = 0.01) -> str | None:
    """One schedule; None if every invariant holds, else what broke and the faults injected."""
    names = list("abcdefghi"[:n])
    sim = Coupled(names, CHAOS_LIMITS, seed=seed, chat_loss=chat_loss)
    rng = random.Random(seed)
    sim.run_for(0.5)
    users = {f"u{x}": x for x in names}
    for user, server in users.items():
        sim.chat.join(user, server)
    sim.run_for(0.3)
    faults: list[str] = []
    down: dict[str, int] = {}  # crashed daemon -> the step it comes back at
    for step in range(steps):
        for user, server in users.items():
            daemon = sim.chat.daemons[server]
            if daemon.alive and user in daemon.chat.sessions:
                sim.chat.send(user, f"{user} {step}")
        for name, back in list(down.items()):
            if step >= back:
                del down[name]
                sim.restart(name)
                faults.append(f"{step}:restart {name}")
        r = rng.random()
        if r < 0.15:
            groups: list[set[str]] = [set() for _ in range(rng.choice((2, 2, 3)))]
            for name in names:
                groups[rng.randrange(len(groups))].add(name)
            sim.partition(*groups)
            faults.append(f"{step}:partition {[sorted(g) for g in groups]}")
        elif r < 0.22:
            sim.heal()
            faults.append(f"{step}:heal")
        elif r < 0.28 and len(down) < (n - 1) // 2:
            name = rng.choice([x for x in names if x not in down])
            sim.crash(name)
            down[name] = step + rng.choice((1, 1, 2, 15))  # 15 steps: longer than remove_dead_after
            faults.append(f"{step}:crash {name}")
        sim.run_for(rng.uniform(0.02, 0.15))
    for name in down:
        sim.restart(name)
    sim.heal()
    sim.chat.loss = 0.0
    sim.run_for(4.0)
    try:
        sim.chat.check_one_order()
        sim.chat.check_acked_committed_everywhere()
    except AssertionError as error:
        return f"{error} | faults: {faults}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000, help="seeds per size (default 1000)")
    parser.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--daemons", type=int, nargs="+", default=[3, 5, 7], help="cluster sizes (default 3 5 7)")
    args = parser.parse_args(argv)
    failed = 0
    for n in args.daemons:
        started = time.monotonic()
        bad = []
        for seed in range(args.first, args.first + args.seeds):
            result = run(seed, n)
            if result is not None:
                bad.append(seed)
                print(f"n={n} seed={seed}: {result[:600]}", flush=True)
        failed += len(bad)
        print(f"n={n}: {len(bad)} violations in {args.seeds} seeds ({time.monotonic() - started:.0f} s) {bad}",
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
