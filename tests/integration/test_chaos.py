"""The chaos soak (bench/soak.py) for about a minute with a fixed seed.

Five daemons on private hosts, dschat traffic on every host, faults of every kind one at
a time; then one leader, one log, every acknowledged line delivered exactly once. The
deadlines of its checks are generous, so a loaded machine makes it slower, not flaky.
"""

from __future__ import annotations

import os

import pytest

from bench.soak import FAULT_KINDS, run_soak
from tests.integration.conftest import NAMESPACES_UNAVAILABLE

SECONDS = 50
SEED = 7


def test_chaos_soak_injects_every_kind_of_fault_and_finds_no_violation(tmp_path):
    if NAMESPACES_UNAVAILABLE:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the chaos soak: {NAMESPACES_UNAVAILABLE}")
        pytest.skip(NAMESPACES_UNAVAILABLE)
    report = run_soak(SECONDS, SEED, keep_logs=tmp_path / "logs")
    summary = report.summary()
    assert report.violations == [], summary
    # The injector did inject: every kind, and both lengths of pause.
    assert {f.kind for f in report.faults} == set(FAULT_KINDS), summary
    pauses = [f.detail for f in report.faults if f.kind == "stop"]
    assert any("longer" in d for d in pauses) and any("shorter" in d for d in pauses), summary
    assert report.forged > 0 and report.rejected > 0, summary
    # Traffic flowed, and everything sent was acknowledged and delivered.
    assert report.sent > 100 and report.acknowledged == report.delivered == report.sent, summary
