"""`python -m dsd.demo`: a local cluster of daemons on the loopback interface.

It starts N real `dsd` processes (multicast on 127.0.0.1 with TTL 0, so nothing
leaves the machine), waits until they agree on a leader, prints `dsctl view`
and the commands to try, and keeps running until Ctrl-C, then stops every
daemon cleanly (SIGTERM, by pid) and removes its files.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dsctl.cli import render_view
from dsd.client import ControlClient, DaemonError, Unreachable

NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]


def tool(name: str) -> str:
    """The console script `name` next to this Python (a venv's bin/), so the line works unactivated."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    return shlex.quote(path) if os.path.exists(path) else name


def write_config(directory: Path, name: str, port: int) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(
        f'[node]\nname = "{name}"\nruntime_dir = "{directory}/{name}/run"\nstate_dir = "{directory}/{name}/state"\n\n'
        f'[cluster]\ninterface = "127.0.0.1"\nttl = 0\nport = {port}\n'
    )
    return path


def agreed_view(configs: dict[str, Path], directory: Path) -> dict | None:
    """The first daemon's view once every daemon sees all of them and the same leader."""
    views = []
    for name in configs:
        try:
            with ControlClient(f"ipc://{directory}/{name}/run/dsd.ctl", timeout=0.3, retries=1) as client:
                views.append(client.request("view"))
        except (Unreachable, DaemonError):
            return None
    leaders = {(v["term"], v["leader"]) for v in views}
    if len(leaders) != 1 or views[0]["leader"] is None:
        return None
    if any(len(v["servers"]) != len(configs) for v in views):
        return None
    return views[0]


def stop(processes: dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsd.demo", description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--count", type=int, default=3, choices=range(1, len(NAMES) + 1), metavar="N",
                        help="number of daemons (default 3)")
    parser.add_argument("--port", type=int, default=5018, help="multicast port on loopback (default 5018)")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="dsd-demo-") as tmp:
        directory = Path(tmp)
        configs = {name: write_config(directory, name, args.port) for name in NAMES[: args.count]}
        processes: dict[str, subprocess.Popen] = {}
        try:
            for name, config in configs.items():
                log = open(directory / f"{name}.log", "wb")
                processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "dsd", "-c", str(config)], stdout=log, stderr=log
                )
            deadline = time.monotonic() + 15
            view = None
            while view is None:
                dead = [n for n, p in processes.items() if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    reason = f"{', '.join(dead)} exited" if dead else "no agreement within 15 s"
                    print(f"demo: {reason}; logs:", file=sys.stderr)
                    for name in configs:
                        print((directory / f"{name}.log").read_text(errors="replace"), file=sys.stderr)
                    return 1
                view = agreed_view(configs, directory)
                if view is None:
                    time.sleep(0.05)
            names = list(configs)
            first = configs[names[0]]
            dsctl = f"{tool('dsctl')} -c {shlex.quote(str(first))}"
            dschat = [f"{tool('dschat')} -c {shlex.quote(str(configs[name]))}" for name in names[:2]]
            pids = " ".join(f"{name}={process.pid}" for name, process in processes.items())
            print(f"{args.count} dsd daemons on loopback ({pids}); logs in {directory}\n")
            print(f"$ {dsctl} view")
            print(render_view(view))
            print(f"\nTry:  {dsctl} watch        (events, in another terminal)")
            print(f"      {dsctl} leader | stats | elect")
            print(f"      kill -9 {processes[view['leader']].pid}    (the leader: watch the failover)")
            print(f"Chat: {dschat[0]} alice")
            print(f"      {dschat[-1]} bob      (in another terminal: every message reaches everyone)")
            print("\nCtrl-C stops every daemon.", flush=True)
            reported: set[str] = set()
            while True:
                for name, process in processes.items():
                    if name not in reported and process.poll() is not None:
                        reported.add(name)
                        print(f"demo: {name} exited with code {process.returncode}", flush=True)
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            stop(processes)
        print(f"\nstopped {len(processes)} daemons")
    return 0


if __name__ == "__main__":
    sys.exit(main())
