"""deploy/grafana/whyslow.json: a panel whose query names a series the app does not export
stays empty without an error, so every series, label and label value the dashboard asks
for is checked against the real /metrics of a live service and of a consumer."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from baselines.consumer import TelemetryConsumer
from baselines.detect import Detector, DetectorConfig
from baselines.forward import Forwarder
from baselines.metrics import ConsumerCollector, RouterCollector
from baselines.router import Router
from baselines.settings import Settings
from tests.deploy.files import DEPLOY

SCRAPE_LABELS = {"instance", "job"}  # added by Prometheus to every series it scrapes
TRAFFIC_LABELS = {"route", "method", "status"}
"""Their values appear with the requests that carry them (a 503 only while loading): their
names are checked, their values are not."""
SELECTOR = re.compile(r"\b(whyslow_\w+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")

Series = dict[str, dict[str, set[str]]]  # sample name -> label -> values


def dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "whyslow.json").read_text())


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def expressions() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]


def series(text: str) -> Series:
    found: Series = defaultdict(lambda: defaultdict(set))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = found[sample.name]
            for label, value in sample.labels.items():
                labels[label].add(value)
    return found


def test_the_dashboard_imports_into_any_grafana_with_a_prometheus() -> None:
    """Every panel and query reads the datasource variable (no UID of somebody's Grafana),
    panel ids are unique, and every panel has a query with a distinct refId."""
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])


@pytest.fixture(scope="module")
def exported(live_service: str) -> Series:
    """The series of a live service (model loaded, after one analysis, so the per-route and
    token series exist) and of a consumer's and a router's collectors."""
    report = {  # a situation of its own: no other test's report is answered from the cache
        "service": "grafana-check",
        "operation": "GET /panels",
        "latency_ms": {"p95": 520},
        "context": {"cpu_pct": 14, "cpu_baseline_pct": 36},
    }
    assert httpx.post(f"{live_service}/v1/analyze", json=report, timeout=120).status_code == 200
    found = series(httpx.get(f"{live_service}/metrics", timeout=10).text)
    settings = Settings()
    forwarder = Forwarder(settings.service_url, 5)
    consumer = TelemetryConsumer(settings, lambda: Detector(DetectorConfig()), forwarder)
    registry = CollectorRegistry()
    registry.register(ConsumerCollector(consumer))
    registry.register(RouterCollector(Router(settings, 3)))
    for name, labels in series(generate_latest(registry).decode()).items():
        assert name not in found, f"{name} is exported by both the service and the consumer"
        found[name] = labels
    return found


@pytest.mark.slow
def test_every_series_the_dashboard_queries_is_exported(exported: Series) -> None:
    for title, expr in expressions():
        names = SELECTOR.findall(expr)
        assert names, f"{title}: no whyslow series in {expr}"
        for name, matchers in names:
            assert name in exported, f"{title}: {name} is not exported"
            labels = exported[name]
            for label, _, value in MATCHER.findall(matchers):
                assert label in labels, f"{title}: {name} has no label {label}"
                if label not in TRAFFIC_LABELS:
                    assert value in labels[label], f"{title}: {name}{{{label}}} never is {value}"


@pytest.mark.slow
def test_every_label_a_panel_groups_by_exists(exported: Series) -> None:
    """`sum by (route)` over a series without `route` gives one unlabelled line."""
    for title, expr in expressions():
        names = [name for name, _ in SELECTOR.findall(expr)]
        for group in GROUPING.findall(expr):
            for label in (g.strip() for g in group.split(",") if g.strip()):
                if label in SCRAPE_LABELS:
                    continue
                assert any(label in exported[n] for n in names), f"{title}: no label {label}"
