from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from baselines.baseline import SeasonalBaseline, hour_of_week


def test_hour_of_week_follows_the_configured_zone_across_dst() -> None:
    utc, paris = ZoneInfo("UTC"), ZoneInfo("Europe/Paris")
    monday_9_utc = datetime(2026, 11, 16, 9, tzinfo=UTC).timestamp()
    assert hour_of_week(monday_9_utc, utc) == 9
    assert hour_of_week(monday_9_utc, paris) == 10  # CET, UTC+1
    summer = datetime(2026, 7, 13, 7, tzinfo=UTC).timestamp()  # a Monday, CEST (UTC+2)
    assert hour_of_week(summer, paris) == 9


def test_estimate_falls_back_from_hour_of_week_to_hour_of_day_to_global() -> None:
    baseline = SeasonalBaseline(capacity=64, min_level_samples=10)
    assert baseline.estimate(5) is None
    for _ in range(4):
        baseline.add(100, 50.0)
    assert baseline.estimate(100).level == "global"
    for day in range(7):
        for _ in range(2):
            baseline.add(day * 24 + 9, 200.0)
    hod = baseline.estimate(9)  # Monday 09:00: its own bucket has 2, all 09:00 have 14
    assert (hod.level, hod.usual, hod.samples) == ("hour_of_day", 200.0, 14)
    for _ in range(10):
        baseline.add(9, 300.0)
    assert baseline.estimate(9).level == "hour_of_week"
    assert baseline.estimate(9).usual == 300.0


def test_median_shrugs_off_outliers_and_memory_is_bounded() -> None:
    baseline = SeasonalBaseline(capacity=64, min_level_samples=10)
    for value in [100.0] * 60 + [10_000.0] * 4:
        baseline.add(0, value)
    assert baseline.estimate(0).usual == 100.0
    for _ in range(1000):
        baseline.add(0, 1.0)
    assert baseline.nbytes == 64 * 4
