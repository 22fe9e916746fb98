"""Population-cycle analysis of a series: the Lotka–Volterra fit (``fit``), cycle statistics
(``cycles``), a comparison with a reference series, JSON and plots (``plots``).

Works on any prey/predator time series (``series``): our own ``simulate`` output
(``step,prey,predator``) and the Hudson's Bay lynx–hare pelt records shipped in
:mod:`bioflux.data`. The names of those modules are exported here too.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from bioflux.ecology.cycles import CycleStats, cycle_statistics, power_spectrum
from bioflux.ecology.fit import LVFit, fit_lotka_volterra, try_fit
from bioflux.ecology.plots import plot_analysis
from bioflux.ecology.series import (
    LYNX_HARE_FILE,
    REFERENCE_ALIASES,
    PopulationSeries,
    as_series,
    load_lynx_hare,
    nan_to_none,
)

__all__ = [
    "LYNX_HARE_FILE",
    "REFERENCE_ALIASES",
    "CycleStats",
    "LVFit",
    "PopulationSeries",
    "analyze",
    "compare_with_reference",
    "cycle_statistics",
    "fit_lotka_volterra",
    "load_lynx_hare",
    "plot_analysis",
    "power_spectrum",
]


def compare_with_reference(
    sim: PopulationSeries,
    ref: PopulationSeries,
    *,
    sim_fit: LVFit | None = None,
    sim_stats: CycleStats | None = None,
    ref_fit: LVFit | None = None,
    ref_stats: CycleStats | None = None,
) -> dict[str, Any]:
    """Side-by-side period, lag fraction, damping and LV fit R² of two series.

    Periods are in each series' own time unit; precomputed fits/stats are reused if given.
    """
    sim_stats = sim_stats or cycle_statistics(sim)
    ref_stats = ref_stats or cycle_statistics(ref)
    sim_fit = sim_fit or try_fit(sim)
    ref_fit = ref_fit or try_fit(ref)

    def pair(a: Any, b: Any) -> dict[str, Any]:
        return {"simulation": a, "reference": b}

    nan = float("nan")
    return nan_to_none(
        {
            "time_unit": pair(sim.time_unit, ref.time_unit),
            "period": pair(sim_stats.period, ref_stats.period),
            "period_peaks": pair(sim_stats.period_peaks, ref_stats.period_peaks),
            "lag_fraction": pair(sim_stats.lag_fraction, ref_stats.lag_fraction),
            "damping_ratio": pair(sim_stats.damping_ratio, ref_stats.damping_ratio),
            "n_cycles": pair(sim_stats.n_cycles, ref_stats.n_cycles),
            "r2_prey": pair(
                sim_fit.r2_prey if sim_fit else nan, ref_fit.r2_prey if ref_fit else nan
            ),
            "r2_predator": pair(
                sim_fit.r2_predator if sim_fit else nan, ref_fit.r2_predator if ref_fit else nan
            ),
        }
    )


def analyze(
    path_or_series: PopulationSeries | str | os.PathLike[str],
    reference: PopulationSeries | str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Fit LV, compute cycle statistics, compare with a reference, write JSON and PNG.

    Parameters
    ----------
    path_or_series
        A :class:`PopulationSeries` or a CSV path (e.g. ``simulate`` output).
    reference
        Optional series, CSV path, or ``"lynx_hare"`` for the packaged Hudson's Bay data.
    out_dir
        If given, ``analysis.json`` and ``analysis.png`` are written there.

    Returns
    -------
    dict
        JSON-ready result: ``series``, ``lv_fit``, ``cycles`` and, with a reference,
        ``reference`` and ``comparison``; ``files`` lists written paths.
    """
    series = as_series(path_or_series)
    fit = try_fit(series)
    stats = cycle_statistics(series)
    result: dict[str, Any] = {
        "series": series.summary(),
        "lv_fit": fit.to_dict() if fit else None,
        "cycles": stats.to_dict(),
    }
    ref_bundle = None
    if reference is not None:
        ref = as_series(reference)
        ref_fit = try_fit(ref)
        ref_stats = cycle_statistics(ref)
        ref_bundle = (ref, ref_fit, ref_stats)
        result["reference"] = {
            "series": ref.summary(),
            "lv_fit": ref_fit.to_dict() if ref_fit else None,
            "cycles": ref_stats.to_dict(),
        }
        result["comparison"] = compare_with_reference(
            series, ref, sim_fit=fit, sim_stats=stats, ref_fit=ref_fit, ref_stats=ref_stats
        )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        png = plot_analysis(series, fit, stats, out / "analysis.png", reference=ref_bundle)
        json_path = out / "analysis.json"
        result["files"] = {"json": str(json_path), "png": str(png)}
        buf = io.StringIO()
        json.dump(result, buf, indent=2, allow_nan=False)
        json_path.write_text(buf.getvalue() + "\n", encoding="utf-8")
    return result
