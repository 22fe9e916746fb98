"""Cycle statistics of a population series: period (spectral and peak to peak), the
predator's lag behind the prey, damping, extinctions; the prey power spectrum."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.signal import detrend, find_peaks

from bioflux.ecology.series import PopulationSeries, nan_to_none, uniform_grid


@dataclass
class CycleStats:
    """Oscillation statistics of a prey–predator series (times in ``time_unit``)."""

    period: float
    period_peaks: float
    period_predator: float
    peak_times: list[float]
    lag: float
    lag_fraction: float
    damping_ratio: float
    n_cycles: int
    extinctions: list[dict[str, Any]] = field(default_factory=list)
    time_unit: str = "step"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready statistics (NaN becomes null)."""
        return nan_to_none(
            {
                "period": self.period,
                "period_peaks": self.period_peaks,
                "period_predator": self.period_predator,
                "peak_times": list(self.peak_times),
                "lag": self.lag,
                "lag_fraction": self.lag_fraction,
                "damping_ratio": self.damping_ratio,
                "n_cycles": self.n_cycles,
                "extinctions": [dict(e) for e in self.extinctions],
                "time_unit": self.time_unit,
            }
        )


def power_spectrum(
    values: np.ndarray, dt: float = 1.0, pad: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrum of a uniformly sampled, linearly detrended, Hann-windowed signal.

    Returns
    -------
    freqs, power
        Frequencies in cycles per time unit (zero-padded ``pad`` times) and power.
    """
    v = detrend(np.asarray(values, dtype=float), type="linear")
    n = v.size
    spec = np.fft.rfft(v * np.hanning(n), n=pad * n)
    return np.fft.rfftfreq(pad * n, d=dt), np.abs(spec) ** 2


def _spectral_peak_period(
    freqs: np.ndarray, power: np.ndarray, span: float, min_cycles: float = 2.0
) -> float:
    """Period of the largest spectral peak having at least ``min_cycles`` cycles in ``span``."""
    valid = np.flatnonzero(freqs >= min_cycles / span)
    if valid.size < 3 or not np.max(power[valid]) > 0:
        return float("nan")
    k = int(valid[np.argmax(power[valid])])
    f = freqs[k]
    if 0 < k < freqs.size - 1:  # parabolic refinement on log power
        p = np.log(np.maximum(power[k - 1 : k + 2], 1e-300))
        denom = p[0] - 2 * p[1] + p[2]
        if denom < 0:
            f = f + 0.5 * (p[0] - p[2]) / denom * (freqs[1] - freqs[0])
    return float(1.0 / f) if f > 0 else float("nan")


def estimated_period(values: np.ndarray, dt: float, span: float) -> float:
    """Dominant FFT period, NaN for a (numerically) constant or linear signal."""
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    if not np.std(detrend(values)) > 1e-9 * max(scale, 1e-300):
        return float("nan")
    return _spectral_peak_period(*power_spectrum(values, dt), span)


def _prey_peaks(x: np.ndarray, dt: float, period: float) -> np.ndarray:
    """Indices of prey peaks: prominence ≥ 25 % of the 5–95 % range, spaced ≥ period/2."""
    rng = float(np.percentile(x, 95) - np.percentile(x, 5))
    if rng <= 0:
        return np.array([], dtype=int)
    distance = max(1, int(0.5 * period / dt)) if math.isfinite(period) else 1
    peaks, _ = find_peaks(x, prominence=0.25 * rng, distance=distance)
    return peaks


def _cross_correlation_lag(x: np.ndarray, y: np.ndarray, max_lag: int) -> float:
    """Lag (samples, sub-sample refined) maximising corr(x[t], y[t + lag]) in ±max_lag."""
    n = x.size
    max_lag = max(1, min(max_lag, n - 3))
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.full(lags.size, -np.inf)
    for i, k in enumerate(lags):
        a, b = (x[: n - k], y[k:]) if k >= 0 else (x[-k:], y[: n + k])
        if a.std() > 0 and b.std() > 0:
            corr[i] = float(np.corrcoef(a, b)[0, 1])
    if not np.any(np.isfinite(corr)):
        return float("nan")
    i = int(np.argmax(corr))
    shift = 0.0
    if 0 < i < lags.size - 1 and np.all(np.isfinite(corr[i - 1 : i + 2])):
        c0, c1, c2 = corr[i - 1 : i + 2]
        denom = c0 - 2 * c1 + c2
        if denom < 0:
            shift = 0.5 * (c0 - c2) / denom
    return float(lags[i] + shift)


def _extinctions(series: PopulationSeries) -> list[dict[str, Any]]:
    """Every time a species' count reaches 0 (from a positive count, or at the start)."""
    events: list[dict[str, Any]] = []
    for name, counts in (("prey", series.prey), ("predator", series.predator)):
        dead = counts <= 0
        hits = np.flatnonzero(dead & ~np.concatenate([[False], dead[:-1]]))
        events += [{"species": name, "time": float(series.time[i])} for i in hits]
    return sorted(events, key=lambda e: e["time"])


def cycle_statistics(series: PopulationSeries) -> CycleStats:
    """Period, predator lag, damping, cycle count and extinctions of a series.

    - ``period``: dominant period of the detrended prey series from its FFT;
      ``period_peaks``: median spacing of prey peaks (``scipy.signal.find_peaks``).
    - ``lag``: shift maximising the prey–predator cross-correlation, searched within half a
      period, positive when the predator lags the prey; ``lag_fraction = lag / period``.
    - ``damping_ratio``: mean ratio of successive prey peak heights (< 1 decaying, ≈ 1 sustained).
    - ``n_cycles``: full peak-to-peak prey cycles; ``extinctions``: counts hitting 0.
    """
    t, x, y, dt = uniform_grid(series)
    span = float(t[-1] - t[0] + dt)
    period = estimated_period(x, dt, span)
    period_pred = estimated_period(y, dt, span)

    peaks = _prey_peaks(x, dt, period)
    peak_times = t[peaks]
    period_peaks = float(np.median(np.diff(peak_times))) if peaks.size >= 2 else float("nan")
    heights = x[peaks]
    if peaks.size >= 2 and np.all(heights[:-1] > 0):
        damping = float(np.mean(heights[1:] / heights[:-1]))
    else:
        damping = float("nan")

    ref_period = period if math.isfinite(period) else period_peaks
    if math.isfinite(ref_period):
        xd, yd = detrend(x), detrend(y)
        lag = _cross_correlation_lag(xd, yd, int(round(0.5 * ref_period / dt))) * dt
        lag_fraction = lag / ref_period
    else:
        lag = lag_fraction = float("nan")

    return CycleStats(
        period=period,
        period_peaks=period_peaks,
        period_predator=period_pred,
        peak_times=[float(v) for v in peak_times],
        lag=float(lag),
        lag_fraction=float(lag_fraction),
        damping_ratio=damping,
        n_cycles=max(int(peaks.size) - 1, 0),
        extinctions=_extinctions(series),
        time_unit=series.time_unit,
    )
