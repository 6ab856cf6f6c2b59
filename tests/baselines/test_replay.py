import csv
import io
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from baselines.baseline import SeasonalProfile, local_hour
from baselines.detect import DetectorConfig
from baselines.judge import (
    GRID_VALUES,
    Habits,
    IncidentGate,
    Thresholds,
    deviation,
    floored_spread,
    likelihood,
    material_and_calm,
    raw_score,
)
from baselines.replay import (
    ReplayInputError,
    detect,
    level_offsets,
    move_level,
    replay,
    replay_thresholds,
)

START = datetime(2026, 10, 5, tzinfo=UTC)  # a Monday


def seasonal(weeks: int = 3, step_minutes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Latency-like: daily and weekly cycle, lognormal noise."""
    n = weeks * 7 * 24 * 60 // step_minutes
    epoch = START.timestamp() + np.arange(n) * step_minutes * 60.0
    hour = (epoch // 3600) % 24
    weekday = (epoch // 86400 + 3) % 7
    busy = np.where((weekday < 5) & (hour >= 9) & (hour < 18), 1.0, 0.4)
    rng = np.random.default_rng(seed)
    return epoch, 100 * (1 + busy) * rng.lognormal(0, 0.1, n)


def as_csv(epoch: np.ndarray, values: np.ndarray) -> str:
    rows = ["timestamp,value"]
    rows += [
        f"{datetime.fromtimestamp(t, UTC):%Y-%m-%dT%H:%M:%SZ},{v:.3f}"
        for t, v in zip(epoch, values, strict=True)
    ]
    return "\n".join(rows) + "\n"


def run(text: str, direction: str = "high") -> list[dict[str, str]]:
    sink = io.StringIO()
    replay(io.StringIO(text), sink, DetectorConfig(), direction)  # type: ignore[arg-type]
    return list(csv.DictReader(io.StringIO(sink.getvalue())))


def reference(epoch, values, config: DetectorConfig, direction: str):
    """The live detector's semantics, one row at a time, through the public pieces."""
    th = replay_thresholds(config, direction)  # type: ignore[arg-type]
    profile, gate, habits = SeasonalProfile(), IncidentGate(), Habits()
    zone, positive = ZoneInfo(config.timezone), bool(np.all(values > 0))
    flags, expected, scores, last_hour = [], [], [], None
    for t, v in zip(epoch.tolist(), values.tolist(), strict=True):
        hour = local_hour(t, zone)
        if hour != last_hour:
            last_hour = hour
            habits.begin_hour(hour, th)
            offset = gate.adopt(t, th)
            if offset is not None:
                move_level(profile, offset, positive)
        est = profile.estimate(hour, th.min_history)
        flag, score, x = False, np.array([np.nan]), np.array([v])
        if est is not None and est.history >= th.min_history:
            floors = (th, False, habits.frozen_quantum, profile.recent_spread(hour))
            c, widened = np.array([est.center]), np.array([est.spread])
            floored = floored_spread(c, widened, *floors)
            habits.seed(profile, float(c[0]), float(floored[0]), th)
            z, ratio, usual = deviation(x, c, floored, th, False)
            score = raw_score(z)
            surprise = habits.standardised(score, th)
            material, calm = material_and_calm(x, usual, z, ratio, th)
            exceeds = bool(material[0]) and bool(surprise[0] > th.critical)
            silent = not gate.open or (not gate.announced and exceeds)
            candidate = bool(material[0]) and silent and t > gate.quiet_until
            flag = gate.step(t, exceeds, bool(calm[0]), th)
            if gate.open:
                gate.keep_offsets(level_offsets(x, np.array([est.center]), positive))
            scores.append(float(likelihood(surprise)[0]) if candidate else 0.0)
        else:
            scores.append(0.0)
        habits.commit(score, x, th)
        flags.append(int(flag))
        expected.append(est.usual if est else v)
        if not gate.open:
            profile.add(hour, v)
    return np.array(flags), np.array(expected), np.array(scores)


@pytest.mark.parametrize(
    ("zone", "direction"), [("UTC", "high"), ("Europe/Paris", "both"), ("America/New_York", "low")]
)
def test_vectorised_replay_is_exactly_the_row_by_row_detector(zone: str, direction: str) -> None:
    epoch, values = seasonal(weeks=4)
    values[3000:3010] *= 6  # a spike
    values[5000:5300] *= 0.2  # a drop
    values[6000:] *= 1.8  # a level shift that stays
    config = DetectorConfig(timezone=zone)
    result = detect(epoch, values, config, direction)  # type: ignore[arg-type]
    flags, expected, scores = reference(epoch, values, config, direction)
    np.testing.assert_array_equal(result.is_anomaly, flags)
    np.testing.assert_allclose(result.expected, expected)
    np.testing.assert_allclose(result.score, scores)
    assert flags.sum() >= 1


def test_an_isolated_blip_is_not_an_incident() -> None:
    epoch, values = seasonal(weeks=3)
    blip = 2 * 7 * 288 + 100
    values[blip] *= 1.8  # several deviations out, but alone
    assert detect(epoch, values, DetectorConfig()).is_anomaly.sum() == 0
    values[blip + 1 : blip + 3] *= 2.5  # three far out in a row (the recent mean): an incident
    assert detect(epoch, values, DetectorConfig()).is_anomaly[blip + 1 : blip + 3].sum() == 1


def test_a_spike_is_flagged_once_and_the_weekly_cycle_is_not() -> None:
    epoch, values = seasonal(weeks=3)
    spike = 2 * 7 * 288 + 2 * 288 + 14 * 12  # week 3, Wednesday 14:00
    values[spike : spike + 3] *= 5
    rows = run(as_csv(epoch, values))
    flagged = [i for i, r in enumerate(rows) if r["is_anomaly"] == "1"]
    assert flagged == [spike]
    assert list(rows[0]) == ["timestamp", "value", "expected", "score", "is_anomaly"]
    assert all(0 <= float(r["score"]) <= 1 for r in rows)
    assert float(rows[spike]["score"]) > 0.999 > 0.99 > float(rows[spike - 20]["score"])
    assert float(rows[spike]["expected"]) == pytest.approx(200, rel=0.1)


def test_direction_low_catches_a_drop_that_high_ignores() -> None:
    epoch, values = seasonal(weeks=3)
    values[4000:4012] /= 10
    text = as_csv(epoch, values)
    assert not any(r["is_anomaly"] == "1" for r in run(text, "high"))
    assert sum(r["is_anomaly"] == "1" for r in run(text, "low")) == 1
    assert sum(r["is_anomaly"] == "1" for r in run(text, "both")) == 1


def test_a_level_shift_alerts_once_then_becomes_the_new_normal() -> None:
    epoch, values = seasonal(weeks=4)
    shift = 2 * 7 * 288
    values[shift:] *= 3  # a deploy that made everything 3x slower, for good
    result = detect(epoch, values, DetectorConfig())
    # one alert, on the first shifted value: 3x is further out than the series ever goes
    assert result.is_anomaly.sum() == 1 and result.is_anomaly[shift] == 1
    later = slice(shift + 7 * 288, None)  # a week on, the baseline has caught up
    np.testing.assert_allclose(np.median(result.expected[later] / values[later]), 1, atol=0.1)


def test_bad_rows_are_skipped_counted_and_still_written() -> None:
    epoch, values = seasonal(weeks=2)
    text = as_csv(epoch, values).splitlines()
    text[100] = text[100].split(",")[0] + ",nan"
    text[200], text[201] = text[201], text[200]  # out of order
    sink = io.StringIO()
    result = replay(io.StringIO("\n".join(text) + "\n"), sink, DetectorConfig())
    assert (result.skipped_not_finite, result.skipped_out_of_order) == (1, 1)
    assert len(sink.getvalue().splitlines()) == len(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: expected a header"),
        ("1700000000,5\n1700003600,6\n", "expected a header, got data"),
        ("timestamp,value\n1700000000,abc\n", "line 2: value 'abc' is not a number"),
        (
            "timestamp,value\n2026-01-01T00:00:00Z,1\nyesterday,5\n",
            "line 3: timestamp 'yesterday' is not RFC 3339",
        ),
        ("timestamp,value\n1700000000\n", "line 2: expected timestamp,value"),
    ],
)
def test_bad_csv_is_refused_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(ReplayInputError, match=message):
        run(text)


def test_timestamps_in_any_rfc3339_form_or_epoch_agree() -> None:
    base = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    moments = [base + timedelta(hours=i) for i in range(4)]
    zulu = "\n".join(f"{m:%Y-%m-%dT%H:%M:%SZ},1" for m in moments)
    offset = "\n".join(f"{m.astimezone(ZoneInfo('Europe/Paris')).isoformat()},1" for m in moments)
    epoch = "\n".join(f"{m.timestamp()},1" for m in moments)
    from baselines.replay import read_series

    parsed = [read_series(io.StringIO(f"t,v\n{body}\n")).epoch for body in (zulu, offset, epoch)]
    np.testing.assert_array_equal(parsed[0], parsed[1])
    np.testing.assert_array_equal(parsed[0], parsed[2])


def test_cli_contract_summary_and_plot(tmp_path) -> None:
    source, target, picture = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "p.png"
    epoch, values = seasonal(weeks=3)
    values[5000:5003] *= 8  # a sustained rise (one value alone is a blip)
    source.write_text(as_csv(epoch, values))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "baselines",
            "replay",
            "--input",
            str(source),
            "--output",
            str(target),
            "--summary",
            "--plot",
            str(picture),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"{epoch.size} rows, 1 flagged" in done.stdout
    assert target.read_text().startswith("timestamp,value,expected,score,is_anomaly\n")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 20_000
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "baselines",
            "replay",
            "--input",
            str(tmp_path / "missing.csv"),
            "--output",
            str(target),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "missing.csv" in bad.stderr


@pytest.mark.parametrize("jump", [35, 65, 5 * 60])
def test_a_new_series_alerts_within_its_first_hours(jump: int) -> None:
    """A series first seen at 08:00 (one value a minute) that jumps fivefold 35 or 65
    minutes or 5 hours later is flagged once, within two minutes (a surprise is the mean
    of three scores): it is judged from its 30th value, against a score distribution
    started from its first values' scores, not only from the next hour or midnight on."""
    start = datetime(2026, 3, 2, 8, tzinfo=UTC).timestamp()
    epoch = start + 60.0 * np.arange(6 * 60)
    values = np.random.default_rng(3).lognormal(np.log(100.0), 0.05, epoch.size)
    values[jump:] *= 5
    result = detect(epoch, values, DetectorConfig(), "high")
    flagged = np.flatnonzero(result.is_anomaly)
    assert flagged.size == 1 and jump <= flagged[0] <= jump + 2, flagged


def test_trouble_that_opens_in_the_cooldown_alerts_only_if_it_outlasts_it() -> None:
    """An aftershock inside the cooldown stays silent; trouble that began inside it and is
    still there once it is over is new, and alerts then, once."""
    th = Thresholds()
    gate = IncidentGate()
    assert gate.step(0.0, True, False, th)  # the first incident alerts
    gate.step(60.0, False, True, th)  # calm: closed, quiet until 60 s + the cooldown
    assert not gate.step(120.0, True, False, th)  # an aftershock: silent
    gate.step(180.0, False, True, th)  # over: quiet until 180 s + the cooldown
    quiet_until = 180.0 + th.cooldown_seconds
    minutes = np.arange(240.0, quiet_until + 600.0, 60.0)
    alerts = [gate.step(float(t), True, False, th) for t in minutes]
    assert not alerts[0]  # opens inside the cooldown: silent...
    assert [float(t) for t, a in zip(minutes, alerts, strict=True) if a] == [
        float(minutes[minutes > quiet_until][0])
    ]  # ...and alerts once, on its first minute past the cooldown


@pytest.mark.parametrize("learnt", [100, 5000])
def test_the_live_one_score_surprise_is_the_replays(learnt: int) -> None:
    """The live detector standardises one window at a time, the replay a day at once: the
    same numbers, missing scores and a lone spike (judged alone only once 1,000 scores are
    learnt) included."""
    th = Thresholds()
    scores = np.random.default_rng(7).gamma(2.0, 0.3, 200)
    scores[[20, 21, 90]] = np.nan
    scores[148:151] = [0.5, 0.5, 4.5]  # a lone spike: its recent mean is ordinary enough
    habits = Habits(mean=0.6, sd=0.4, learnt=learnt, tail=[0.5, 0.7])
    whole = habits.standardised(scores, th)
    one_by_one = []
    for score in scores.tolist():
        one_by_one.append(habits.standardised_one(score, th))
        habits.commit_one(score, 1.0, th)
    np.testing.assert_allclose(whole, one_by_one, equal_nan=True)
    spike_alerts = whole[150] > th.critical
    assert spike_alerts == (learnt >= th.memory_values)


def test_the_step_a_series_takes_is_its_values_grid_learnt_alike_live_and_in_replay() -> None:
    """The smallest step is read from the values' grid, not from consecutive steps: a young
    latency series that went 14 ms, 150 ms, 14.5 ms steps by 0.5 ms, not 136 ms (which
    made a 30x slowdown ordinary). A count steps by 1. One value at a time (live) and a
    batch at a time (replay) learn the same grid."""
    th = Thresholds()
    for values, step in (([14.0, 150.0, 14.5, 13.0], 0.5), ([3.0, 7.0, 3.0, 5.0, 4.0], 1.0)):
        live, batch = Habits(), Habits()
        for value in values:
            live.commit_one(math.nan, value, th)
        batch.commit(np.full(len(values), np.nan), np.array(values), th)
        assert live.quantum == batch.quantum == step
        assert live.grid == batch.grid == sorted(set(values))
    rng = np.random.default_rng(3)
    values = np.round(rng.lognormal(3.0, 0.5, 500), 1)
    live, batch = Habits(), Habits()
    for value in values.tolist():
        live.commit_one(math.nan, value, th)
    for part in np.array_split(values, 7):
        batch.commit(np.full(part.size, np.nan), part, th)
    assert len(live.grid) == GRID_VALUES and live.grid == batch.grid
    assert live.quantum == batch.quantum


@pytest.mark.parametrize("live", [True, False], ids=["live", "replay"])
def test_a_few_distinct_values_are_no_grid_until_one_of_them_repeats(live: bool) -> None:
    """A young latency series' first two p95s, 12.4 ms and 147.6 ms, are 135 ms apart by
    chance: frozen as its step, that gap made a 30x slowdown (424 ms against 14 ms)
    ordinary. A continuous series' values do not repeat; a count's do at once, and then
    its step is its grid's."""
    th = Thresholds()

    def frozen(values: list[float], hour: int) -> float:
        if live:
            for value in values:
                habits.commit_one(math.nan, value, th)
        else:
            habits.commit(np.full(len(values), np.nan), np.array(values), th)
        habits.begin_hour(hour, th)
        return habits.frozen_quantum

    habits = Habits()
    assert frozen([12.4, 147.6], 0) == 0.0
    assert frozen([60.3], 1) == 0.0
    assert frozen([12.4], 2) == pytest.approx(60.3 - 12.4)
    habits = Habits()
    assert frozen([3.0, 5.0, 3.0], 0) == 2.0
