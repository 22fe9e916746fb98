"""Learning curves of a run: return per species and capture rate per iteration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bioflux.envs.config import SPECIES


def rolling_mean(values: list[float | None], window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values, skipping missing ones (None/NaN)."""
    a = np.array([np.nan if v is None else v for v in values], dtype=float)
    valid = ~np.isnan(a)
    sums = np.concatenate([[0.0], np.cumsum(np.where(valid, a, 0.0))])
    counts = np.concatenate([[0], np.cumsum(valid)])
    end = np.arange(1, len(a) + 1)
    start = np.maximum(0, end - window)
    n = counts[end] - counts[start]
    return np.where(n > 0, (sums[end] - sums[start]) / np.maximum(n, 1), np.nan)


def stage_boundaries(rows: list[dict[str, Any]], x_key: str) -> list[tuple[float, str]]:
    """Where each stage of a curriculum starts on the ``x_key`` axis (the value at the end of
    the stage before; 0 for the first) and its label (``"2: large"``); empty for rows of one
    stage or without stages."""
    out: list[tuple[float, str]] = []
    previous = None
    for row in rows:
        stage = row.get("stage")
        if stage is not None and stage != (previous or {}).get("stage"):
            x = previous[x_key] if previous else 0
            out.append((x, f"{stage}: {row.get('stage_name') or stage}"))
        previous = row
    return out if len(out) > 1 else []


def plot_learning_curves(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Return per species and capture rate per iteration against agent steps (env steps for
    rows without them), with a rolling mean over ~5% of the run when there are enough
    iterations to need one. A curriculum's rows (with ``stage``) get a vertical line and a
    label where each stage starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key = "agent_steps" if all(r.get("agent_steps") for r in rows) else "env_steps"
    steps = [r[x_key] for r in rows]
    window = max(1, len(rows) // 20)
    smooth = window > 1

    def draw(ax, ys: list[float | None], colour: str, label: str | None = None) -> None:
        raw = [np.nan if y is None else y for y in ys]
        ax.plot(
            steps,
            raw,
            color=colour,
            alpha=0.3 if smooth else 1.0,
            lw=1,
            label=None if smooth else label,
        )
        if smooth:
            ax.plot(steps, rolling_mean(ys, window), color=colour, lw=2, label=label)

    from matplotlib.ticker import EngFormatter, MaxNLocator

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax in (ax1, ax2):  # few, short step labels (12k, 1.5M) that never run together
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    for species, colour in zip(SPECIES, ("#d22", "#2a4")):
        draw(ax1, [r.get(f"{species}_return") for r in rows], colour, species)
    ax1.set_xlabel(x_key.replace("_", " "))
    ax1.set_ylabel("episode return (sum over the species' agents)")
    ax1.legend()
    draw(ax2, [r.get("capture_rate") for r in rows], "#333")
    ax2.set_xlabel(x_key.replace("_", " "))
    ax2.set_ylabel("capture rate")
    ax2.set_ylim(0, 1)
    for x, label in stage_boundaries(rows, x_key):
        for ax in (ax1, ax2):
            ax.axvline(x, color="#888", lw=1, ls="--")
            ax.text(
                x,
                1.0,
                f" {label}",
                transform=ax.get_xaxis_transform(),
                va="top",
                ha="left",
                fontsize=8,
                color="#555",
                rotation=90,
            )
    if smooth:
        fig.text(
            0.99,
            0.01,
            f"bold: rolling mean of {window} iterations",
            ha="right",
            fontsize=8,
            color="#555",
        )
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
