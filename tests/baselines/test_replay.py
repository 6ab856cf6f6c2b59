import csv
import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from baselines.detect import DetectorConfig
from baselines.replay import ReplayInputError, replay


def week_csv(spike_at: int | None = None) -> str:
    """Two weeks, hourly, a daily cycle; optionally a 5x spike at one row."""
    start = datetime(2026, 11, 2, tzinfo=UTC)
    rows = ["timestamp,value"]
    for i in range(14 * 24):
        moment = start + timedelta(hours=i)
        value = 100 + 50 * (9 <= moment.hour < 18) + (i % 3)
        if i == spike_at:
            value *= 5
        rows.append(f"{moment:%Y-%m-%dT%H:%M:%SZ},{value}")
    return "\n".join(rows) + "\n"


def run(text: str, direction: str = "high") -> list[dict[str, str]]:
    sink = io.StringIO()
    replay(io.StringIO(text), sink, DetectorConfig(), direction)  # type: ignore[arg-type]
    return list(csv.DictReader(io.StringIO(sink.getvalue())))


def test_a_spike_is_flagged_once_and_the_daily_cycle_is_not() -> None:
    rows = run(week_csv(spike_at=10 * 24 + 14))
    flagged = [i for i, r in enumerate(rows) if r["is_anomaly"] == "1"]
    assert flagged == [10 * 24 + 14]
    assert list(rows[0]) == ["timestamp", "value", "expected", "score", "is_anomaly"]
    assert all(0 <= float(r["score"]) <= 1 for r in rows)
    assert float(rows[10 * 24 + 14]["expected"]) == pytest.approx(150, abs=3)


def test_direction_low_catches_a_drop_that_high_ignores() -> None:
    text = week_csv()
    lines = text.splitlines()
    ts, value = lines[1 + 11 * 24 + 12].split(",")
    lines[1 + 11 * 24 + 12] = f"{ts},{float(value) / 10}"
    dropped = "\n".join(lines) + "\n"
    assert not any(r["is_anomaly"] == "1" for r in run(dropped, "high"))
    assert sum(r["is_anomaly"] == "1" for r in run(dropped, "low")) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: expected a header"),
        ("1700000000,5\n1700003600,6\n", "expected a header, got data"),
        ("timestamp,value\n1700000000,abc\n", "line 2"),
        ("timestamp,value\nnot-a-time,5\n", "line 2"),
        ("timestamp,value\n1700000000\n", "line 2: expected timestamp,value"),
    ],
)
def test_bad_csv_is_refused_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(ReplayInputError, match=message):
        run(text)


def test_cli_contract(tmp_path) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text(week_csv(spike_at=200))
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
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "336 rows, 1 flagged" in done.stdout
    assert target.read_text().startswith("timestamp,value,expected,score,is_anomaly\n")
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
