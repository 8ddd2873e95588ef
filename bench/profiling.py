"""Where a running daemon's time goes: py-spy samples it, and its speedscope file is read with json.

py-spy (in the `bench` extra) samples a process from outside (`--nonblocking`: the daemon is
never paused), so the daemon runs unchanged. It leaves out the samples where a thread is idle
(in epoll, waiting for work), so each sample is busy time: a thread's Python stack whenever it
runs or sits in a system call, in seconds of wall clock (`weights`). Samples are aggregated by
function (`--function`), and the C code a function calls (JSON, SQLite, libzmq) counts as that
function's own time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.common import table

RATE = 250  # samples per second
ROOT = Path(__file__).resolve().parent.parent


def find_py_spy() -> str | None:
    """py-spy on PATH or beside this interpreter (a venv's bin/ need not be on PATH)."""
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def record(py_spy: str, pid: int, seconds: int, out: Path) -> subprocess.Popen:
    """Start sampling `pid` for `seconds` into the speedscope file `out`."""
    return subprocess.Popen(
        [py_spy, "record", "-p", str(pid), "-d", str(seconds), "-r", str(RATE), "--nonblocking", "--function",
         "--format", "speedscope", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class Samples:
    busy: float                     # s of busy samples, all threads
    functions: Counter[str]         # "function (file)" -> self seconds
    files: Counter[str]             # source file -> self seconds


def _short(path: str) -> str:
    for marker in (f"{ROOT}/", "site-packages/", f"python{sys.version_info[0]}.{sys.version_info[1]}/"):
        path = path.rpartition(marker)[2]
    return path


def read(path: Path) -> Samples:
    """Self time by function and by file, from the innermost frame of each sample."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    own: Counter[int] = Counter()
    for profile in data["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"]):
            if stack:  # a thread outside Python code has none
                own[stack[-1]] += weight
    functions: Counter[str] = Counter()
    files: Counter[str] = Counter()
    for index, seconds in own.items():
        frame = frames[index]
        functions[f"{frame['name']} ({_short(frame['file'])})"] += seconds
        files[_short(frame["file"])] += seconds
    return Samples(sum(own.values()), functions, files)


def report(samples: dict[str, Samples], messages: float, top: int) -> str:
    """Two tables, daemons side by side: the top functions and the top source files by self time.

    Each cell: share of the daemon's busy samples, and µs of busy time per committed message.
    """
    names = list(samples)

    def column(name: str, counter: Counter[str]) -> list[str]:
        busy = samples[name].busy or 1.0
        return [f"`{key}` {100 * s / busy:.0f} % · {s / max(1.0, messages) * 1e6:.1f} µs"
                for key, s in counter.most_common(top)]

    tables = []
    for what, attribute in (("functions", "functions"), ("source files", "files")):
        columns = [column(name, getattr(samples[name], attribute)) for name in names]
        depth = max(len(c) for c in columns)
        tables.append(table(
            ["#"] + [f"{name}: top {what} (self time)" for name in names],
            [[i + 1] + [c[i] if i < len(c) else "" for c in columns] for i in range(depth)]))
    return "\n\n".join(tables)
