"""OTLP metrics as the Collector's rabbitmqexporter publishes them, built with the OTel
SDK's own types and encoders (``tests.baselines.otlp_helpers``)."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import pytest

from baselines.ingest.otlp import parse_otlp_metrics
from tests.baselines.otlp_helpers import (
    assert_valid,
    both,
    collect_metrics,
    host_metrics,
    observe,
    samples,
)


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_metrics_map_to_whyslow_names_and_units(encoding: str) -> None:
    request = collect_metrics(host_metrics)
    body = dict((e, b) for b, e in both(request))[encoding]
    batch = parse_otlp_metrics(body, encoding)  # type: ignore[arg-type]
    assert not batch.rejected
    assert_valid(batch)
    assert samples(batch) == {
        "cpu_pct": pytest.approx(50.0),  # 100 * (1 - mean idle of 0.7 and 0.3)
        "memory_pct": pytest.approx(62.0),
        "queue_depth": 128.0,
        "http.server.active_requests.peak": 5.0,  # a gauge: mean over its points
    }
    assert {e.service for e in batch.events} == {"checkout"}
    assert batch.skipped == 2  # the monotonic counter and the histogram
    times = {e.timestamp for e in batch.events}
    assert len(times) == 1 and times.pop().tzinfo is UTC


def test_metrics_in_both_encodings_give_identical_samples() -> None:
    (proto, _), (otlp_json, _) = both(collect_metrics(host_metrics))
    from_proto, from_json = (
        parse_otlp_metrics(proto, "proto"),
        parse_otlp_metrics(otlp_json, "json"),
    )
    assert from_proto.events == from_json.events
    assert from_proto.skipped == from_json.skipped


@pytest.mark.parametrize(
    ("name", "unit", "points", "expected"),
    [
        ("process.cpu.utilization", "1", [(0.42, {})], {"cpu_pct": 42.0}),
        (  # per-mode process CPU: the modes add up
            "process.cpu.utilization",
            "1",
            [(0.2, {"cpu.mode": "user"}), (0.1, {"cpu.mode": "system"})],
            {"cpu_pct": 30.0},
        ),
        (  # states without idle: the busy states summed per CPU
            "system.cpu.utilization",
            "1",
            [(0.5, {"cpu": 0, "state": "user"}), (0.3, {"cpu": 1, "state": "user"})],
            {"cpu_pct": 40.0},
        ),
        ("container.cpu.utilization", "%", [(37.0, {})], {"cpu_pct": 37.0}),
        ("process.memory.utilization", "1", [(0.25, {})], {"memory_pct": 25.0}),
        ("container.memory.percent", "1", [(81.0, {})], {"memory_pct": 81.0}),
        ("queue_depth", "1", [(7, {})], {"queue_depth": 7.0}),
    ],
)
def test_well_known_instruments(
    name: str, unit: str, points: list[tuple[float, dict[str, Any]]], expected: dict[str, float]
) -> None:
    request = collect_metrics(
        lambda m: m.create_observable_gauge(name, callbacks=[observe(points)], unit=unit)
    )
    for body, encoding in both(request):
        batch = parse_otlp_metrics(body, encoding)  # type: ignore[arg-type]
        assert not batch.rejected
        assert samples(batch) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("system.cpu.utilization", 1.5, "cpu_pct 150 is outside 0..100"),
        ("process.memory.utilization", -0.1, "is negative"),
        ("temperature.delta", -3.0, "is negative"),
    ],
)
def test_invalid_metric_values_are_rejected_naming_metric_and_field(
    name: str, value: float, field: str
) -> None:
    request = collect_metrics(
        lambda m: m.create_observable_gauge(name, callbacks=[observe([(value, {})])])
    )
    for body, encoding in both(request):
        batch = parse_otlp_metrics(body, encoding)  # type: ignore[arg-type]
        assert not batch.events
        ((item, reason),) = batch.rejected
        assert name in reason and field in reason
        json.dumps(item)


def test_a_utilisation_a_little_over_its_limit_reads_as_saturated() -> None:
    """kubelet reports 100.1% for a pod pinned at its CPU limit: that is 100, not bad data."""
    request = collect_metrics(
        lambda m: m.create_observable_gauge(
            "container.cpu.utilization", callbacks=[observe([(1.001, {})])]
        )
    )
    for body, encoding in both(request):
        batch = parse_otlp_metrics(body, encoding)  # type: ignore[arg-type]
        assert not batch.rejected
        assert samples(batch) == pytest.approx({"cpu_pct": 100.0})


def test_a_non_finite_value_is_rejected() -> None:
    """The SDK drops NaN itself; another sender may not, and OTLP/JSON spells it "NaN"."""
    request = collect_metrics(
        lambda m: m.create_observable_gauge(
            "process.cpu.utilization", callbacks=[observe([(0.5, {})])]
        )
    )
    request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0].as_double = float(
        "nan"
    )
    for body, encoding in both(request):
        batch = parse_otlp_metrics(body, encoding)  # type: ignore[arg-type]
        ((item, reason),) = batch.rejected
        assert "process.cpu.utilization -> cpu_pct" in reason and "value is nan" in reason
        json.dumps(item, allow_nan=False)
