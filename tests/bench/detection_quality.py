"""Detection-quality report: replay a labelled synthetic corpus through the CLI, score it.

Why: the detector is judged on labelled real-world series with NAB scoring, through the
replay CLI with its defaults and its ``is_anomaly`` column as-is. This runs exactly that on
our own labelled corpus (``synthetic_series.py``), so a change to the detector shows what it
does to early detection, misses and false alarms before the judge sees it.

    .venv/bin/python tests/bench/detection_quality.py [--keep DIR] [--seed N] [--jobs N]

The judged run of each series passes no ``--direction`` (the CLI default) and no
``WHYSLOW_*`` variable (they are removed from the environment, so settings are defaults).
Series whose incidents go another way (a traffic drop) get a second, unjudged run with
``--direction both``, on its own line. It is a report, not a test: the exit code is 0
whatever the scores, 2 if the CLI fails or breaks its output contract.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nab
from synthetic_series import DEFAULT_SEED, GeneratedSeries, generate_corpus, rfc3339

REPO = Path(__file__).resolve().parents[2]
OUTPUT_COLUMNS = ["timestamp", "value", "expected", "score", "is_anomaly"]


class CliFailure(Exception):
    """The replay CLI exited non-zero, timed out, or wrote output outside its contract."""


@dataclass
class Run:
    """One replay of one series, and what it flagged."""

    series: GeneratedSeries
    direction: str | None
    """None: the CLI default, the judged run."""
    flags: list[bool] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return "default" if self.direction is None else self.direction


def parse_time(text: str) -> float:
    """Epoch seconds of a contract timestamp: epoch seconds or RFC 3339 (naive means UTC)."""
    try:
        return float(text)
    except ValueError:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def read_flags(path: Path, series: GeneratedSeries) -> list[bool]:
    """The ``is_anomaly`` column, after checking the output against the contract."""
    with path.open(newline="") as source:
        reader = csv.reader(source)
        header = next(reader, [])
        if header[:5] != OUTPUT_COLUMNS:
            raise CliFailure(f"{path.name}: header {header}, expected {OUTPUT_COLUMNS}")
        rows = [row for row in reader if row]
    if len(rows) != series.rows:
        raise CliFailure(f"{path.name}: {len(rows)} rows for {series.rows} input rows")
    flags: list[bool] = []
    for line, (row, ts) in enumerate(zip(rows, series.timestamps, strict=True), start=2):
        try:
            same_time = math.isclose(parse_time(row[0]), ts, abs_tol=1e-3)
            score = float(row[3])
        except (ValueError, IndexError) as exc:
            raise CliFailure(f"{path.name} line {line}: {exc}") from exc
        if not same_time:
            raise CliFailure(f"{path.name} line {line}: timestamp {row[0]} is not the input's")
        if not 0.0 <= score <= 1.0 or row[4] not in ("0", "1"):
            raise CliFailure(f"{path.name} line {line}: score {row[3]}, is_anomaly {row[4]}")
        flags.append(row[4] == "1")
    return flags


def replay(run: Run, python: str, project: Path, out_dir: Path) -> Run:
    """Run the CLI on one series with default settings; fill in its flags and time."""
    output = out_dir / f"{run.series.spec.name}.{run.label}.out.csv"
    command = [python, "-m", "baselines", "replay", "--input", str(run.series.csv_path)]
    command += ["--output", str(output)]
    if run.direction is not None:
        command += ["--direction", run.direction]
    env = {name: value for name, value in os.environ.items() if not name.startswith("WHYSLOW_")}
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=project, env=env, capture_output=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CliFailure(f"{run.series.spec.name} ({run.label}): {exc}") from exc
    run.seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise CliFailure(
            f"{run.series.spec.name} ({run.label}): exit {done.returncode}: " + " | ".join(tail)
        )
    run.flags = read_flags(output, run.series)
    return run


@dataclass
class Quality:
    """What one run (or a set of runs) achieved against the labels."""

    rows: int = 0
    incidents: int = 0
    detected: int = 0
    false_positives: int = 0
    delays_min: list[float] = field(default_factory=list)
    scores: dict[str, list[nab.SeriesScore]] = field(default_factory=dict)
    """NAB scores per profile name, one per series."""

    def add(self, other: Quality) -> None:
        self.rows += other.rows
        self.incidents += other.incidents
        self.detected += other.detected
        self.false_positives += other.false_positives
        self.delays_min += other.delays_min
        for name, scores in other.scores.items():
            self.scores.setdefault(name, []).extend(scores)


def evaluate(run: Run) -> Quality:
    """Event-level counts (an incident is detected by any flag in its window; a false
    positive is any flag outside every window, probation included, since each would page
    someone), time to detect from the injected onset, and NAB scores per profile."""
    series, flags = run.series, run.flags
    windows = nab.window_rows(series.timestamps, series.windows)
    quality = Quality(rows=series.rows, incidents=len(windows))
    inside = [False] * series.rows
    for (first, last), onset in zip(windows, series.onsets, strict=True):
        inside[first : last + 1] = [True] * (last - first + 1)
        hit = next((row for row in range(first, last + 1) if flags[row]), None)
        if hit is not None:
            quality.detected += 1
            quality.delays_min.append((series.timestamps[hit] - onset) / 60.0)
    quality.false_positives = sum(f and not i for f, i in zip(flags, inside, strict=True))
    quality.scores = {p.name: [nab.score_series(flags, windows, p)] for p in nab.PROFILES}
    return quality


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.2f}" if whole else "-"


def _nab(scores: list[nab.SeriesScore]) -> str:
    """Normalised score; a series without windows shows its raw score in brackets."""
    value = nab.score_corpus(scores)
    if value is not None:
        return f"{value:.1f}"
    return f"({sum(s.raw for s in scores):.2f})"


HEADER = (
    f"{'series':<27} {'dir':<7} {'rows':>6} {'inc':>3} {'det':>3} {'FP':>4} {'prec':>5} "
    f"{'recall':>6} {'ttd_mean':>8} {'ttd_max':>7} {'NAB_std':>7} {'low_FP':>7} "
    f"{'low_FN':>7} {'secs':>5}"
)


def row_text(name: str, direction: str, quality: Quality, seconds: float | None) -> str:
    q, delays = quality, quality.delays_min
    mean = f"{sum(delays) / len(delays):.0f}" if delays else "-"
    worst = f"{max(delays):.0f}" if delays else "-"
    scores = [_nab(q.scores.get(p.name, [])) for p in nab.PROFILES]
    secs = f"{seconds:.1f}" if seconds is not None else ""
    return (
        f"{name:<27} {direction:<7} {q.rows:>6} {q.incidents:>3} {q.detected:>3} "
        f"{q.false_positives:>4} {_share(q.detected, q.detected + q.false_positives):>5} "
        f"{_share(q.detected, q.incidents):>6} {mean:>8} {worst:>7} {scores[0]:>7} "
        f"{scores[1]:>7} {scores[2]:>7} {secs:>5}"
    )


def _magnitude(series: GeneratedSeries, magnitude: float) -> str:
    return f"+{magnitude:g}pt" if series.spec.metric == "cpu" else f"x{magnitude:g}"


def incident_lines(run: Run) -> list[str]:
    """Each labelled incident and holiday of a judged run: when it was first flagged, in
    its window (what NAB rewards) and from its onset on (what on-call would see)."""
    series, lines = run.series, []
    flagged = [ts for ts, f in zip(series.timestamps, run.flags, strict=True) if f]
    for incident in series.spec.incidents:
        onset = incident.onset.timestamp()
        start, end = next(w for w in series.windows if w[0] <= onset <= w[1])
        hits = [ts for ts in flagged if start <= ts <= end]
        after = [ts for ts in hits if ts >= onset]
        first = f"{(hits[0] - onset) / 60:+.0f} min" if hits else "missed"
        from_onset = f"{(after[0] - onset) / 60:+.0f} min" if after else "none"
        lines.append(
            f"  {series.spec.name:<27} {incident.shape:<11} "
            f"{_magnitude(series, incident.magnitude):<6} {rfc3339(onset)}  first in window: "
            f"{first}; from onset: {from_onset}; {len(hits)} flag(s) in window"
        )
    for holiday in series.spec.holidays:
        day = holiday.isoformat()
        count = sum(rfc3339(ts)[:10] == day for ts in flagged)
        lines.append(
            f"  {series.spec.name:<27} {'holiday':<11} {'':<6} {day:<20}  "
            f"{count} flag(s) that day, all false positives"
        )
    return lines


def report(runs: list[Run], wall_s: float) -> None:
    judged = [r for r in runs if r.direction is None]
    extra = {r.series.spec.name: r for r in runs if r.direction is not None}
    print(HEADER)
    total, natural = Quality(), Quality()
    for run in judged:
        quality = evaluate(run)
        total.add(quality)
        print(row_text(run.series.spec.name, run.label, quality, run.seconds))
        other = extra.get(run.series.spec.name)
        if other is None:
            natural.add(quality)
            continue
        other_quality = evaluate(other)
        natural.add(other_quality)
        print(row_text("  (same, not judged)", other.label, other_quality, other.seconds))
    print("-" * len(HEADER))
    print(row_text("TOTAL judged (defaults)", "default", total, None))
    print(row_text("total, natural directions", "mixed", natural, None))
    print()
    print("Incidents (judged runs; minutes from the injected onset, negative = before it):")
    for run in judged:
        for line in incident_lines(run):
            print(line)
    rows = sum(r.series.rows for r in runs)
    busy = sum(r.seconds for r in runs)
    print()
    print(
        f"replay wall time: {wall_s:.1f}s for {len(runs)} runs, {rows} rows "
        f"(sum of per-run times {busy:.1f}s, {rows / busy:,.0f} rows/s per process)"
    )


LEGEND = """\
Legend: inc = labelled incidents (NAB windows), det = incidents with a flag in their window,
FP = flags outside every window, prec = det / (det + FP), recall = det / inc,
ttd = minutes from injected onset to first flag in the window (windows are centred on the
onset, so a flag may come before it). NAB_std / low_FP / low_FN = NAB normalised scores
(100 perfect, 0 = flags nothing; per-series bracketed = raw score of a series without
windows). Totals are NAB corpus scores (sums of raw, null, perfect). NAB ignores flags in
the first min(15% of rows, 750 rows) of each series; FP and prec do not. Judged run: CLI
defaults; 'not judged' lines rerun a series in its natural direction (--direction both)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="write the corpus and outputs here and keep them")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--jobs", type=int, default=2, help="replays run at once (default 2)")
    parser.add_argument(
        "--project", type=Path, default=REPO, help="directory the CLI runs in (default: repo)"
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter running the CLI")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="whyslow-bench-") as scratch:
        out_dir = args.keep or Path(scratch)
        series = generate_corpus(out_dir, args.seed)
        runs = [Run(s, None) for s in series]
        runs += [Run(s, "both") for s in series if s.spec.natural_direction != "high"]
        kept = "" if args.keep else " (deleted at exit; --keep DIR keeps it)"
        print(f"corpus: {len(series)} series, seed {args.seed}, in {out_dir}{kept}")
        print(f"CLI: {args.python} -m baselines replay (cwd {args.project})\n")
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(replay, r, args.python, args.project, out_dir) for r in runs]
            errors = [f.exception() for f in futures]
        failures = [str(e) for e in errors if isinstance(e, CliFailure)]
        bugs = [e for e in errors if e is not None and not isinstance(e, CliFailure)]
        if bugs:
            raise bugs[0]
        wall_s = time.perf_counter() - started
    if failures:
        for failure in failures:
            print(f"replay failed: {failure}", file=sys.stderr)
        return 2
    report(runs, wall_s)
    print()
    print(LEGEND)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
