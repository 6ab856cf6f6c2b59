"""Hostile input for ``whyslow replay``: any file is either replayed, one output
row per input row, or refused with ``ReplayInputError`` naming its line, which the CLI
prints before exiting 2. Anything else would be a traceback."""

from __future__ import annotations

import csv
import io
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baselines.detect import DetectorConfig
from baselines.replay import HEADER, ReplayInputError, ReplayResult, replay, replay_files
from tests.hostile import PROPERTIES, Tally, mangled, tally_fixture

tally = tally_fixture("replay CSV reader")

LINE = re.compile(r"^line (\d+): .+")
CONFIG = DetectorConfig()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replay")


def replay_text(text: str, tally: Tally, label: str) -> tuple[list[list[str]], ReplayResult] | None:
    """The output rows and result, or None when refused; a refusal must name a line of the
    input (or the one after its end)."""
    sink = io.StringIO()
    try:
        result = replay(io.StringIO(text, newline=""), sink, CONFIG)
    except ReplayInputError as exc:
        match = LINE.match(str(exc))
        assert match, f"the error names no line: {exc}"
        assert 1 <= int(match[1]) <= text.count("\n") + text.count("\r") + 1, str(exc)
        tally(f"{label} refused")
        return None
    tally(f"{label} replayed")
    rows = list(csv.reader(io.StringIO(sink.getvalue())))
    assert rows[0] == HEADER
    return rows[1:], result


def data_rows(text: str) -> list[list[str]]:
    """What replay must echo: the non-blank rows after the header."""
    return [row for row in list(csv.reader(io.StringIO(text, newline="")))[1:] if row]


cells = st.one_of(
    st.text(max_size=30),
    # within 1901..2038 as epoch seconds: a file spanning millennia is valid, and takes
    # the detector seconds (a UTC offset per day), which this budget cannot afford often
    st.floats(-(2.0**31), 2.0**31).map(repr),
    st.integers(-(2**31), 2**31).map(str),
    st.sampled_from(["1e300", "-5e-324", "9" * 400, "1.7976931348623157e308"]),
    st.sampled_from(["NaT", "nan", "inf", "-inf", "1_000", "1e309", "0x1p3", "\u0663", " 5 "]),
    st.sampled_from(["2026-11-16T09:00:00Z", "2026-11-16 09:00:00", "2026-11-16T09:00+02:00"]),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "-1e15"]),
)
"""What a cell of a CSV may hold: any text, numbers Python or numpy read differently,
timestamps of every accepted form, and ones at the edges of the calendar."""

csv_like = st.lists(
    st.lists(cells, min_size=0, max_size=4).map(",".join), min_size=0, max_size=12
).map(lambda rows: "timestamp,value\n" + "\n".join(rows))


@st.composite
def one_cell_changed(draw: st.DrawFn) -> str:
    """A valid series with one of its cells replaced by any cell."""
    text = draw(series())[0]
    rows = [row.split(",") for row in text.splitlines()]
    row = draw(st.integers(1, len(rows) - 1))
    rows[row][draw(st.integers(0, 1))] = draw(cells)
    return "\n".join(",".join(row) for row in rows) + "\n"


# baselines.baseline keeps profiles in float32: a value past 3.4e38 overflows to inf there
# (numpy warns; the rows are still written, scores within [0, 1], as asserted here)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@settings(PROPERTIES, max_examples=300)
@given(st.text(max_size=500) | csv_like | one_cell_changed())
def test_any_text_is_replayed_row_for_row_or_refused_naming_the_line(
    tally: Tally, text: str
) -> None:
    replayed = replay_text(text, tally, "any text")
    if replayed is not None:
        rows, _ = replayed
        assert [row[:2] for row in rows] == [row[:2] for row in data_rows(text)]


@settings(PROPERTIES, max_examples=150)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode), st.data())
def test_any_file_is_replayed_or_refused_naming_the_line(
    tally: Tally, workdir: Path, body: bytes, data: st.DataObject
) -> None:
    """Through ``replay_files`` (what the CLI calls), so bytes that are not UTF-8 and
    damaged files are read as the CLI reads them."""
    good = b"timestamp,value\n2026-11-16T09:00:00Z,120.5\n2026-11-16T09:05:00Z,99\n"
    body = data.draw(st.sampled_from([body, body + good, good])) if body else good
    if data.draw(st.booleans()):
        body = data.draw(mangled(body))
    source, output = workdir / "in.csv", workdir / "out.csv"
    source.write_bytes(body)
    try:
        series, result = replay_files(source, output, CONFIG, "high")
    except ReplayInputError as exc:
        assert LINE.match(str(exc)), f"the error names no line: {exc}"
        tally("any file refused")
        return
    tally("any file replayed")
    rows = list(csv.reader(output.open(newline="")))
    assert len(rows) - 1 == len(series.stamps) == result.score.size


START = datetime(2026, 11, 9, tzinfo=UTC).timestamp()  # a Monday


@st.composite
def series(draw: st.DrawFn) -> tuple[str, list[float], list[float]]:
    """A valid CSV: one timestamp form throughout (as a real export has), steps of one to
    sixty minutes, now and then a step back in time, any float values (NaN and the
    infinities too, which replay must skip, not judge)."""
    n = draw(st.integers(1, 300))
    steps = draw(
        st.lists(st.integers(-3600, 3600).filter(lambda s: s != 0), min_size=n, max_size=n)
    )
    epoch = []
    moment = START
    for step in steps:
        moment += abs(step) if draw(st.integers(0, 20)) else -abs(step)
        epoch.append(float(moment))
    values = draw(
        st.lists(
            st.floats(-1e6, 1e6) | st.sampled_from([math.nan, math.inf, -math.inf]),
            min_size=n,
            max_size=n,
        )
    )
    form = draw(st.sampled_from(["rfc3339", "space", "epoch"]))

    def stamp(t: float) -> str:
        moment = datetime.fromtimestamp(t, UTC)
        if form == "rfc3339":
            return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        if form == "space":
            return moment.strftime("%Y-%m-%d %H:%M:%S")
        return str(int(t))

    rows = [f"{stamp(t)},{v!r}" for t, v in zip(epoch, values, strict=True)]
    return "timestamp,value\n" + "\n".join(rows) + "\n", epoch, values


@settings(PROPERTIES, max_examples=120)
@given(series())
def test_a_valid_series_gives_one_output_row_per_input_row(
    tally: Tally, generated: tuple[str, list[float], list[float]]
) -> None:
    """In order, echoing each row; score in [0, 1]; rows not finite or older than an
    earlier row are not judged (score 0, no flag) and are counted."""
    text, epoch, values = generated
    replayed = replay_text(text, tally, "valid series")
    assert replayed is not None
    rows, result = replayed
    assert [row[:2] for row in rows] == [row[:2] for row in data_rows(text)]
    latest = -math.inf
    not_finite = older = 0
    for row, t, v in zip(rows, epoch, values, strict=True):
        score, flag = float(row[3]), row[4]
        assert 0.0 <= score <= 1.0 and flag in ("0", "1")
        if not math.isfinite(v):
            not_finite += 1
            assert (score, flag) == (0.0, "0")
        elif t < latest:
            older += 1
            assert (score, flag) == (0.0, "0")
        else:
            latest = t
    assert (result.skipped_not_finite, result.skipped_out_of_order) == (not_finite, older)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("t,v\n\n\n2026-11-16T09:00:00Z,x\n", 4),  # blank lines count as lines
        ('t,v\n"a\nb",1\n2,x\n', 4),  # so does a quoted line break
        ("t,v\n1," + "9" * 200_000 + "\n", 2),  # csv's field size limit
        ("t,v\nNaT,5\n", 2),  # numpy reads NaT as a time
        ("t,v\n0001-01-01T00:00:00+01:00,5\n", 2),  # year 0 in UTC
        ("t,v\n9999-12-31T23:59:59-01:00,5\n", 2),  # year 10000 in UTC
        ("t,v\n1e300,5\n", 2),
        ("t,v\n-1e15,5\n", 2),
    ],
)
def test_inputs_that_crashed_replay_are_refused_naming_their_line(
    tally: Tally, text: str, line: int
) -> None:
    """Each of these raised ValueError, OverflowError or csv.Error (a traceback from the
    CLI) or named the wrong line before these tests."""
    with pytest.raises(ReplayInputError, match=rf"^line {line}: "):
        replay(io.StringIO(text, newline=""), io.StringIO(), CONFIG)
    tally("known crash refused")


def test_a_file_that_is_not_utf8_is_refused_naming_the_line(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(b"t,v\n2026-11-16T09:00:00Z,1\n2026-11-16T09:05:00Z,\xff\n")
    with pytest.raises(ReplayInputError, match=r"^line 3: not UTF-8"):
        replay_files(source, tmp_path / "out.csv", CONFIG, "high")
