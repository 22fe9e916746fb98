"""The analysis figure: populations with the LV fit, phase portrait with the LV orbit, and the
prey power spectrum; one column per series."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from bioflux.ecology.cycles import CycleStats, cycle_statistics, power_spectrum
from bioflux.ecology.fit import LVFit, try_fit
from bioflux.ecology.series import PopulationSeries, uniform_grid


def plot_analysis(
    series: PopulationSeries,
    fit: LVFit | None,
    stats: CycleStats,
    path: str | os.PathLike[str],
    reference: PopulationSeries | tuple[PopulationSeries, LVFit | None, CycleStats] | None = None,
) -> Path:
    """Write a PNG: populations + LV fit, phase portrait + LV orbit, prey power spectrum.

    One column per series; a ``reference`` (series, or (series, fit, stats)) adds a second.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = [("simulation" if reference is not None else "series", series, fit, stats)]
    if reference is not None:
        if isinstance(reference, PopulationSeries):
            reference = (reference, try_fit(reference), cycle_statistics(reference))
        columns.append(("reference", *reference))

    fig = Figure(figsize=(6.0 * len(columns), 12.0), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, len(columns), squeeze=False)
    for j, (title, s, f, st) in enumerate(columns):
        _plot_column(axes[:, j], title, s, f, st)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def _plot_column(
    axes: Any, title: str, s: PopulationSeries, f: LVFit | None, st: CycleStats
) -> None:
    ax_t, ax_p, ax_s = axes
    fine = None
    if f is not None:
        try:
            fine = f.simulate(np.linspace(s.time[0], s.time[-1], 1000))
        except RuntimeError:
            fine = None

    # predators on their own (right) axis: ~300 predators under ~5000 prey on one axis would
    # be a flat line at the bottom
    ax_r = ax_t.twinx()
    ax_t.plot(s.time, s.prey, "o-", ms=2.5, lw=1, color="tab:green", label="prey")
    ax_r.plot(s.time, s.predator, "o-", ms=2.5, lw=1, color="tab:red", label="predator")
    if fine is not None and f is not None:
        ax_t.plot(
            fine.time, fine.prey, "--", color="darkgreen", label=f"LV prey R²={f.r2_prey:.2f}"
        )
        ax_r.plot(
            fine.time,
            fine.predator,
            "--",
            color="darkred",
            label=f"LV predator R²={f.r2_predator:.2f}",
        )
    for e in st.extinctions:
        ax_t.axvline(e["time"], color="k", ls=":", lw=1)
    ax_t.set_title(f"{title}: populations (period ≈ {st.period:.3g} {s.time_unit}s)")
    ax_t.set_xlabel(s.time_unit)
    ax_t.set_ylabel("prey", color="tab:green")
    ax_r.set_ylabel("predators", color="tab:red")
    ax_t.set_ylim(bottom=0)
    ax_r.set_ylim(bottom=0)
    handles = ax_t.get_legend_handles_labels()
    right = ax_r.get_legend_handles_labels()
    ax_t.legend(handles[0] + right[0], handles[1] + right[1], fontsize=8)

    ax_p.plot(s.prey, s.predator, "o-", ms=2.5, lw=0.8, color="tab:blue", alpha=0.7, label="data")
    if fine is not None and f is not None:
        ax_p.plot(fine.prey, fine.predator, "--", color="k", lw=1, label="LV orbit")
        ax_p.plot(*f.equilibrium, "k+", ms=12, label="LV equilibrium")
    ax_p.set_title(f"{title}: phase portrait (lag {st.lag_fraction:.2f} of period)")
    ax_p.set_xlabel("prey")
    ax_p.set_ylabel("predator")
    ax_p.legend(fontsize=8)

    _, xu, yu, dt = uniform_grid(s)
    for values, color, label in ((xu, "tab:green", "prey"), (yu, "tab:red", "predator")):
        freqs, power = power_spectrum(values, dt)
        ax_s.semilogy(freqs[1:], power[1:] + 1e-300, color=color, lw=1, label=label)
    if math.isfinite(st.period):
        ax_s.axvline(1.0 / st.period, color="k", ls=":", lw=1, label=f"1/{st.period:.3g}")
    ax_s.set_title(f"{title}: power spectrum")
    ax_s.set_xlabel(f"frequency (cycles / {s.time_unit})")
    ax_s.set_ylabel("power")
    ax_s.legend(fontsize=8)
