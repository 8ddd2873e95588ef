"""dsd.metrics without a daemon: label values known up front, and no cost when metrics are off."""

import re
import subprocess
import sys
from pathlib import Path

from dsd import commands
from dsd.metrics import REFUSALS

ROOT = Path(__file__).resolve().parents[2]


def test_every_documented_error_code_has_its_refusal_series_from_the_start():
    api = (ROOT / "docs" / "chat-api.md").read_text()
    table = api.split("| cmd | args | result | errors (code) |", 1)[1].split("\n\n", 1)[0]
    documented = {code for row in table.splitlines() if row.startswith("| `")
                  for code in re.findall(r"`([a-z_]+)` \(", row.split("|")[-2])}
    raised = set(re.findall(r'RequestError\(\s*"([a-z_]+)"', Path(commands.__file__).read_text()))
    assert documented and raised
    assert documented | raised <= set(REFUSALS)


def test_a_daemon_without_metrics_does_not_load_prometheus_client():
    code = "import sys, dsd.daemon, dsd.service; print('prometheus_client' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "False"
