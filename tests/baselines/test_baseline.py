from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from baselines.baseline import (
    SeasonalProfile,
    hour_of_week,
    local_hour,
    local_hours,
    median,
    row_medians,
)
from baselines.detect import SeriesState


def add_run(profile: SeasonalProfile, hour: int, values: np.ndarray) -> None:
    profile.add_many(np.full(values.size, hour), values)


MONDAY_9_UTC = datetime(2026, 11, 16, 9, tzinfo=UTC).timestamp()


def test_hour_of_week_follows_the_configured_zone_across_dst() -> None:
    assert hour_of_week(local_hour(MONDAY_9_UTC, ZoneInfo("UTC"))) == 9
    assert hour_of_week(local_hour(MONDAY_9_UTC, ZoneInfo("Europe/Paris"))) == 10  # CET
    summer = datetime(2026, 7, 13, 7, tzinfo=UTC).timestamp()  # a Monday, CEST (UTC+2)
    assert hour_of_week(local_hour(summer, ZoneInfo("Europe/Paris"))) == 9


@pytest.mark.parametrize(
    "zone", ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
)
def test_vectorised_local_hours_equal_the_scalar_ones_through_a_year(zone: str) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    epoch = start + np.arange(0, 366 * 86400, 600, dtype=np.float64) + 17.0
    tz = ZoneInfo(zone)
    sample = np.random.default_rng(0).choice(epoch.size, 3000, replace=False)
    fast = local_hours(epoch, tz)
    assert [local_hour(float(epoch[i]), tz) for i in sample] == fast[sample].tolist()
    # around every transition, every point
    changes = np.flatnonzero(np.diff(fast) != 1) if zone != "UTC" else []
    for c in changes[:50]:
        for i in range(max(0, c - 12), min(epoch.size, c + 12)):
            assert fast[i] == local_hour(float(epoch[i]), tz)


def test_estimate_falls_back_from_hour_of_week_to_hour_of_day_to_recent() -> None:
    profile = SeasonalProfile(depth=32, recent=256, min_level_samples=8)
    monday_9 = local_hour(MONDAY_9_UTC, ZoneInfo("UTC"))
    assert profile.estimate(monday_9) is None
    for _ in range(10):
        profile.add(monday_9 - 1000, 50.0)  # some other hour of the week
    first = profile.estimate(monday_9 + 1)
    assert (first.level, first.usual, first.samples) == ("global", 50.0, 10)
    for day in range(1, 5):  # Tuesday to Friday 09:00
        add_run(profile, monday_9 + day * 24 - 168, np.full(2, 200.0))
    for day in range(5, 7):  # the weekend is quieter
        add_run(profile, monday_9 + day * 24 - 168, np.full(4, 120.0))
    hod = profile.estimate(monday_9)  # Monday 09:00 itself has nothing: other weekdays'
    assert (hod.level, hod.usual, hod.samples) == ("hour_of_day", 200.0, 8)
    saturday = profile.estimate(monday_9 + 5 * 24)
    assert (saturday.level, saturday.usual, saturday.samples) == ("hour_of_day", 120.0, 8)
    add_run(profile, monday_9, np.full(10, 300.0))
    how = profile.estimate(monday_9 + 168)  # next Monday 09:00
    assert (how.level, how.usual, how.hour_of_week) == ("hour_of_week", 300.0, 9)


def test_an_hour_is_judged_against_the_profile_as_it_stood_when_the_hour_began() -> None:
    profile = SeasonalProfile(min_level_samples=8)
    add_run(profile, 100, np.full(20, 10.0))
    before = profile.estimate(101)
    add_run(profile, 101, np.full(20, 1000.0))  # this hour's own (anomalous) values
    assert profile.estimate(101) == before
    assert profile.estimate(102).usual > before.usual  # the next hour sees them


def test_median_and_spread_shrug_off_outliers() -> None:
    profile = SeasonalProfile(depth=32, min_level_samples=8)
    rng = np.random.default_rng(1)
    add_run(profile, 0, np.concatenate([rng.normal(100, 5, 28), [1e6, 1e6, 1e6, 1e6]]))
    estimate = profile.estimate(168)
    assert estimate.usual == pytest.approx(100, abs=4)
    assert estimate.spread == pytest.approx(5, abs=3)


def test_add_many_equals_adding_one_by_one_and_state_round_trips() -> None:
    values = np.random.default_rng(2).lognormal(3, 0.4, 2000)
    hours = np.arange(values.size) // 37
    one = SeasonalProfile(depth=16, recent=64, log=True)
    many = SeasonalProfile(depth=16, recent=64, log=True)
    for h, v in zip(hours.tolist(), values.tolist(), strict=True):
        one.add(h, v)
    for day in range(hours[-1] // 24 + 1):  # a day of hours per call, as replay does
        in_day = hours // 24 == day
        many.add_many(hours[in_day], values[in_day])
    for a, b in zip(one.state().values(), many.state().values(), strict=True):
        np.testing.assert_array_equal(a, b)
    copy = SeasonalProfile.from_state(many.state())
    for h in range(0, 200, 7):
        assert copy.estimate(h) == many.estimate(h)


def test_a_young_profile_saves_the_same_bytes_for_the_same_values() -> None:
    """Unwritten slots of the recent ring hold NaN, not leftover memory: a checkpoint of
    the same baselines is the same data, whatever the process allocated before."""
    states = []
    for _ in range(2):
        np.ones(4096, dtype=np.float32) * 7.0  # leaves non-zero memory for the next allocation
        profile = SeasonalProfile(depth=8, recent=64)
        profile.add(3, 12.5)
        states.append(profile.state())
    first, second = states
    assert all(first[part].tobytes() == second[part].tobytes() for part in first)
    assert np.isnan(first["recent"][1:]).all()


def test_row_medians_and_median_are_numpys_medians_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    rows = np.full((500, 48), np.nan)
    counts = rng.integers(1, 49, 500)
    for i, k in enumerate(counts):
        rows[i, :k] = rng.lognormal(0, 1, k)
    expected = [np.median(rows[i, :k]) for i, k in enumerate(counts)]
    assert row_medians(rows, counts).tolist() == expected
    assert [median(rows[i, :k]) for i, k in enumerate(counts)] == expected
    assert [median(rows[i, :k].astype(np.float32)) for i, k in enumerate(counts)] == [
        np.median(rows[i, :k].astype(np.float32)) for i, k in enumerate(counts)
    ]


def test_a_profile_that_keeps_bucket_spreads_judges_as_one_that_recomputes_them() -> None:
    """The replay keeps each bucket's median and spread between days; after writes, a new
    level (rescale) and a shift, every estimate is the one computed afresh, bit for bit."""
    rng = np.random.default_rng(4)
    hours = np.repeat(np.arange(4 * 168), 12)  # buckets mature in the third week
    values = rng.lognormal(4, 0.3, hours.size)
    kept, fresh = SeasonalProfile(keep_robust=True), SeasonalProfile()
    for day in range(hours[-1] // 24 + 1):
        for profile in (kept, fresh):
            if day == 17:
                profile.rescale(1.5)
            if day == 24:
                profile.shift(-3.0)
        assert kept.pooled_spread(day * 24) == fresh.pooled_spread(day * 24)
        in_day = hours // 24 == day
        for h in range(day * 24, day * 24 + 24, 5):
            assert kept.estimate(h) == fresh.estimate(h)
        for a, b in zip(kept.week_estimates(day), fresh.week_estimates(day), strict=True):
            np.testing.assert_array_equal(a, b)
        for profile in (kept, fresh):
            profile.add_many(hours[in_day], values[in_day])


def test_memory_is_bounded_and_within_64_kb_per_series() -> None:
    state = SeriesState()
    for h in range(3 * 168):
        for profile in (state.p95, state.p50, state.count, state.error_rate):
            add_run(profile, h, np.arange(100, dtype=np.float64))
    assert state.nbytes <= 64 * 1024
    size = state.nbytes
    for profile in (state.p95, state.p50, state.count, state.error_rate):
        add_run(profile, 5000, np.arange(10_000, dtype=np.float64))
    assert state.nbytes == size


def test_a_level_adopted_mid_day_scales_every_spread_the_day_is_judged_with() -> None:
    """A positive series that triples (a new level) is judged, for the rest of the day, in
    spreads three times wider: the bucket's and the pooled one it is shrunk towards, which
    is otherwise taken once a day and would still be the old level's."""
    profile, rng = SeasonalProfile(), np.random.default_rng(3)
    for week in range(3):
        for how in range(168):
            add_run(profile, week * 168 + how, 100 + 10 * rng.standard_normal(12))
    hour = 3 * 168 + 10
    before = profile.estimate(hour)
    assert before is not None and profile.pooled_spread(hour) is not None
    profile.rescale(3.0)
    after = profile.estimate(hour)
    assert after is not None
    assert after.usual == pytest.approx(3 * before.usual, rel=1e-5)
    assert after.spread == pytest.approx(3 * before.spread, rel=1e-5)


@pytest.mark.parametrize(
    "spread_of", [SeasonalProfile.pooled_spread, SeasonalProfile.recent_spread]
)
def test_a_series_born_late_in_a_day_is_not_judged_all_day_by_its_first_values(
    spread_of: Callable[[SeasonalProfile, int], float | None],
) -> None:
    """A series first seen at 20:00 whose first hour happened to be calm (spread 0.1) and
    whose next hours show its real noise (spread 10): by 23:00 the spreads it is judged
    with (the pooled spread its buckets' are shrunk towards, and its spread across all
    hours, the long-run floor) are the noisy hours', not that first hour's, which a spread
    taken once a day would keep until midnight. Once a day of buckets is mature and the
    ring of recent values full, each holds for the whole day again."""
    profile, rng = SeasonalProfile(), np.random.default_rng(5)
    born = 3 * 168 + 20
    add_run(profile, born, 100 + 0.1 * rng.standard_normal(30))
    early = spread_of(profile, born + 1)
    for hour in (born + 1, born + 2):
        add_run(profile, hour, 100 + 10 * rng.standard_normal(30))
    assert early is not None and early < 1
    assert (spread_of(profile, born + 3) or 0) > 3
    for hour in range(born + 3, born + 3 + 24):
        add_run(profile, hour, 100 + 10 * rng.standard_normal(30))
    day_start = (born + 3 + 24) // 24 * 24
    held = spread_of(profile, day_start)
    add_run(profile, day_start, 100 + 50 * rng.standard_normal(30))
    assert spread_of(profile, day_start + 1) == held
