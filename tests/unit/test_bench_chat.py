"""bench.chat's own helpers: py-spy's speedscope read back, the chart, the command line, the PySyncObj peer."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from bench import charts, chat, profiling, raft_peer
from bench.common import BenchError, read_cmdline


def speedscope(path: Path) -> Path:
    """A speedscope file as py-spy writes it: shared frames, one sampled profile per thread."""
    frames = [{"name": "run", "file": "/usr/lib/python3.11/asyncio/base_events.py", "line": 1, "col": None},
              {"name": "Store.append", "file": f"{profiling.ROOT}/dsd/store.py", "line": 10, "col": None},
              {"name": "Socket.send", "file": "/venv/lib/python3.11/site-packages/zmq/sugar/socket.py", "line": 5,
               "col": None}]
    profiles = [
        {"type": "sampled", "name": "Thread 1", "unit": "seconds", "startValue": 0, "endValue": 1,
         "samples": [[0, 1], [0, 1], [0, 2], []], "weights": [0.004, 0.004, 0.004, 0.004]},
        {"type": "sampled", "name": "Thread 2", "unit": "seconds", "startValue": 0, "endValue": 1,
         "samples": [[0, 2]], "weights": [0.004]},
    ]
    path.write_text(json.dumps({"shared": {"frames": frames}, "profiles": profiles}))
    return path


def test_self_time_is_read_by_function_and_by_file_from_the_innermost_frame(tmp_path):
    samples = profiling.read(speedscope(tmp_path / "n3.json"))
    assert samples.busy == pytest.approx(0.016)  # the sample without a Python frame is not busy time
    assert samples.functions["Store.append (dsd/store.py)"] == pytest.approx(0.008)
    assert samples.files["zmq/sugar/socket.py"] == pytest.approx(0.008)
    assert "asyncio/base_events.py" not in samples.files  # only ever an outer frame here


def test_the_profile_report_puts_the_daemons_side_by_side(tmp_path):
    samples = profiling.read(speedscope(tmp_path / "n3.json"))
    text = profiling.report({"n3": samples, "n1": samples}, messages=1000, top=5)
    assert "n3: top functions (self time)" in text and "n1: top source files (self time)" in text
    assert "`Store.append (dsd/store.py)` 50 % · 8.0 µs" in text


def test_the_perf_table_gives_cpu_per_message_by_thread_and_object_file():
    split = {"n3": Counter({"python · libpython3.11.so": 0.6, "ZMQbg/IO/0 · [kernel.kallsyms]": 0.2}),
             "n1": Counter({"python · libpython3.11.so": 0.3})}
    text = profiling.perf_report(split, messages=10000, top=5)
    header = text.splitlines()[0]
    assert header.index("thread · object file") < header.index("n1: CPU µs per message") < header.index("n3:")
    assert "| python · libpython3.11.so" in text and "30.0 (100 %)" in text and "60.0 (75 %)" in text
    assert "all threads and objects" in text and "80.0 (100 %)" in text


def test_the_chart_is_an_svg_that_does_not_change_when_the_figures_do_not(tmp_path):
    pytest.importorskip("matplotlib")
    panels = [charts.Panel("Rate", "msg/s", ["raw", "dsd"], {"measured": [250000.0, 8000.0]}, {"goal": 25000.0},
                           log=True),
              charts.Panel("Latency", "ms", ["p50", "p99"], {"dsd": [1.6, 4.3], "raw": [0.1, 0.2]}, {"p50": 1.0})]
    first = charts.write(tmp_path / "a.svg", "title", panels).read_bytes()
    second = charts.write(tmp_path / "b.svg", "title", panels).read_bytes()
    assert first.startswith(b"<?xml") and b"<svg" in first
    assert first == second


def test_the_command_line_shows_only_the_flags_that_differ_from_their_defaults():
    args = chat.parser().parse_args(["--quick", "--seconds", "2", "--sweep", "8", "256", "--chart", "/tmp/c.svg"])
    assert chat.command(args) == "python -m bench.chat --quick --seconds 2 --sweep 8 256 --chart /tmp/c.svg"
    assert chat.command(chat.parser().parse_args([])) == "python -m bench.chat"


def test_percentiles_come_from_statistics_and_need_two_samples():
    p50, p99 = chat.quantiles([i / 1000 for i in range(1, 101)])
    assert p50 == pytest.approx(0.0505) and p99 == pytest.approx(0.09901)
    with pytest.raises(BenchError):
        chat.quantiles([0.001])


def test_pysyncobj_commits_on_loopback_and_its_nodes_are_gone_afterwards():
    pytest.importorskip("pysyncobj")
    before = set(os.listdir("/proc"))
    result = raft_peer.race(seconds=1.0, window=100, size=64)
    assert result.rate > 0 and result.errors == 0
    left = [pid for pid in set(os.listdir("/proc")) - before
            if pid.isdigit() and "bench.raft_peer" in read_cmdline(int(pid))]
    assert left == []
