"""Scraping dsd's `[metrics] listen` page from a test, on the daemon's private host.

A private host's addresses are reachable only from inside its namespace, so every HTTP
request runs there as a small Python process (`http_get`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from tests.cluster import Cluster, Daemon

METRICS_PORT = 9108

# Run on a private host: argv = url, timeout; prints the body; exit 1 on any failure.
_GET = """
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as response:
        sys.stdout.write(response.read().decode())
except Exception as error:
    sys.stderr.write(f"{type(error).__name__}: {error}")
    sys.exit(1)
"""


def listen_address(cluster: Cluster, host: int) -> str:
    """Where a daemon on `host` serves metrics: its private address, or a port of its own on loopback."""
    if cluster.net is not None:
        return f"{cluster.net.address(host)}:{METRICS_PORT}"
    return f"127.0.0.1:{30000 + (os.getpid() % 5000) * 5 + host}"


def http_get(cluster: Cluster, host: int, url: str, timeout: float = 5.0) -> str | None:
    """The body at `url`, fetched from private host `host`; None if it cannot be fetched."""
    result = cluster.run(host, [sys.executable, "-I", "-S", "-c", _GET, url, str(timeout)], timeout=timeout + 10)
    return result.stdout if result.returncode == 0 else None


@dataclass
class Scrape:
    """One scrape, parsed by prometheus_client's own text parser."""

    text: str

    def __post_init__(self) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}

    def value(self, sample: str, **labels: str) -> float:
        """The value of the sample named `sample` with exactly `labels`; KeyError if absent."""
        for family in self.families.values():
            for s in family.samples:
                if s.name == sample and s.labels == labels:
                    return s.value
        raise KeyError(f"{sample}{labels}")

    def labels(self, family: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.families[family].samples if label in s.labels}


def raw(daemon: Daemon) -> str | None:
    return http_get(daemon.cluster, daemon.host, f"http://{daemon.sections['metrics']['listen']}/metrics")


def scrape(daemon: Daemon) -> Scrape | None:
    text = raw(daemon)
    return Scrape(text) if text is not None else None
