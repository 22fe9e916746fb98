"""Dimensionless cycle statistics and the calibration objective (docs/ecology.md, "Calibrating
to the lynx–hare cycles").

Every statistic here is free of units, so a simulation counted in steps and agents compares
with the Hudson's Bay record counted in years and thousands of pelts:

- ``lag_fraction``: the predator's lag behind the prey as a fraction of the period (the
  cross-correlation lag of :func:`bioflux.ecology.cycles.cycle_statistics`);
- ``amp_prey``, ``amp_predator``: log amplitudes, the median over prey peak-to-peak cycles of
  ``ln(max / min)`` of each species within the cycle; ``amp_ratio``: ``amp_predator / amp_prey``;
- ``mean_cycle``: the phase-aligned mean cycle of each species. Every prey peak-to-peak cycle is
  resampled on ``PHASE_POINTS`` points of normalised time (0 = a prey peak, 1 = the next), each
  species divided by its mean over that cycle; the mean over cycles is the species' shape;
- ``regularity``: coefficient of variation of the peak-to-peak intervals (0 = clockwork);
- ``n_cycles`` and ``extinct``;
- left out of the objective (held out, to check the fit): ``rise_prey``/``rise_predator``, the
  fraction of the cycle a species spends rising from its trough to its peak in the mean cycle
  (the asymmetry of rise and crash); ``peak_lag_fraction``, the phase of the predator's peak in
  the mean cycle (a second lag estimator, by peaks rather than correlation);
  ``damping_ratio``; the absolute log amplitudes.

:func:`objective` scores one series against the reference statistics; lower is better.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bioflux.ecology.cycles import cycle_statistics
from bioflux.ecology.series import PopulationSeries, nan_to_none, uniform_grid

#: Points of normalised time per mean cycle.
PHASE_POINTS = 40

#: Scale of each objective term: a difference of this size costs 1.
SCALES: dict[str, float] = {
    "lag": 0.03,  # lag / period
    "amplitude": 0.25,  # |ln(amp_ratio_sim / amp_ratio_ref)|
    "shape": 0.1,  # 1 - correlation of the mean cycles, per species
    "regularity": 0.1,  # coefficient of variation of the cycle lengths, above the reference's
}
#: The objective's terms, each weighted 1 unless ``objective``'s ``weights`` say otherwise.
TERMS = ("lag", "amplitude", "shape_prey", "shape_predator", "regularity", "cycles")
#: Cycles a seed must complete; each missing one costs ``CYCLE_PENALTY``.
MIN_CYCLES = 3
CYCLE_PENALTY = 5.0
#: The loss of a seed that went extinct (or whose statistics are undefined).
EXTINCTION_LOSS = 100.0
#: The cost of one term whose statistic is undefined (no peaks, constant series).
UNDEFINED_TERM = 10.0

#: The statistics the objective uses, and those it leaves out (the held-out check).
FITTED = ("lag_fraction", "amp_ratio", "shape_prey", "shape_predator", "regularity", "n_cycles")
HELD_OUT = (
    "rise_prey",
    "rise_predator",
    "peak_lag_fraction",
    "damping_ratio",
    "amp_prey",
    "amp_predator",
)


def _segments(series: PopulationSeries, peak_times: list[float]):
    t, x, y, _ = uniform_grid(series)
    for a, b in zip(peak_times[:-1], peak_times[1:]):
        yield t, x, y, a, b


def mean_cycles(series: PopulationSeries, peak_times: list[float]) -> dict[str, np.ndarray]:
    """Phase-aligned mean cycle of each species (see the module docstring); ``cycles``: the
    per-cycle curves (``(n_cycles, PHASE_POINTS)`` per species), for bands."""
    phase = np.arange(PHASE_POINTS) / PHASE_POINTS
    per: dict[str, list[np.ndarray]] = {"prey": [], "predator": []}
    for t, x, y, a, b in _segments(series, peak_times):
        tt = a + phase * (b - a)
        for name, v in (("prey", x), ("predator", y)):
            c = np.interp(tt, t, v)
            m = float(np.mean(c))
            if m > 0:
                per[name].append(c / m)
    out: dict[str, Any] = {"phase": phase}
    for name, curves in per.items():
        arr = np.array(curves) if curves else np.full((0, PHASE_POINTS), np.nan)
        out[name] = arr.mean(axis=0) if len(arr) else np.full(PHASE_POINTS, np.nan)
        out[f"{name}_cycles"] = arr
    return out


def _log_amplitudes(series: PopulationSeries, peak_times: list[float]) -> tuple[float, float]:
    amps: dict[str, list[float]] = {"prey": [], "predator": []}
    for t, x, y, a, b in _segments(series, peak_times):
        sel = (t >= a) & (t <= b)
        for name, v in (("prey", x), ("predator", y)):
            seg = np.maximum(v[sel], 1e-9)
            if seg.size >= 2:
                amps[name].append(float(np.log(seg.max() / seg.min())))
    med = [float(np.median(amps[s])) if amps[s] else float("nan") for s in ("prey", "predator")]
    return med[0], med[1]


def _rise_fraction(curve: np.ndarray) -> float:
    """Fraction of the (circular) mean cycle from the trough to the peak."""
    if not np.all(np.isfinite(curve)):
        return float("nan")
    return float(((int(np.argmax(curve)) - int(np.argmin(curve))) % curve.size) / curve.size)


def cycle_realism(series: PopulationSeries) -> dict[str, Any]:
    """Every dimensionless statistic of the module docstring, for one series.

    Returns a dict of floats (NaN when undefined) plus ``mean_cycle`` (``prey``/``predator``
    arrays of ``PHASE_POINTS`` values, and per-cycle arrays) and ``period`` in the series'
    time unit.
    """
    stats = cycle_statistics(series)
    peaks = list(stats.peak_times)
    cycles = mean_cycles(series, peaks)
    amp_prey, amp_pred = _log_amplitudes(series, peaks)
    intervals = np.diff(peaks)
    regularity = (
        float(np.std(intervals) / np.mean(intervals)) if intervals.size >= 2 else float("nan")
    )
    pred_curve = cycles["predator"]
    peak_lag = (
        float(int(np.argmax(pred_curve)) / PHASE_POINTS)
        if np.all(np.isfinite(pred_curve))
        else float("nan")
    )
    if peak_lag > 0.5:
        peak_lag -= 1.0  # a predator peak just before the prey's
    return {
        "period": stats.period,
        "time_unit": series.time_unit,
        "lag_fraction": stats.lag_fraction,
        "amp_prey": amp_prey,
        "amp_predator": amp_pred,
        "amp_ratio": amp_pred / amp_prey if amp_prey > 0 else float("nan"),
        "regularity": regularity,
        "n_cycles": stats.n_cycles,
        "extinct": bool(stats.extinctions),
        "rise_prey": _rise_fraction(cycles["prey"]),
        "rise_predator": _rise_fraction(pred_curve),
        "peak_lag_fraction": peak_lag,
        "damping_ratio": stats.damping_ratio,
        "mean_cycle": cycles,
    }


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))) or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def compare(sim: dict[str, Any], ref: dict[str, Any]) -> dict[str, float]:
    """The shape correlations ``shape_prey``/``shape_predator`` of two ``cycle_realism``
    results (Pearson correlation of the mean cycles on normalised time)."""
    return {
        "shape_prey": _corr(sim["mean_cycle"]["prey"], ref["mean_cycle"]["prey"]),
        "shape_predator": _corr(sim["mean_cycle"]["predator"], ref["mean_cycle"]["predator"]),
    }


def objective(
    sim: dict[str, Any], ref: dict[str, Any], weights: dict[str, float] | None = None
) -> dict[str, Any]:
    """Loss of one simulated series against the reference (both ``cycle_realism`` results).

    ``loss`` = the sum of ``terms`` (each times its ``weights`` entry, 1 by default), each a
    difference divided by its ``SCALES`` entry:

    - ``lag``: ``|lag_fraction − ref| / 0.03``;
    - ``amplitude``: ``|ln(amp_ratio / ref amp_ratio)| / 0.25``;
    - ``shape_prey``, ``shape_predator``: ``(1 − correlation of the mean cycles) / 0.1``;
    - ``regularity``: ``max(0, regularity − ref) / 0.1`` (only irregularity beyond the data's);
    - ``cycles``: ``5 × max(0, 3 − n_cycles)``.

    An undefined statistic costs ``UNDEFINED_TERM`` for its term; an extinct series has loss
    ``EXTINCTION_LOSS`` (and no terms).
    """
    shapes = compare(sim, ref)
    if sim["extinct"]:
        return {"loss": EXTINCTION_LOSS, "terms": {}, **shapes}

    def term(value: float, scale: float) -> float:
        return float(value / scale) if math.isfinite(value) else UNDEFINED_TERM

    amp = (
        abs(math.log(sim["amp_ratio"] / ref["amp_ratio"]))
        if sim["amp_ratio"] > 0 and ref["amp_ratio"] > 0
        else float("nan")
    )
    terms = {
        "lag": term(abs(sim["lag_fraction"] - ref["lag_fraction"]), SCALES["lag"]),
        "amplitude": term(amp, SCALES["amplitude"]),
        "shape_prey": term(1.0 - shapes["shape_prey"], SCALES["shape"]),
        "shape_predator": term(1.0 - shapes["shape_predator"], SCALES["shape"]),
        "regularity": term(
            max(0.0, sim["regularity"] - ref["regularity"])
            if math.isfinite(sim["regularity"])
            else float("nan"),
            SCALES["regularity"],
        ),
        "cycles": CYCLE_PENALTY * max(0, MIN_CYCLES - int(sim["n_cycles"])),
    }
    w = weights or {}
    loss = sum(w.get(name, 1.0) * value for name, value in terms.items())
    return {"loss": float(loss), "terms": terms, **shapes}


def scalar_statistics(stats: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready scalar part of a ``cycle_realism`` result (no arrays)."""
    return nan_to_none({k: v for k, v in stats.items() if k != "mean_cycle"})


def summarize(values: list[float]) -> dict[str, Any]:
    """Mean, standard deviation, min and max of the finite values, and how many there were."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }
