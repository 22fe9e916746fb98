"""Population-cycle analysis: Lotka–Volterra fitting, cycle statistics, plots.

Works on any prey/predator time series: our own ``simulate`` output (``step,prey,predator``)
and the Hudson's Bay lynx–hare pelt records shipped in :mod:`bioflux.data`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import IO, Any

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import least_squares
from scipy.signal import detrend, find_peaks

__all__ = [
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

LYNX_HARE_FILE = "hudson_bay_lynx_hare.csv"
REFERENCE_ALIASES = ("lynx_hare", "lynx-hare", "hudson_bay")

_TIME_COLUMNS = ("step", "time", "t", "year", "tick", "generation")
_PREY_COLUMNS = ("prey", "n_prey", "prey_count", "num_prey", "hare")
_PREDATOR_COLUMNS = (
    "predator",
    "predators",
    "n_predator",
    "n_predators",
    "predator_count",
    "num_predators",
    "lynx",
)
_TIME_UNITS = {"year": "year", "step": "step", "tick": "step"}


# --------------------------------------------------------------------------- data


@dataclass
class PopulationSeries:
    """Prey and predator counts sampled at increasing times."""

    time: np.ndarray
    prey: np.ndarray
    predator: np.ndarray
    time_unit: str = "step"

    def __post_init__(self) -> None:
        self.time = np.asarray(self.time, dtype=float).ravel()
        self.prey = np.asarray(self.prey, dtype=float).ravel()
        self.predator = np.asarray(self.predator, dtype=float).ravel()
        n = self.time.size
        if self.prey.size != n or self.predator.size != n:
            raise ValueError(
                f"time, prey and predator must have equal lengths, got "
                f"{n}, {self.prey.size}, {self.predator.size}"
            )
        if n < 2:
            raise ValueError(f"a population series needs at least 2 samples, got {n}")
        if not np.all(np.isfinite(self.time)) or np.any(np.diff(self.time) <= 0):
            raise ValueError("time must be finite and strictly increasing")
        if not (np.all(np.isfinite(self.prey)) and np.all(np.isfinite(self.predator))):
            raise ValueError("prey and predator counts must be finite")

    def __len__(self) -> int:
        return int(self.time.size)

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike[str] | IO[str],
        time_col: str | None = None,
        prey_col: str | None = None,
        predator_col: str | None = None,
    ) -> PopulationSeries:
        """Read a CSV with a time, a prey and a predator column.

        Columns are matched case-insensitively; by default ``step``/``time``/``year``,
        ``prey``/``hare`` and ``predator``/``lynx`` are recognised. Extra columns are ignored.

        Raises
        ------
        ValueError
            If a column is missing (the message names it and lists the header).
        """
        if isinstance(path, (str, os.PathLike)):
            with open(path, newline="", encoding="utf-8") as fh:
                return cls._from_reader(fh, time_col, prey_col, predator_col, str(path))
        return cls._from_reader(path, time_col, prey_col, predator_col, "<stream>")

    @classmethod
    def _from_reader(
        cls,
        fh: IO[str],
        time_col: str | None,
        prey_col: str | None,
        predator_col: str | None,
        source: str,
    ) -> PopulationSeries:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{source}: empty CSV, expected a header row")
        header = [h.strip() for h in header]
        lower = {h.lower(): i for i, h in enumerate(header)}

        def pick(role: str, given: str | None, candidates: tuple[str, ...]) -> int | str:
            names = (given,) if given is not None else candidates
            for name in names:
                if name.lower() in lower:
                    return lower[name.lower()]
            return f"{role} (looked for {', '.join(repr(n) for n in names)})"

        found = {
            "time": pick("time", time_col, _TIME_COLUMNS),
            "prey": pick("prey", prey_col, _PREY_COLUMNS),
            "predator": pick("predator", predator_col, _PREDATOR_COLUMNS),
        }
        missing = [v for v in found.values() if isinstance(v, str)]
        if missing:
            raise ValueError(
                f"{source}: missing column(s): {'; '.join(missing)}; "
                f"available columns: {', '.join(header)}"
            )
        idx = {k: int(v) for k, v in found.items()}
        cols: dict[str, list[float]] = {k: [] for k in idx}
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                for k, i in idx.items():
                    cols[k].append(float(row[i]))
            except (IndexError, ValueError) as exc:
                raise ValueError(f"{source}: line {lineno}: cannot parse {row!r}") from exc
        time_name = header[idx["time"]].lower()
        return cls(
            time=np.array(cols["time"]),
            prey=np.array(cols["prey"]),
            predator=np.array(cols["predator"]),
            time_unit=_TIME_UNITS.get(time_name, time_name),
        )

    def summary(self) -> dict[str, Any]:
        """Length, time span and basic population statistics, JSON-ready."""
        return {
            "n_samples": len(self),
            "time_unit": self.time_unit,
            "t_start": float(self.time[0]),
            "t_end": float(self.time[-1]),
            "prey_mean": float(self.prey.mean()),
            "predator_mean": float(self.predator.mean()),
            "prey_max": float(self.prey.max()),
            "predator_max": float(self.predator.max()),
        }


def load_lynx_hare() -> PopulationSeries:
    """Hudson's Bay hare (prey) and lynx (predator) pelts, thousands, 1845–1935."""
    resource = files("bioflux.data").joinpath(LYNX_HARE_FILE)
    with resource.open("r", encoding="utf-8", newline="") as fh:
        return PopulationSeries._from_reader(fh, "Year", "Hare", "Lynx", LYNX_HARE_FILE)


def _as_series(obj: PopulationSeries | str | os.PathLike[str]) -> PopulationSeries:
    if isinstance(obj, PopulationSeries):
        return obj
    if isinstance(obj, str) and obj.lower() in REFERENCE_ALIASES:
        return load_lynx_hare()
    return PopulationSeries.from_csv(obj)


def _uniform(series: PopulationSeries) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Series on a uniform time grid (linear interpolation if the sampling is irregular)."""
    t = series.time
    steps = np.diff(t)
    dt = float(np.median(steps))
    if np.allclose(steps, dt, rtol=1e-6, atol=0.0):
        return t, series.prey, series.predator, dt
    grid = np.arange(t[0], t[-1] + 0.5 * dt, dt)
    return grid, np.interp(grid, t, series.prey), np.interp(grid, t, series.predator), dt


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


# ----------------------------------------------------------------- Lotka–Volterra


@dataclass
class LVFit:
    """Lotka–Volterra parameters fitted to a series.

    dx/dt = alpha x - beta x y,  dy/dt = delta x y - gamma y, with x(t0) = x0, y(t0) = y0.
    """

    alpha: float
    beta: float
    gamma: float
    delta: float
    x0: float
    y0: float
    t0: float
    r2_prey: float
    r2_predator: float
    cost: float = float("nan")
    time_unit: str = "step"

    @property
    def equilibrium(self) -> tuple[float, float]:
        """Coexistence point (prey*, predator*) = (gamma/delta, alpha/beta)."""
        return self.gamma / self.delta, self.alpha / self.beta

    @property
    def period_small_oscillation(self) -> float:
        """Period of small oscillations around the equilibrium, 2π/√(αγ)."""
        return 2.0 * math.pi / math.sqrt(self.alpha * self.gamma)

    def simulate(self, t: Iterable[float] | np.ndarray) -> PopulationSeries:
        """Fitted trajectories at (strictly increasing) times ``t``."""
        t = np.asarray(t, dtype=float)
        theta = np.log([self.alpha, self.beta, self.gamma, self.delta, self.x0, self.y0])
        xy = _lv_solve(theta, t - self.t0)
        if xy is None:
            raise RuntimeError("integration of the fitted Lotka-Volterra system failed")
        return PopulationSeries(t, xy[0], xy[1], self.time_unit)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters, fit quality and derived quantities."""
        prey_eq, pred_eq = self.equilibrium
        return _nan_to_none(
            {
                "alpha": self.alpha,
                "beta": self.beta,
                "gamma": self.gamma,
                "delta": self.delta,
                "x0": self.x0,
                "y0": self.y0,
                "t0": self.t0,
                "r2_prey": self.r2_prey,
                "r2_predator": self.r2_predator,
                "cost": self.cost,
                "equilibrium": {"prey": prey_eq, "predator": pred_eq},
                "period_small_oscillation": self.period_small_oscillation,
                "time_unit": self.time_unit,
            }
        )


def _lv_rhs_log(_t: float, w: np.ndarray, a: float, b: float, g: float, d: float) -> list[float]:
    # log-state form: u = ln x, v = ln y -> stays positive and well conditioned
    return [a - b * math.exp(w[1]), d * math.exp(w[0]) - g]


def _lv_rhs_sens(_t: float, w: np.ndarray, a: float, b: float, g: float, d: float) -> np.ndarray:
    """Log-state LV plus forward sensitivities w.r.t. log(alpha, beta, gamma, delta, x0, y0)."""
    ex, ey = math.exp(w[0]), math.exp(w[1])
    su, sv = w[2:8], w[8:14]
    dsu = -b * ey * sv
    dsv = d * ex * su
    dsu[0] += a
    dsu[1] -= b * ey
    dsv[2] -= g
    dsv[3] += d * ex
    out = np.empty(14)
    out[0] = a - b * ey
    out[1] = d * ex - g
    out[2:8] = dsu
    out[8:14] = dsv
    return out


_SOLVER = {"method": "DOP853", "rtol": 1e-6, "atol": 1e-8}


def _lv_solve(theta: np.ndarray, t_rel: np.ndarray, sens: bool = False) -> np.ndarray | None:
    """Integrate from t_rel = 0 to each t_rel (either direction); None on failure.

    Returns shape (2, n) (prey, predator), or (2 + 12, n) with log-state sensitivities.
    """
    a, b, g, d = np.exp(theta[:4])
    w0 = [theta[4], theta[5]]
    rhs = _lv_rhs_log
    if sens:
        s0 = np.zeros(12)
        s0[4] = 1.0  # du(0)/dlog x0
        s0[6 + 5] = 1.0  # dv(0)/dlog y0
        w0 = [*w0, *s0]
        rhs = _lv_rhs_sens
    out = np.empty((len(w0), t_rel.size))
    with np.errstate(over="ignore", invalid="ignore"):
        for mask in (t_rel >= 0, t_rel < 0):
            if not mask.any():
                continue
            tt = t_rel[mask]
            end = tt[-1] if tt[-1] >= 0 else tt[0]
            if end == 0.0:
                out[:, mask] = np.asarray(w0)[:, None]
                continue
            order = np.argsort(tt) if end > 0 else np.argsort(tt)[::-1]
            try:
                sol = solve_ivp(rhs, (0.0, end), w0, t_eval=tt[order], args=(a, b, g, d), **_SOLVER)
            except (OverflowError, ValueError):
                return None
            if sol.status != 0 or not np.all(np.isfinite(sol.y)):
                return None
            out[:, mask] = sol.y[:, np.argsort(order)]
    if np.any(np.abs(out[:2]) > 700):
        return None
    out[:2] = np.exp(out[:2])
    return out


def _r2(obs: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(np.sum((obs - obs.mean()) ** 2))
    if ss_tot == 0.0:
        return float("nan")
    return 1.0 - float(np.sum((obs - pred) ** 2)) / ss_tot


def _gradient_matching_guess(t: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """LV rates from a regression of finite-difference log-derivatives, or None."""
    floor_x, floor_y = 1e-3 * max(x.max(), 1e-12), 1e-3 * max(y.max(), 1e-12)
    lx, ly = np.log(np.maximum(x, floor_x)), np.log(np.maximum(y, floor_y))
    dt = np.diff(t)
    gx, gy = np.diff(lx) / dt, np.diff(ly) / dt
    xm, ym = 0.5 * (x[1:] + x[:-1]), 0.5 * (y[1:] + y[:-1])
    one = np.ones_like(xm)
    try:
        (alpha, mbeta), *_ = np.linalg.lstsq(np.column_stack([one, ym]), gx, rcond=None)
        (mgamma, delta), *_ = np.linalg.lstsq(np.column_stack([one, xm]), gy, rcond=None)
    except np.linalg.LinAlgError:
        return None
    rates = np.array([alpha, -mbeta, -mgamma, delta])
    if not np.all(np.isfinite(rates)) or np.any(rates <= 0):
        return None
    return rates


def _dominant_period(t: np.ndarray, x: np.ndarray) -> float:
    tu, xu, _, dt = _uniform(PopulationSeries(t, x, x))
    return _period(xu, dt, float(tu[-1] - tu[0] + dt))


def _orbit_period(theta: np.ndarray) -> float:
    """Period of the LV orbit through (x0, y0): time between upward crossings of prey*."""
    a, b, g, d = np.exp(theta[:4])
    u_eq = math.log(g / d)

    def crossing(_t: float, w: np.ndarray, *_args: float) -> float:
        return w[0] - u_eq

    crossing.direction = 1.0  # type: ignore[attr-defined]
    horizon = 40.0 * 2.0 * math.pi / math.sqrt(a * g)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            sol = solve_ivp(
                _lv_rhs_log,
                (0.0, horizon),
                theta[4:6],
                args=(a, b, g, d),
                events=crossing,
                **_SOLVER,
            )
    except (OverflowError, ValueError):
        return float("nan")
    hits = sol.t_events[0]
    return float(hits[1] - hits[0]) if hits.size >= 2 else float("nan")


def _match_period(theta: np.ndarray, period: float) -> np.ndarray | None:
    """Scale all rates so the orbit through (x0, y0) has the given period (shape unchanged)."""
    orbit = _orbit_period(theta)
    if not (math.isfinite(orbit) and orbit > 0 and math.isfinite(period)):
        return None
    out = theta.copy()
    out[:4] += math.log(orbit / period)
    return out


def _initial_guesses(t: np.ndarray, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Candidate log-parameter vectors (rates and initial conditions).

    From a gradient-matching regression, and from the observed period and means (the
    time-average of an LV orbit is its equilibrium, so beta = alpha/ybar, delta = gamma/xbar),
    each also rescaled so that the orbit through (x0, y0) has exactly the observed period.
    """
    xbar, ybar = max(float(x.mean()), 1e-9), max(float(y.mean()), 1e-9)
    x0 = max(float(x[0]), 1e-3 * xbar)
    y0 = max(float(y[0]), 1e-3 * ybar)
    period = _dominant_period(t, x)
    omega = 2.0 * math.pi / (period if math.isfinite(period) else float(t[-1] - t[0]) / 3.0)
    base: list[np.ndarray] = []
    rates = _gradient_matching_guess(t, x, y)
    if rates is not None:
        base.append(np.log([*rates, x0, y0]))
    for ratio in (0.5, 1.0, 2.0):  # alpha/gamma
        alpha, gamma = omega * math.sqrt(ratio), omega / math.sqrt(ratio)
        base.append(np.log([alpha, alpha / ybar, gamma, gamma / xbar, x0, y0]))
    guesses = list(base)
    for theta in base:
        matched = _match_period(theta, period)
        if matched is not None:
            guesses.append(matched)
    return guesses


def fit_lotka_volterra(series: PopulationSeries, n_starts: int = 3) -> LVFit:
    """Least-squares fit of the Lotka–Volterra ODE to both trajectories.

    Fits log(alpha, beta, gamma, delta, x0, y0) with ``scipy.optimize.least_squares`` on
    ``solve_ivp`` trajectories (exact Jacobian from forward sensitivities). Residuals are
    scaled by each species' standard deviation so both count equally. Starts come from a
    gradient-matching regression and from the dominant period and mean populations; the
    ``n_starts`` cheapest are refined and the best is kept.
    """
    t, x, y = series.time, series.prey, series.predator
    if len(series) < 8:
        raise ValueError(f"need at least 8 samples to fit Lotka-Volterra, got {len(series)}")
    sx, sy = float(np.std(x)), float(np.std(y))
    if sx == 0.0 or sy == 0.0:
        raise ValueError("cannot fit Lotka-Volterra to a constant population series")
    t_rel = t - t[0]
    obs = np.concatenate([x / sx, y / sy])
    scale = np.concatenate([np.full(x.size, sx), np.full(y.size, sy)])
    bad = np.full(obs.size, 1e3 * math.sqrt(obs.size))

    def residuals(theta: np.ndarray) -> np.ndarray:
        xy = _lv_solve(theta, t_rel)
        if xy is None:
            return bad
        return np.concatenate([xy[0], xy[1]]) / scale - obs

    def jacobian(theta: np.ndarray) -> np.ndarray:
        out = _lv_solve(theta, t_rel, sens=True)
        if out is None:
            return np.zeros((obs.size, 6))
        jx = out[0][:, None] * out[2:8].T / sx
        jy = out[1][:, None] * out[8:14].T / sy
        return np.vstack([jx, jy])

    # generous bounds keep the optimiser away from numerically absurd regions
    dt = float(np.median(np.diff(t)))
    xbar, ybar = max(float(x.mean()), 1e-9), max(float(y.mean()), 1e-9)
    span = float(t[-1] - t[0])
    # rates from ~1/1000 of the span up to the sampling (Nyquist-like) limit
    rate_lo, rate_hi = math.log(1e-3 / span), math.log(math.pi / dt)
    lo = np.array(
        [
            rate_lo,
            rate_lo - math.log(ybar),
            rate_lo,
            rate_lo - math.log(xbar),
            math.log(1e-6 * xbar),
            math.log(1e-6 * ybar),
        ]
    )
    hi = np.array(
        [
            rate_hi,
            rate_hi - math.log(ybar),
            rate_hi,
            rate_hi - math.log(xbar),
            math.log(1e3 * max(x.max(), xbar)),
            math.log(1e3 * max(y.max(), ybar)),
        ]
    )

    guesses = [np.clip(g, lo + 1e-9, hi - 1e-9) for g in _initial_guesses(t, x, y)]
    screened = sorted(guesses, key=lambda g: float(np.sum(residuals(g) ** 2)))
    best = None
    for start in screened[: max(1, n_starts)]:
        res = least_squares(
            residuals, start, jac=jacobian, bounds=(lo, hi), x_scale="jac", max_nfev=100
        )
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    alpha, beta, gamma, delta, x0, y0 = (float(v) for v in np.exp(best.x))
    xy = _lv_solve(best.x, t_rel)
    if xy is None:
        r2x = r2y = float("nan")
    else:
        r2x, r2y = _r2(x, xy[0]), _r2(y, xy[1])
    return LVFit(
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        delta=delta,
        x0=x0,
        y0=y0,
        t0=float(t[0]),
        r2_prey=r2x,
        r2_predator=r2y,
        cost=float(best.cost),
        time_unit=series.time_unit,
    )


# ------------------------------------------------------------------------ cycles


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
        return _nan_to_none(
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


def _period(values: np.ndarray, dt: float, span: float) -> float:
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
    t, x, y, dt = _uniform(series)
    span = float(t[-1] - t[0] + dt)
    period = _period(x, dt, span)
    period_pred = _period(y, dt, span)

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


# ------------------------------------------------------------------- comparison


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
    sim_fit = sim_fit or _try_fit(sim)
    ref_fit = ref_fit or _try_fit(ref)

    def pair(a: Any, b: Any) -> dict[str, Any]:
        return {"simulation": a, "reference": b}

    nan = float("nan")
    return _nan_to_none(
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


def _try_fit(series: PopulationSeries) -> LVFit | None:
    try:
        return fit_lotka_volterra(series)
    except ValueError:
        return None


# ------------------------------------------------------------------------- plots


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
            reference = (reference, _try_fit(reference), cycle_statistics(reference))
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

    _, xu, yu, dt = _uniform(s)
    for values, color, label in ((xu, "tab:green", "prey"), (yu, "tab:red", "predator")):
        freqs, power = power_spectrum(values, dt)
        ax_s.semilogy(freqs[1:], power[1:] + 1e-300, color=color, lw=1, label=label)
    if math.isfinite(st.period):
        ax_s.axvline(1.0 / st.period, color="k", ls=":", lw=1, label=f"1/{st.period:.3g}")
    ax_s.set_title(f"{title}: power spectrum")
    ax_s.set_xlabel(f"frequency (cycles / {s.time_unit})")
    ax_s.set_ylabel("power")
    ax_s.legend(fontsize=8)


# ---------------------------------------------------------------------- pipeline


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
    series = _as_series(path_or_series)
    fit = _try_fit(series)
    stats = cycle_statistics(series)
    result: dict[str, Any] = {
        "series": series.summary(),
        "lv_fit": fit.to_dict() if fit else None,
        "cycles": stats.to_dict(),
    }
    ref_bundle = None
    if reference is not None:
        ref = _as_series(reference)
        ref_fit = _try_fit(ref)
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
