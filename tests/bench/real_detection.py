"""Detection on real labelled series: NAB's dev split through the replay CLI, NAB-scored.

Why: the detector must hold on telemetry nobody here wrote. This replays every series of
``../shared/data/nab-dev/`` through ``whyslow replay`` as shipped (one configuration for
every file: the CLI's defaults, no ``WHYSLOW_*`` variable), scores its ``is_anomaly`` column
with NAB's rules (``nab.py``), and prints beside it, in the same run:

- a rolling Gaussian (mean +- k sigma over a trailing window), at the best of a small grid of
  (k, window): the strongest simple reference, tuned on these very files;
- the replay CLI of an earlier commit (``--before``, default the detector before it judged
  surprise), run from a ``git archive`` of that commit with ``--direction both`` (the
  default now; it was ``high`` then);
- a threshold sweep over the ``score`` column (flags where the score reaches a threshold,
  as NAB's optimiser does), which shows whether the score ranks.

    .venv/bin/python tests/bench/real_detection.py [--data DIR] [--before REV] [--jobs N]

It also prints, per series, the flags, the false alerts (outside every window, after NAB's
probation) and false alerts per day of data, and, per labelled window, where in it the
first flag fell (0 on its first row, near 1 on its last; NAB rewards early ones) or that
it was missed, with the highest ``score`` inside it (0: no row in it was far enough out to
be a candidate). A report, not a test: exit 0 whatever the scores, 2 when a CLI run fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import nab
import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "nab-dev"
BEFORE = "756d1ca"
"""The last commit whose detector judged distance (robust z and two windows in a row)."""
SWEEP = (0.5, 0.9, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995, 0.99999, 0.999999)
GAUSSIAN_GRID = [
    (k, w, first) for k in (3.0, 4.0, 5.0, 6.0) for w in (288, 1000) for first in (False, True)
]


@dataclass
class Series:
    name: str
    epoch: np.ndarray
    values: np.ndarray
    windows: list[nab.RowWindow]
    path: Path


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text[:19]).replace(tzinfo=UTC).timestamp()


def load(data: Path) -> list[Series]:
    labels = json.loads((data / "labels" / "combined_windows.json").read_text())
    corpus = []
    for path in sorted((data / "data").glob("*/*.csv")):
        name = str(path.relative_to(data / "data"))
        with path.open() as source:
            rows = list(csv.reader(source))[1:]
        epoch = np.array([parse_time(row[0]) for row in rows])
        values = np.array([float(row[1]) for row in rows])
        spans = [(parse_time(a), parse_time(b)) for a, b in labels.get(name, [])]
        corpus.append(Series(name, epoch, values, nab.window_rows(epoch.tolist(), spans), path))
    return corpus


def replay_cli(
    project: Path, series: Series, out_dir: Path, *options: str
) -> tuple[np.ndarray, np.ndarray]:
    """(is_anomaly, score) of the replay CLI of ``project`` on one series."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / (series.name.replace("/", "__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHYSLOW_")}
    env["PYTHONPATH"] = str(project)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "baselines",
            "replay",
            *options,
            "--input",
            str(series.path),
            "--output",
            str(target),
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"replay of {series.name} in {project} failed: {done.stderr[-2000:]}")
    with target.open() as sink:
        rows = list(csv.DictReader(sink))
    return (
        np.array([row["is_anomaly"] == "1" for row in rows]),
        np.array([float(row["score"]) for row in rows]),
    )


def rolling_gaussian(values: np.ndarray, k: float, window: int, first: bool) -> np.ndarray:
    """Flags where a value is more than k sigma from the mean of the ``window`` before it
    (from a quarter window of history on); ``first``: only the first of consecutive ones
    (one alert per excursion, as an alerting rule would)."""
    sums = np.concatenate(([0.0], np.cumsum(values)))
    squares = np.concatenate(([0.0], np.cumsum(values * values)))
    ends = np.arange(values.size)
    starts = np.maximum(ends - window, 0)
    count = np.maximum(ends - starts, 1)
    mean = (sums[ends] - sums[starts]) / count
    sigma = np.sqrt(np.maximum((squares[ends] - squares[starts]) / count - mean * mean, 0.0))
    out = (ends >= window // 4) & (np.abs(values - mean) > k * np.maximum(sigma, 1e-9))
    if first:
        out[1:] &= ~out[:-1]
    return out


@dataclass
class Outcome:
    scores: dict[str, float | None]
    false_alerts: list[tuple[str, int, float, int]]
    """(series, false alerts, per day of data, flags)."""

    @property
    def worst_per_day(self) -> float:
        return max(per_day for _, _, per_day, _ in self.false_alerts)


def score(corpus: Sequence[Series], flags: Sequence[np.ndarray]) -> Outcome:
    scores = {
        profile.name: nab.score_corpus(
            nab.score_series(f.tolist(), s.windows, profile)
            for s, f in zip(corpus, flags, strict=True)
        )
        for profile in nab.PROFILES
    }
    false_alerts = []
    for s, f in zip(corpus, flags, strict=True):
        skip = nab.probation_rows(s.values.size)
        inside = np.zeros(s.values.size, dtype=bool)
        for first, last in s.windows:
            inside[first : last + 1] = True
        counted = np.asarray(f, dtype=bool) & ~inside & (np.arange(s.values.size) >= skip)
        days = max((s.epoch[-1] - s.epoch[skip]) / 86400.0, 1e-9)
        false_alerts.append((s.name, int(counted.sum()), counted.sum() / days, int(f.sum())))
    return Outcome(scores, false_alerts)


def window_lines(series: Series, flags: np.ndarray, scores: np.ndarray) -> list[str]:
    """One line per labelled window: where the first flag fell in it, or 'missed', and the
    highest score inside it."""
    lines = []
    for first, last in series.windows:
        hits = np.flatnonzero(flags[first : last + 1])
        where = f"flag at {hits[0] / (last - first + 1):.2f}" if hits.size else "missed"
        best = float(scores[first : last + 1].max())
        lines.append(f"{series.name:60s} rows {first}-{last}: {where:12s} max score {best:.6f}")
    return lines


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def line(name: str, outcome: Outcome) -> str:
    s = outcome.scores
    return (
        f"{name:44s} {fmt(s['standard']):>8s} {fmt(s['reward_low_FP_rate']):>8s} "
        f"{fmt(s['reward_low_FN_rate']):>8s} {outcome.worst_per_day:>10.2f}"
    )


def checkout(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev], cwd=REPO, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_all(
    job: Callable[[Series], tuple[np.ndarray, np.ndarray]], corpus: list[Series], jobs: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(job, corpus))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--before", default=BEFORE, help="git revision of the earlier detector")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if not (args.data / "labels" / "combined_windows.json").is_file():
        print(f"no NAB data at {args.data} (labels/combined_windows.json)", file=sys.stderr)
        return 2
    corpus = load(args.data)
    rows = sum(s.values.size for s in corpus)
    print(f"{len(corpus)} series, {rows:,} rows, {sum(len(s.windows) for s in corpus)} windows")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        started = time.perf_counter()
        try:
            shipped = run_all(lambda s: replay_cli(REPO, s, out / "now"), corpus, args.jobs)
            before_project = checkout(args.before, out / "before")
            earlier = run_all(
                lambda s: replay_cli(before_project, s, out / "b", "--direction", "both"),
                corpus,
                args.jobs,
            )
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            print(exc, file=sys.stderr)
            return 2
    wall = time.perf_counter() - started
    now = score(corpus, [flags for flags, _ in shipped])
    before = score(corpus, [flags for flags, _ in earlier])
    gaussians = {
        (k, w, first): score(corpus, [rolling_gaussian(s.values, k, w, first) for s in corpus])
        for k, w, first in GAUSSIAN_GRID
    }
    (k, w, first), gaussian = max(
        gaussians.items(), key=lambda kv: kv[1].scores["standard"] or -1e9
    )
    sweep = {
        threshold: score(corpus, [scores >= threshold for _, scores in shipped])
        for threshold in SWEEP
    }
    best_threshold, best_sweep = max(sweep.items(), key=lambda kv: kv[1].scores["standard"] or -1e9)

    print(f"\n{'detector':44s} {'standard':>8s} {'low FP':>8s} {'low FN':>8s} {'FA/day max':>10s}")
    print(line("whyslow replay (is_anomaly as written)", now))
    print(line(f"whyslow replay at {args.before} (--direction both)", before))
    rule = ", first of a run" if first else ""
    print(line(f"rolling Gaussian, best of grid (k={k:g}, {w} rows{rule})", gaussian))
    print(line(f"whyslow score >= {best_threshold:g} (best of sweep)", best_sweep))
    print(
        "\nscore sweep (standard):",
        ", ".join(f"{t:g}: {fmt(o.scores['standard'])}" for t, o in sweep.items()),
    )
    print(f"\n{'series':60s} {'flags':>5s} {'false':>5s} {'per day':>7s}")
    for name, false, per_day, flags in now.false_alerts:
        print(f"{name:60s} {flags:5d} {false:5d} {per_day:7.2f}")
    print()
    for s, (flags, scores) in zip(corpus, shipped, strict=True):
        for window in window_lines(s, flags, scores):
            print(window)
    print(f"\nreplays of both detectors: {wall:.1f}s wall, {args.jobs} jobs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
