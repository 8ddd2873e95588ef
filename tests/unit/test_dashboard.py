"""etc/grafana/dsd.json is a dashboard Grafana imports as it is.

Grafana is not in Debian, so this checks what an import needs: the dashboard model's
fields, panels that tile the grid without overlapping, every query on the data-source
variable. That every query names an exported metric and is valid PromQL is checked
against real daemons and promtool in tests/integration/test_prometheus.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "etc" / "grafana" / "dsd.json"
PANEL_TYPES = {"timeseries", "stat", "gauge", "table", "text", "bargauge", "heatmap"}
METRIC = re.compile(r"\b((?:dsd|process|python)_[a-z_]+)\b")


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def metric_names(expression: str) -> set[str]:
    """The metric names an expression reads (a histogram's _bucket series by its family name)."""
    return {re.sub(r"_bucket$", "", name) for name in METRIC.findall(expression)}


def test_the_dashboard_has_what_an_import_needs():
    dashboard = load()
    assert isinstance(dashboard["title"], str) and dashboard["title"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert "id" not in dashboard or dashboard["id"] is None  # an id would overwrite another dashboard
    assert {"from", "to"} <= set(dashboard["time"])
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"


def test_panels_have_unique_ids_and_tile_the_grid_without_overlap():
    panels = load()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["type"] in PANEL_TYPES and panel["title"]
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in ("x", "y", "w", "h"))
        assert grid["x"] + grid["w"] <= 24
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_every_query_uses_the_data_source_variable_and_has_its_own_ref_id():
    for panel in load()["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and metric_names(target["expr"]), target


def test_the_dashboard_shows_what_the_issue_asks_for():
    names = set().union(*map(metric_names, queries(load())))
    assert {"dsd_members", "dsd_is_leader", "dsd_leader_changes_total", "dsd_failure_detection_seconds",
            "dsd_chat_commit_latency_seconds", "dsd_chat_committed_entries_total",
            "dsd_datagrams_rejected_total"} <= names
