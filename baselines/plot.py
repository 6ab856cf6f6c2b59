"""A picture of a replay: the series, its seasonal band and the flags, so a person can see
why something was flagged (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from baselines.replay import ReplayResult, Series


def plot_replay(series: Series, result: ReplayResult, path: Path, title: str = "") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'whyslow[plot]'") from exc
    when = series.epoch.astype("datetime64[s]")
    flagged = result.is_anomaly.astype(bool)
    fig, ax = plt.subplots(figsize=(14, 4.5), dpi=100)
    ax.fill_between(
        when,
        result.lower,
        result.upper,
        color="tab:blue",
        alpha=0.15,
        step="mid",
        label="usual band (flag threshold)",
    )
    ax.plot(when, result.expected, color="tab:blue", linewidth=0.8, label="expected")
    ax.plot(when, series.values, color="black", linewidth=0.6, label="observed")
    ax.scatter(
        when[flagged],
        series.values[flagged],
        color="tab:red",
        s=40,
        zorder=3,
        label=f"flagged ({int(flagged.sum())})",
    )
    ax.set_title(title or "whyslow replay")
    ax.legend(loc="upper left", fontsize=8)
    low, high = np.nanpercentile(series.values, [0.5, 99.5])
    margin = (high - low) * 0.3 or 1.0
    ax.set_ylim(
        min(low, np.nanmin(result.lower)) - margin,
        max(high, np.nanmax(series.values[flagged], initial=high)) + margin,
    )
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
