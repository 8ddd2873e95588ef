"""Where a running daemon's time goes: py-spy and perf sample it, and their JSON output is read with json.

py-spy (in the `bench` extra) samples a process from outside (`--nonblocking`: the daemon is
never paused), so the daemon runs unchanged. It leaves out the samples where a thread is idle
(in epoll, waiting for work), so each sample is busy time: a thread's Python stack whenever it
runs or sits in a system call, in seconds of wall clock (`weights`). Samples are aggregated by
function (`--function`), and the C code a function calls (JSON, SQLite, libzmq) counts as that
function's own time. perf (the machine's, when installed) samples CPU time (`cpu-clock`) of
every thread, Python or not (libzmq's I/O thread), by the object file it ran in (the
interpreter, the kernel, libzmq, SQLite...); `perf data convert --to-json` writes it out.
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

RATE = 250     # py-spy samples per second
PERF_HZ = 499  # perf samples per second and CPU
ROOT = Path(__file__).resolve().parent.parent


def find(tool: str) -> str | None:
    """`tool` on PATH or beside this interpreter (a venv's bin/ need not be on PATH)."""
    return shutil.which(tool) or shutil.which(tool, path=str(Path(sys.executable).parent))


def record(py_spy: str, pid: int, seconds: int, out: Path) -> subprocess.Popen:
    """Start sampling `pid` for `seconds` into the speedscope file `out`."""
    return subprocess.Popen(
        [py_spy, "record", "-p", str(pid), "-d", str(seconds), "-r", str(RATE), "--nonblocking", "--function",
         "--format", "speedscope", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def perf_record(perf: str, pids: list[int], seconds: int, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [perf, "record", "-e", "cpu-clock", "-F", str(PERF_HZ), "-p", ",".join(map(str, pids)), "-o", str(out),
         "--", "sleep", str(seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def perf_read(perf: str, path: Path, names: dict[int, str]) -> dict[str, Counter[str]]:
    """CPU seconds of each process (pid -> name in `names`) by "thread · object file"."""
    out = path.with_suffix(".json")
    subprocess.run([perf, "data", "convert", "--force", "--to-json", str(out), "-i", str(path)],
                   capture_output=True, timeout=120, check=True)
    split: dict[str, Counter[str]] = {name: Counter() for name in names.values()}
    for sample in json.loads(out.read_text())["samples"]:
        if sample["pid"] in names and sample["callchain"]:
            where = sample["callchain"][0].get("dso", "unknown")
            split[names[sample["pid"]]][f"{sample['comm']} · {where}"] += 1 / PERF_HZ
    return split


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
    """py-spy's two tables, daemons side by side: the top functions and the top source files by self time.

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


def perf_report(split: dict[str, Counter[str]], messages: float, top: int) -> str:
    """perf's table: µs of CPU per committed message (share of the daemon's CPU) by thread and object file."""
    names = sorted(split)

    def cell(name: str, seconds: float) -> str:
        share = seconds / max(1e-9, sum(split[name].values()))
        return f"{seconds / max(1.0, messages) * 1e6:.1f} ({100 * share:.0f} %)"

    keys = [key for key, _ in sum(split.values(), Counter()).most_common(top)]
    rows = [[key, *(cell(n, split[n][key]) for n in names)] for key in keys]
    rows.append(["all threads and objects", *(cell(n, sum(split[n].values())) for n in names)])
    return table(["thread · object file (perf)", *(f"{n}: CPU µs per message (share)" for n in names)], rows)
