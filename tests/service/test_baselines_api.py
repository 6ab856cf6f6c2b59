"""Baseline profiles the consumers checkpoint, read by the service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from baselines.detect import Detector, DetectorConfig
from baselines.snapshot import checkpoint
from baselines.store import open_store
from baselines.synthetic import demo_incidents, last_full_week_start, telemetry
from service.contract import TELEMETRY_EVENT
from service.settings import Settings
from tests.service.serving import serving

WEEK = last_full_week_start(datetime(2026, 11, 23, tzinfo=UTC))


def learnt(tmp_path, days: int = 3, incidents: bool = False) -> Settings:
    detector = Detector(DetectorConfig())
    injected = demo_incidents(WEEK) if incidents else []
    for minute in telemetry(WEEK, injected, minutes=days * 1440):
        detector.observe([TELEMETRY_EVENT.validate_python(e) for e in minute])
    detector.flush()
    store = open_store(f"sqlite:///{tmp_path / 'baselines.db'}")
    store.save(checkpoint(detector, detector.take_changed()))
    store.close()
    return Settings(data_dir=tmp_path, model_path=tmp_path / "none.gguf")


def test_the_service_serves_the_profile_and_completes_a_bare_report(tmp_path) -> None:
    with serving(learnt(tmp_path)) as client:
        profile = client.get("/v1/baselines/checkout").json()
        p95 = profile["operations"]["POST /checkout"]["p95"]
        assert len(p95) == 168 and profile["timezone"] == "UTC"
        assert all(v is not None for v in p95[:72]) and all(v is None for v in p95[72:])
        assert p95[14] > p95[3]  # Monday 14:00 is busier than Monday 03:00
        assert "GET /quote" not in profile["operations"]  # client calls are not judged
        assert client.get("/v1/baselines/nobody").status_code == 404

        bare = {
            "service": "checkout",
            "operation": "POST /checkout",
            "latency_ms": {"p95": 900},
            "window": {"start": "2026-11-16T14:00:00Z", "end": "2026-11-16T14:01:00Z", "count": 20},
        }
        answer = client.post("/v1/analyze", json=bare).json()
    assert f"vs usual {round(p95[14], 1):g}ms" in answer["summary"]  # Monday 14:00's usual


def test_the_profile_carries_the_band_the_observed_week_and_its_flags(tmp_path) -> None:
    """What the dashboard draws: a window above flag_above (twice) is an incident; the
    observed line keeps the incident the baseline refused to learn."""
    with serving(learnt(tmp_path, days=7, incidents=True)) as client:
        assert client.get("/v1/baselines").json() == {
            "services": ["checkout", "exchange-api", "search"]
        }
        operation = client.get("/v1/baselines/checkout").json()["operations"]["POST /checkout"]
    low, usual, high, above = (operation[k] for k in ("band_low", "p95", "band_high", "flag_above"))
    assert all(len(column) == 168 for column in (low, usual, high, above))
    for how in range(168):
        assert low[how] < usual[how] < high[how] <= above[how], how
        assert above[how] >= 2 * usual[how] - 0.01  # the ratio floor holds too (rounded)
    observed, peak = operation["observed_p95"], operation["observed_peak"]
    assert all(v is not None for v in observed) and operation["latest_hour_of_week"] == 167
    assert all(p >= o for p, o in zip(peak, observed, strict=True))
    thursday_14 = 3 * 24 + 14  # the injected CPU saturation
    [flag] = operation["flags"]
    assert flag["hour_of_week"] == thursday_14 and flag["start"].startswith(
        f"{WEEK.date() + timedelta(days=3)}T14:"
    )
    assert flag["p95"] > above[thursday_14] and peak[thursday_14] >= flag["p95"]
    assert observed[thursday_14] > 1.5 * usual[thursday_14] > observed[thursday_14 - 24]
