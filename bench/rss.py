"""Idle memory (and CPU) of one daemon in a 10-node cluster.

    python -m bench.rss [--nodes 10] [--settle 20]

N daemons on N private hosts at the default timings. Once all agree on a
leader, wait `--settle` seconds, then read each daemon's VmRSS and VmHWM from
/proc/PID/status and Pss from /proc/PID/smaps_rollup (PID checked to be the
python process itself, not an `ip netns exec` wrapper), and its CPU time used
during the settle window. Baselines started in the same run, through the same
`ip netns exec` prefix and read the same way: a bare interpreter
(`python -c "import time; time.sleep(..)"`) and one that has imported what the
daemon imports (`import dsd.service`).
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.common import (
    DEFAULT_TIMING, add_daemon, base_parser, before_run, median, met, private_cluster, proc_cpu_seconds,
    proc_pss_kb, proc_status_kb, progress, python_pid, run_main, table,
)
from tests.cluster import Cluster

GOAL_MB = 35.0  # MB, issue 2 (MB = 2^20 bytes here, as the kernel's kB are KiB)


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f} MB"


def baseline_rss(cluster: Cluster, host: int, code: str, seconds: float = 30) -> tuple[int, int | None]:
    """VmRSS and Pss (kB) of a python running `code` then sleeping; bounded, killed by pid."""
    script = f"{code}\nimport sys, time\nprint('ready', flush=True)\ntime.sleep({seconds})"
    process = subprocess.Popen(cluster.prefix(host) + [sys.executable, "-c", script],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"baseline did not start: {line!r}")
        time.sleep(0.2)
        pid = python_pid(process)
        return proc_status_kb(pid, "VmRSS"), proc_pss_kb(pid)
    finally:
        process.kill()
        process.wait(timeout=10)


def run(args) -> str:
    note = before_run(args.wait_quiet)
    progress(f"idle RSS: {args.nodes} daemons, settle {args.settle} s, timings {DEFAULT_TIMING}")
    with private_cluster(args.nodes) as cluster:
        daemons = [add_daemon(cluster, f"n{i:02d}", 100 + i) for i in range(1, args.nodes + 1)]
        cluster.wait_agreed(daemons[-1].name, timeout=30)
        pids = {d.name: python_pid(d.process) for d in daemons}
        cpu0 = {name: proc_cpu_seconds(pid) for name, pid in pids.items()}
        t0 = time.monotonic()
        time.sleep(args.settle)
        elapsed = time.monotonic() - t0
        cpu = {name: (proc_cpu_seconds(pid) - cpu0[name]) / elapsed for name, pid in pids.items()}
        rss = {name: proc_status_kb(pid, "VmRSS") for name, pid in pids.items()}
        hwm = {name: proc_status_kb(pid, "VmHWM") for name, pid in pids.items()}
        pss = {name: proc_pss_kb(pid) for name, pid in pids.items()}
        still = cluster.agreed(daemons[-1].name)
        bare_rss, bare_pss = baseline_rss(cluster, 1, "pass")
        imp_rss, imp_pss = baseline_rss(cluster, 1, "import dsd.service")
    values = sorted(rss.values())
    ok = max(values) / 1024 <= GOAL_MB
    pss_values = [v for v in pss.values() if v is not None]
    headers = ["process", "VmRSS median", "VmRSS max", "VmHWM max", "Pss median", "goal", "RSS / bare python"]
    rows = [
        [f"dsd, idle in a {args.nodes}-node cluster", mb(median(values)), mb(max(values)),
         mb(max(hwm.values())), mb(median(pss_values)) if pss_values else "?",
         f"≤ {GOAL_MB:.0f} MB — {met(ok)}", f"{median(values) / bare_rss:.1f}×"],
        ["baseline: bare python", mb(bare_rss), "", "", mb(bare_pss) if bare_pss else "?", "", "1.0×"],
        ["baseline: python + `import dsd.service`", mb(imp_rss), "", "",
         mb(imp_pss) if imp_pss else "?", "", f"{imp_rss / bare_rss:.1f}×"],
    ]
    cpu_values = sorted(cpu.values())
    return "\n".join([
        f"### Idle memory of one daemon ({args.nodes}-node cluster)",
        "",
        f"Default timings. Command: `python -m bench.rss --nodes {args.nodes} --settle {args.settle:g}`. "
        f"{note}.",
        "",
        table(headers, rows),
        "",
        f"Read {args.settle:g} s after all {args.nodes} agreed on a leader "
        f"({'still agreed at the end' if still else 'NOT agreed at the end'}); the goal is checked "
        f"against the largest VmRSS. Pss shares the interpreter's and libraries' pages among the "
        f"processes using them. MB = 2^20 bytes. Idle CPU of a daemon over the same window: "
        f"median {100 * median(cpu_values):.2f} %, max {100 * max(cpu_values):.2f} % of one CPU.",
    ])


def parser():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=10, help="cluster size (default 10)")
    p.add_argument("--settle", type=float, default=20.0, help="seconds idle before reading (default 20)")
    return p


def main(argv=None) -> int:
    return run_main(run, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
