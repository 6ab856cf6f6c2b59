"""The observed week a dashboard draws over the band (baselines/trail.py)."""

from __future__ import annotations

import math

from baselines.trail import HourlyTrail

MONDAY = 96 + 4 * 168  # a local hour index that is a Monday 00:00: (96 + 72) % 168 == 0


def test_each_hour_is_the_geometric_mean_and_the_peak_of_its_windows() -> None:
    trail = HourlyTrail()
    for p95 in (100.0, 400.0):
        trail.add(MONDAY + 9, p95)
    exported = trail.export()
    assert math.isclose(exported["observed_p95"][9], 200.0, rel_tol=1e-6)
    assert exported["observed_peak"][9] == 400.0
    assert exported["latest_hour_of_week"] == 9
    assert sum(v is not None for v in exported["observed_p95"]) == 1


def test_only_the_last_168_hours_are_shown_and_flags_age_out_with_them() -> None:
    trail = HourlyTrail()
    trail.add(MONDAY + 5, 50.0)
    trail.flag(0.0, MONDAY + 5, 50.0)
    trail.add(MONDAY + 10, 70.0)
    trail.add(MONDAY + 168 + 6, 90.0)  # a week and an hour later: Monday 05:00 is too old
    exported = trail.export()
    assert exported["observed_p95"][5] is None and exported["flags"] == []
    assert exported["observed_p95"][10] == 70.0 and exported["observed_p95"][6] == 90.0


def test_the_state_rebuilds_the_trail_mid_hour() -> None:
    trail = HourlyTrail()
    trail.add(MONDAY + 1, 10.0)
    trail.add(MONDAY + 2, 20.0)
    trail.flag(1_800_000_000.0, MONDAY + 2, 20.0)
    copy = HourlyTrail.from_state(trail.state())
    for original in (trail, copy):  # the hour in progress goes on in both
        original.add(MONDAY + 2, 80.0)
    assert copy.export() == trail.export()
    assert copy.export()["flags"] == [
        {"start": "2027-01-15T08:00:00Z", "hour_of_week": 2, "p95": 20.0}
    ]
    assert HourlyTrail.from_state({}).export()["latest_hour_of_week"] is None
