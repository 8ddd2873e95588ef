"""A real Prometheus (Debian's `prometheus` package) scrapes a 3-daemon cluster, and
`promtool check metrics` passes on every daemon's page.

Prometheus runs on private host 1 (or on loopback without namespaces), listening on that
host's loopback only, and is queried there through its HTTP API. .ci/run installs the
package; elsewhere the tests are skipped with the reason when it is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.cluster import Cluster, wait_until
from tests.integration.conftest import NAMESPACES_UNAVAILABLE
from tests.integration.test_metrics import add
from tests.processes import kill_group, spawn
from tests.scrape import http_get, raw, scrape
from tests.unit.test_dashboard import load as load_dashboard
from tests.unit.test_dashboard import metric_names, queries

# What Grafana puts in for the dashboard's variables, so promtool can parse the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$job": ".+"}

PROMETHEUS_PORT = 9090


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        reason = f"{tool} is not installed (Debian package prometheus; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Prometheus tests: {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster(3, use_namespaces=NAMESPACES_UNAVAILABLE is None) as cluster:
        for i, name in enumerate("abc", start=1):
            add(cluster, name, 100 + i, i)
        cluster.wait_agreed("c")
        yield cluster


def prometheus_address(cluster: Cluster) -> str:
    if cluster.net is not None:
        return f"127.0.0.1:{PROMETHEUS_PORT}"  # host 1's own loopback
    return f"127.0.0.1:{29000 + os.getpid() % 1000}"


def write_config(cluster: Cluster, directory: Path) -> Path:
    targets = [d.sections["metrics"]["listen"] for d in cluster.daemons.values()]
    config = directory / "prometheus.yml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "global": {"scrape_interval": "250ms", "scrape_timeout": "200ms"},
        "scrape_configs": [{"job_name": "dsd", "static_configs": [{"targets": targets}]}],
    }))
    return config


def query(cluster: Cluster, address: str, expression: str) -> list[dict[str, Any]] | None:
    """The instant vector `expression` evaluates to now, or None if Prometheus does not answer yet."""
    url = f"http://{address}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    body = http_get(cluster, 1, url)
    if body is None:
        return None
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def by_instance(result: list[dict[str, Any]], cluster: Cluster) -> dict[str, float]:
    names = {d.sections["metrics"]["listen"]: d.name for d in cluster.daemons.values()}
    return {names[series["metric"]["instance"]]: float(series["value"][1]) for series in result}


def test_promtool_check_metrics_passes_on_every_daemon(cluster):
    promtool = require("promtool")
    for daemon in cluster.daemons.values():
        text = raw(daemon)
        assert text, f"{daemon.name} serves no metrics"
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), \
            f"{daemon.name}: {check.stdout}{check.stderr}"


def test_every_dashboard_query_names_a_metric_the_daemons_export(cluster):
    page = scrape(cluster.daemons["a"])
    assert page is not None
    exported = set(page.families) | {s.name for f in page.families.values() for s in f.samples}
    for expression in queries(load_dashboard()):
        assert metric_names(expression) <= exported, expression


def test_every_dashboard_query_is_valid_promql(tmp_path):
    promtool = require("promtool")
    rules = []
    for i, expression in enumerate(queries(load_dashboard())):
        for variable, value in GRAFANA_VARIABLES.items():
            expression = expression.replace(variable, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expression})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_scrapes_the_cluster_and_answers_queries_about_it(cluster, tmp_path):
    binary = require("prometheus")
    address = prometheus_address(cluster)
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as output:
        server = spawn(cluster.prefix(1) + [
            binary, f"--config.file={write_config(cluster, tmp_path)}", f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={address}", "--log.level=warn",
        ], stdout=output, stderr=output)
    try:
        def leaders() -> dict[str, float] | None:
            result = query(cluster, address, "dsd_is_leader")
            found = by_instance(result, cluster) if result else {}
            return found if len(found) == 3 else None

        found = wait_until(leaders, 60, interval=0.25, what="Prometheus holding dsd_is_leader of all three daemons")
        assert found == {"a": 0.0, "b": 0.0, "c": 1.0}
        alive = by_instance(query(cluster, address, 'dsd_members{state="alive"}') or [], cluster)
        assert alive == {"a": 3.0, "b": 3.0, "c": 3.0}
        suspect = by_instance(query(cluster, address, 'dsd_members{state="suspect"}') or [], cluster)
        assert suspect == {"a": 0.0, "b": 0.0, "c": 0.0}
        up = by_instance(query(cluster, address, 'up{job="dsd"}') or [], cluster)
        assert up == {"a": 1.0, "b": 1.0, "c": 1.0}
    except AssertionError as error:
        raise AssertionError(f"{error}\nprometheus log:\n{log.read_text(errors='replace')}") from None
    finally:
        kill_group(server)
