"""Clean handover: SIGTERM to the leader until every survivor reports the new leader.

    python -m bench.handover [--trials 20] [--sizes 3 5]

Same procedure as `bench.failover`, with SIGTERM instead of SIGKILL: the leader
multicasts LEAVE as it stops, its peers drop it at once and the highest survivor
declares itself. Split: *LEAVE seen* is signal -> the first survivor's
`view.leave`; *election* is that -> the last survivor's `leader` event.
"""

from __future__ import annotations

import signal

from bench.common import DEFAULT_TIMING, base_parser, before_run, median, met, ms1, p95, progress, run_main, table
from bench.failover import takeover_trials

GOAL = 0.050  # s, median, issue 2


def run(args) -> str:
    note = before_run(args.wait_quiet)
    progress(f"clean handover: sizes {args.sizes}, {args.trials} trials each, timings {DEFAULT_TIMING}")
    rows = []
    for size in args.sizes:
        results = takeover_trials(size, args.trials, signal.SIGTERM, seed=args.seed)
        totals = [r.total for r in results]
        ok = median(totals) <= GOAL
        rows.append([
            size, len(results), ms1(median(totals)), ms1(p95(totals)), ms1(min(totals)), ms1(max(totals)),
            ms1(median([r.detect for r in results])), ms1(median([r.elect for r in results])),
            f"≤ {GOAL * 1000:.0f} ms — {met(ok)}",
            f"{median(totals) / GOAL:.2f}",
        ])
    headers = ["daemons", "trials", "median", "p95", "min", "max",
               "signal → LEAVE seen (median)", "election (median)", "goal (median)", "median / goal"]
    return "\n".join([
        "### Clean handover (SIGTERM to the leader → every survivor reports the new leader)",
        "",
        f"Default timings. Command: `python -m bench.handover --trials {args.trials} "
        f"--sizes {' '.join(map(str, args.sizes))}`. {note}.",
        "",
        table(headers, rows),
        "",
        "Signal → LEAVE seen = the signal → the first survivor's `view.leave` (signal delivery, the "
        "leader's event loop waking up and multicasting LEAVE); election = that → the last survivor's "
        "`leader` event. Feed timestamps; p95 nearest-rank. No failure timeout is involved.",
    ])


def parser():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=20, help="handovers per cluster size (default 20)")
    p.add_argument("--sizes", type=int, nargs="+", default=[3, 5], help="cluster sizes (default 3 5)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random pause between trials")
    return p


def main(argv=None) -> int:
    return run_main(run, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
