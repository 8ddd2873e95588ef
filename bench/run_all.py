"""Run every benchmark and print all their tables (markdown, ready for the README).

    python -m bench.run_all [--quick] [--only NAME ...] [--skip NAME ...] [--output FILE] [--wait-quiet S]
    python -m bench ...                       (the same)

Order: election_messages (simulated, seconds), failover, handover, coldstart, rss, chat,
unicast_cost (simulated and timed in-process, minutes at 200 daemons), spurious (the 5-minute one
last, alone). failover and coldstart over unicast: `python -m bench.failover --unicast` etc.
Each runs with its own defaults (see `python -m bench.NAME --help`); `--quick`
uses fewer trials and a 30 s spurious-election run, for a check in about 3 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
import time

from bench import chat, coldstart, failover, handover, rss, spurious, unicast_cost
from bench.common import BenchError, progress, stop_on_sigterm


class _PrintingBench:
    """Adapts a benchmark whose `main(argv)` prints its tables (bench/election_messages.py)."""

    def __init__(self, module_name: str) -> None:
        self.module_name = module_name

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser()
        parser.add_argument("--wait-quiet", type=float, default=0.0)
        return parser

    def run(self, args: argparse.Namespace) -> str:
        module = importlib.import_module(self.module_name)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = module.main([])
        if code:
            raise BenchError(f"{self.module_name} exited with {code}")
        return out.getvalue().strip()


BENCHES = {
    "election_messages": _PrintingBench("bench.election_messages"),
    "failover": failover,
    "handover": handover,
    "coldstart": coldstart,
    "rss": rss,
    "chat": chat,
    "unicast_cost": unicast_cost,
    "spurious": spurious,
}
QUICK = {
    "election_messages": [],
    "failover": ["--trials", "5"],
    "handover": ["--trials", "5"],
    "coldstart": ["--trials", "2"],
    "rss": ["--settle", "5"],
    "chat": ["--quick"],
    "unicast_cost": ["--sizes", "10", "50"],
    "spurious": ["--duration", "30", "--idle", "10"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials, 30 s spurious run")
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), default=None, help="run only these")
    parser.add_argument("--skip", nargs="+", choices=list(BENCHES), default=[], help="leave these out")
    parser.add_argument("--output", metavar="FILE", help="also write the tables to FILE")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help="before each benchmark wait up to S s for other work on the machine to stop")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    names = [n for n in (args.only or BENCHES) if n not in args.skip]
    sections = []
    started = time.monotonic()
    try:
        for name in names:
            module = BENCHES[name]
            bench_args = module.parser().parse_args(
                (QUICK[name] if args.quick else []) + ["--wait-quiet", str(args.wait_quiet)])
            progress(f"== {name}")
            section = module.run(bench_args)
            sections.append(section)
            print(section + "\n", flush=True)
    except KeyboardInterrupt:
        progress("bench: interrupted; every daemon stopped and namespace deleted")
        return 130
    except BenchError as error:
        progress(f"bench: {name}: {error}")
        return 1
    finally:
        if args.output and sections:
            with open(args.output, "w") as f:
                f.write("\n\n".join(sections) + "\n")
    progress(f"all done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
