"""Baseline profiles the consumers checkpoint, read by the service."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

from baselines.detect import Detector, DetectorConfig
from baselines.snapshot import checkpoint
from baselines.store import open_store
from baselines.synthetic import demo_incidents, last_full_week_start, telemetry
from service.contract import PROFILE_KEY_PREFIX, TELEMETRY_EVENT, OperationProfile, WeekProfile
from service.settings import Settings
from tests.service.serving import serving

WEEK = last_full_week_start(datetime(2026, 11, 23, tzinfo=UTC))


def learnt(tmp_path, days: int = 3, incidents: bool = False) -> Settings:
    detector = Detector(DetectorConfig())
    injected = demo_incidents(WEEK) if incidents else []
    for minute in telemetry(WEEK, injected, minutes=days * 1440):
        detector.observe([TELEMETRY_EVENT.validate_python(e) for e in minute])
    detector.flush()
    return stored(tmp_path, checkpoint(detector, detector.take_changed()))


def stored(tmp_path, rows: dict[str, bytes]) -> Settings:
    """The service's settings, reading the consumers' store that holds ``rows``."""
    store = open_store(f"sqlite:///{tmp_path / 'baselines.db'}")
    store.save(rows)
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
        # the ratio floor holds too, against the estimate the band is drawn around (its
        # geometric middle: a young hour's estimate may come from the same hour of other days)
        assert above[how] >= 2 * (low[how] * high[how]) ** 0.5 - 0.01
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


def test_a_row_of_another_version_or_shape_is_no_profile_and_is_logged_once(
    tmp_path, caplog
) -> None:
    """A consumer of another release may write what this service does not read: that
    service has no profile (404, a bare report is judged without a baseline) until the row
    is rewritten, and the log says so once, not at every request. A row written before
    profiles carried a version has the same shape: it reads as version 1."""
    hours = [120.0] * 168
    operation = OperationProfile(
        p95=hours,
        p50=hours,
        samples=[12] * 168,
        band_low=hours,
        band_high=hours,
        flag_above=hours,
        observed_p95=hours,
        observed_peak=hours,
    )
    row = WeekProfile(service="checkout", timezone="UTC", operations={"POST /checkout": operation})
    unversioned = row.model_dump(mode="json", exclude={"version"})
    broken = row.model_dump(mode="json")
    broken["operations"]["POST /checkout"]["p95"] = [120.0] * 24
    rows = {
        "checkout": json.dumps(unversioned).encode(),
        "next-release": json.dumps({**unversioned, "version": 2}).encode(),
        "broken": json.dumps(broken).encode(),
    }
    settings = stored(tmp_path, {PROFILE_KEY_PREFIX + name: row for name, row in rows.items()})
    with caplog.at_level(logging.WARNING, logger="service.profiles"), serving(settings) as client:
        assert client.get("/v1/baselines/checkout").json() == {**unversioned, "version": 1}
        for name in ("next-release", "broken", "next-release", "broken"):
            assert client.get(f"/v1/baselines/{name}").status_code == 404
        bare = {"service": "next-release", "operation": "POST /checkout", "latency_ms": {"p95": 9}}
        assert client.post("/v1/analyze", json=bare).status_code == 200
    refused = [r.getMessage() for r in caplog.records if r.name == "service.profiles"]
    assert len(refused) == 2, refused
    assert "'next-release'" in refused[0] and "version" in refused[0]
    assert "'broken'" in refused[1] and "p95" in refused[1]
