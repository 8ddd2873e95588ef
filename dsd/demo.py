"""`python -m dsd.demo`: a local cluster of daemons on the loopback interface.

It starts N real `dsd` processes (multicast on 127.0.0.1 with TTL 0, so nothing
leaves the machine), waits until they agree on a leader, prints `dsctl view`
and the commands to try, and keeps running until Ctrl-C, then stops every
daemon cleanly (SIGTERM, by pid) and removes its files.

It always stops, and leaves nothing behind: SIGINT and SIGTERM are blocked and
taken only where the demo waits (`sigtimedwait`), so a Ctrl-C can never land in
the middle of starting or stopping a daemon; a daemon that has not left within
STOP_GRACE seconds is killed; and each daemon asks the kernel for SIGTERM when
the demo dies (PR_SET_PDEATHSIG), so even a SIGKILLed demo takes them with it.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from dsctl.cli import render_view
from dsd.client import ControlClient, DaemonError, Unreachable

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
STOP_GRACE = 1.5  # seconds a daemon has to leave before it is killed: Ctrl-C ends everything within 2 s
SETTLE_TIMEOUT = 15.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

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
    """The first daemon's view once the cluster has settled, else None.

    Settled: every daemon sees all of them alive, and every row of every view names
    the same leader and term with the role that goes with it, so the view printed
    never shows a `candidate` (or a `discovering`) row.
    """
    views = []
    for name in configs:
        try:
            with ControlClient(f"ipc://{directory}/{name}/run/dsd.ctl", timeout=0.2, retries=1) as client:
                views.append(client.request("view"))
        except (Unreachable, DaemonError):
            return None
    leader, term = views[0]["leader"], views[0]["term"]
    if leader is None:
        return None
    for view in views:
        if len(view["servers"]) != len(configs) or (view["leader"], view["term"]) != (leader, term):
            return None
        for row in view["servers"]:
            role = "leader" if row["name"] == leader else "follower"
            if (row["state"], row["role"], row["leader"], row["term"]) != ("alive", role, leader, term):
                return None
            if row.get("chat") != "voter":  # the chat has formed its voters from all three
                return None
    return views[0]


def die_with_parent() -> Callable[[], None]:
    """A preexec_fn: the daemon gets SIGTERM when the demo dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: nothing is loaded in the child
    parent = os.getpid()

    def preexec() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # the mask is inherited across exec
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the demo died before prctl took effect
            os._exit(1)

    return preexec


def wait_for_signal(timeout: float) -> bool:
    """Sleep up to `timeout` seconds; True if SIGINT or SIGTERM arrived (the demo should stop)."""
    return signal.sigtimedwait(STOP_SIGNALS, timeout) is not None


def stop(processes: dict[str, subprocess.Popen]) -> tuple[set[str], set[str]]:
    """SIGTERM every running daemon; kill those still there after STOP_GRACE. Returns (signalled, killed)."""
    running = {name: p for name, p in processes.items() if p.poll() is None}
    for process in running.values():
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    killed = set()
    for name, process in running.items():
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            killed.add(name)
    return set(running), killed


def report_stop(processes: dict[str, subprocess.Popen], signalled: set[str], killed: set[str]) -> str:
    """One line saying what became of each daemon: stopped by the demo, killed, or exited on its own."""
    stopped = [name for name in processes
               if name in signalled - killed and processes[name].returncode in (0, -signal.SIGTERM)]
    text = f"stopped {len(stopped)} daemon{'' if len(stopped) == 1 else 's'}"
    if killed:
        text += f"; killed {', '.join(n for n in processes if n in killed)} (not gone within {STOP_GRACE:g} s)"
    own = [f"{name} (exit code {p.returncode})" for name, p in processes.items()
           if name not in stopped and name not in killed]
    if own:
        text += f"; exited on their own: {', '.join(own)}"
    return text


def start(configs: dict[str, Path], directory: Path) -> dict[str, subprocess.Popen]:
    preexec = die_with_parent()
    processes = {}
    for name, config in configs.items():
        with open(directory / f"{name}.log", "wb") as log:
            processes[name] = subprocess.Popen(
                [sys.executable, "-m", "dsd", "-c", str(config)], stdout=log, stderr=log, preexec_fn=preexec
            )
    return processes


def settle(processes: dict[str, subprocess.Popen], configs: dict[str, Path], directory: Path) -> dict | str | None:
    """The agreed view; or why the demo cannot go on (a string); or None if asked to stop meanwhile."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        dead = [name for name, p in processes.items() if p.poll() is not None]
        if dead:
            return f"{', '.join(dead)} exited at start-up"
        view = agreed_view(configs, directory)
        if view is not None:
            return view
        if time.monotonic() > deadline:
            return f"no agreement within {SETTLE_TIMEOUT:g} s"
        if wait_for_signal(0.05):
            return None


def show(args: argparse.Namespace, view: dict, processes: dict[str, subprocess.Popen],
         configs: dict[str, Path], directory: Path) -> None:
    names = list(configs)
    dsctl = f"{tool('dsctl')} -c {shlex.quote(str(configs[names[0]]))}"
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsd.demo", description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--count", type=int, default=3, choices=range(1, len(NAMES) + 1), metavar="N",
                        help="number of daemons (default 3)")
    parser.add_argument("--port", type=int, default=5018, help="multicast port on loopback (default 5018)")
    args = parser.parse_args(argv)

    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # taken only in wait_for_signal
    code = 0
    with tempfile.TemporaryDirectory(prefix="dsd-demo-") as tmp:
        directory = Path(tmp)
        configs = {name: write_config(directory, name, args.port) for name in NAMES[: args.count]}
        processes = start(configs, directory)
        try:
            view = settle(processes, configs, directory)
            if isinstance(view, str):
                print(f"demo: {view}; logs:", file=sys.stderr)
                for name in configs:
                    print((directory / f"{name}.log").read_text(errors="replace"), file=sys.stderr)
                code = 1
            elif view is not None:
                show(args, view, processes, configs, directory)
                reported: set[str] = set()
                while not wait_for_signal(0.5):
                    for name, process in processes.items():
                        if name not in reported and process.poll() is not None:
                            reported.add(name)
                            print(f"demo: {name} exited with code {process.returncode}", flush=True)
        finally:
            signalled, killed = stop(processes)
        print(f"\n{report_stop(processes, signalled, killed)}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
