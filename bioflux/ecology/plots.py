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


def plot_calibration(
    data: PopulationSeries,
    data_stats: dict[str, Any],
    per_seed: dict[int, dict[str, Any]],
    pooled: dict[str, Any],
    doc: dict[str, Any],
    path: str | os.PathLike[str],
) -> Path:
    """The calibration figure: each species' mean cycle on normalised time (data, simulation
    pooled over seeds, the seeds' 10–90 % band), the data's and one seed's phase portraits (with
    the mean cycles), and the statistics table (data, simulation mean ± std over seeds)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    live = {s: v for s, v in per_seed.items() if v.get("mean_cycle") is not None}
    fig = Figure(figsize=(13.0, 8.0), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    phase = np.asarray(data_stats["mean_cycle"]["phase"])
    two = np.concatenate([phase, phase + 1.0, [2.0]])  # two cycles, closed

    def wrap(v: np.ndarray) -> np.ndarray:
        return np.concatenate([v, v, v[:1]])

    colors = {"prey": "tab:green", "predator": "tab:red"}
    names = {"prey": ("hare", "prey"), "predator": ("lynx", "predators")}
    for ax, species in zip(axes[0, :2], ("prey", "predator")):
        data_curve = np.asarray(data_stats["mean_cycle"][species])
        seeds = [np.asarray(v["mean_cycle"][species]) for v in live.values()]
        seeds = [c for c in seeds if np.all(np.isfinite(c))]
        if seeds:
            lo, hi = np.percentile(np.array(seeds), [10, 90], axis=0)
            ax.fill_between(
                two,
                wrap(lo),
                wrap(hi),
                color=colors[species],
                alpha=0.2,
                label=f"simulation, 10–90 % of {len(seeds)} seeds",
            )
        if pooled.get(species) is not None:
            ax.plot(
                two,
                wrap(np.asarray(pooled[species])),
                color=colors[species],
                lw=2,
                label="simulation (mean over seeds' cycles)",
            )
        ax.plot(
            two,
            wrap(data_curve),
            "k--o",
            ms=3,
            lw=1.5,
            label=f"{names[species][0]}, Hudson's Bay {doc['reference']['years']}",
        )
        ax.set_xlabel("time / period (0 = prey peak)")
        ax.set_ylabel(f"{names[species][1]} / cycle mean")
        ax.set_title(f"{names[species][1]}: mean cycle, normalised time")
        ax.legend(fontsize=8)
    ax = axes[1, 0]
    ax.plot(data.prey, data.predator, color="0.6", lw=0.8, label="annual records")
    mc = data_stats["mean_cycle"]
    ax.plot(
        wrap(np.asarray(mc["prey"])) * data.prey.mean(),
        wrap(np.asarray(mc["predator"])) * data.predator.mean(),
        "k-",
        lw=2,
        label="mean cycle (× means)",
    )
    ax.set_xlabel("hare pelts (thousands)")
    ax.set_ylabel("lynx pelts (thousands)")
    ax.set_title("data: phase portrait")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    if live:
        seed, first = next(iter(live.items()))
        s = first["series"]
        ax.plot(s["prey"], s["predator"], color="0.6", lw=0.5, label=f"seed {seed}")
        if pooled.get("prey") is not None:
            ax.plot(
                wrap(np.asarray(pooled["prey"])) * float(np.mean(s["prey"])),
                wrap(np.asarray(pooled["predator"])) * float(np.mean(s["predator"])),
                color="tab:blue",
                lw=2,
                label="mean cycle (× means)",
            )
        ax.legend(fontsize=8)
    ax.set_xlabel("prey (agents)")
    ax.set_ylabel("predators (agents)")
    ax.set_title("simulation: phase portrait")
    for ax in axes[:, 2]:
        ax.axis("off")
    table = doc["validation"]["statistics"]
    rows = []
    for name, entry in table.items():
        sim = entry["simulation"]
        mean, std = sim.get("mean"), sim.get("std")
        d = entry["data"]
        rows.append(
            [
                name + ("" if entry["in_objective"] else " *"),
                "-" if d is None else f"{d:.3f}",
                "-" if mean is None else f"{mean:.3f} ± {std:.3f}",
            ]
        )
    tab = axes[0, 2].table(
        cellText=rows,
        colLabels=["statistic", "data", "simulation"],
        colWidths=[0.46, 0.2, 0.36],
        loc="upper center",
        cellLoc="left",
    )
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.scale(1.0, 1.25)
    proof = doc["validation"]["proof"]
    n = len(doc["validation"]["seeds"])
    axes[1, 2].text(
        0.0,
        0.9,
        "* held out: not in the objective\n"
        f"lag/period within ±0.03 of the data: {proof['lag_within_0.03_of_data']['count']}/{n}\n"
        f"≥ 3 cycles, no extinction: {proof['three_cycles_no_extinction']['count']}/{n}\n"
        f"seeds {doc['validation']['seeds'][0]}–{doc['validation']['seeds'][-1]}, "
        f"{doc['validation']['steps']} steps (first {doc['validation']['burn_in']} dropped)",
        fontsize=9,
        va="top",
    )
    fig.suptitle("Calibrated ecology vs Hudson's Bay lynx–hare cycles")
    out = Path(path)
    fig.savefig(out, dpi=80)
    return out
