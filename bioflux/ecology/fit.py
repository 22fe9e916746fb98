"""The Lotka–Volterra ODE fitted to a population series (least squares on the log
populations, several starting points); not to be confused with the Lotka–Volterra *policy*'s
coefficient search (``bioflux.algorithms.lotka_volterra``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import least_squares

from bioflux.ecology.cycles import estimated_period
from bioflux.ecology.series import PopulationSeries, nan_to_none, uniform_grid


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
        return nan_to_none(
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
    tu, xu, _, dt = uniform_grid(PopulationSeries(t, x, x))
    return estimated_period(xu, dt, float(tu[-1] - tu[0] + dt))


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


def try_fit(series: PopulationSeries) -> LVFit | None:
    try:
        return fit_lotka_volterra(series)
    except ValueError:
        return None
