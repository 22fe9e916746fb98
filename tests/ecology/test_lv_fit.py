"""Lotka–Volterra fitting: parameter recovery, derived quantities, lynx–hare data."""

import json
import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from bioflux.ecology import (
    LVFit,
    PopulationSeries,
    analyze,
    fit_lotka_volterra,
    load_lynx_hare,
)

TRUE = {"alpha": 0.55, "beta": 0.028, "gamma": 0.84, "delta": 0.026}


def _lv_series(noise: float, seed: int = 0, x0: float = 50.0, y0: float = 12.0) -> PopulationSeries:
    a, b, g, d = TRUE.values()
    t = np.arange(0.0, 40.0 + 1e-9, 0.5)
    sol = solve_ivp(
        lambda _t, z: [a * z[0] - b * z[0] * z[1], d * z[0] * z[1] - g * z[1]],
        (t[0], t[-1]),
        [x0, y0],
        t_eval=t,
        rtol=1e-10,
        atol=1e-10,
    )
    rng = np.random.default_rng(seed)
    prey, pred = sol.y * np.exp(noise * rng.standard_normal(sol.y.shape))
    return PopulationSeries(t, prey, pred, "year")


def test_fit_recovers_parameters_from_noisy_trajectories():
    fit = fit_lotka_volterra(_lv_series(noise=0.05))
    for name, true in TRUE.items():
        assert getattr(fit, name) == pytest.approx(true, rel=0.15), name
    assert fit.x0 == pytest.approx(50.0, rel=0.15)
    assert fit.y0 == pytest.approx(12.0, rel=0.15)
    assert fit.r2_prey > 0.9
    assert fit.r2_predator > 0.9


def test_fit_is_exact_on_noise_free_data_and_simulate_reproduces_it():
    series = _lv_series(noise=0.0)
    fit = fit_lotka_volterra(series)
    for name, true in TRUE.items():
        assert getattr(fit, name) == pytest.approx(true, rel=1e-3), name
    assert fit.r2_prey > 0.999 and fit.r2_predator > 0.999
    sim = fit.simulate(series.time)
    np.testing.assert_allclose(sim.prey, series.prey, rtol=1e-2)
    np.testing.assert_allclose(sim.predator, series.predator, rtol=1e-2)


def test_fit_long_simulation_with_many_cycles_avoids_phase_drift_minima():
    # ~20 cycles at step resolution: a slightly wrong period guess would drift out of phase
    a, b, g, d = 0.04, 0.002, 0.05, 0.001
    t = np.arange(0.0, 3000.0, 2.0)
    sol = solve_ivp(
        lambda _t, z: [a * z[0] - b * z[0] * z[1], d * z[0] * z[1] - g * z[1]],
        (t[0], t[-1]),
        [80.0, 15.0],
        t_eval=t,
        rtol=1e-9,
    )
    rng = np.random.default_rng(3)
    counts = np.round(sol.y * np.exp(0.1 * rng.standard_normal(sol.y.shape)))
    fit = fit_lotka_volterra(PopulationSeries(t, counts[0], counts[1]))
    for name, true in zip(("alpha", "beta", "gamma", "delta"), (a, b, g, d), strict=True):
        assert getattr(fit, name) == pytest.approx(true, rel=0.1), name
    assert fit.r2_prey > 0.85 and fit.r2_predator > 0.85


def test_derived_quantities_and_json():
    fit = LVFit(
        alpha=0.5,
        beta=0.02,
        gamma=0.8,
        delta=0.01,
        x0=10.0,
        y0=5.0,
        t0=0.0,
        r2_prey=0.9,
        r2_predator=float("nan"),
    )
    assert fit.equilibrium == pytest.approx((80.0, 25.0))
    assert fit.period_small_oscillation == pytest.approx(2 * math.pi / math.sqrt(0.4))
    d = fit.to_dict()
    assert d["r2_predator"] is None  # NaN is not valid JSON
    assert d["equilibrium"] == pytest.approx({"prey": 80.0, "predator": 25.0})
    json.dumps(d, allow_nan=False)
    # starting at the equilibrium stays there
    eq = LVFit(**{**fit.__dict__, "x0": 80.0, "y0": 25.0}).simulate([0.0, 5.0, 20.0])
    np.testing.assert_allclose(eq.prey, 80.0, rtol=1e-6)
    np.testing.assert_allclose(eq.predator, 25.0, rtol=1e-6)


def test_fit_rejects_degenerate_series():
    t = np.arange(20.0)
    with pytest.raises(ValueError, match="constant"):
        fit_lotka_volterra(PopulationSeries(t, np.full(20, 3.0), np.sin(t) + 2))
    with pytest.raises(ValueError, match="at least"):
        fit_lotka_volterra(PopulationSeries(t[:4], t[:4] + 1, t[:4] + 2))


def test_lynx_hare_fit_and_analyze_outputs(tmp_path):
    series = load_lynx_hare()
    assert series.time_unit == "year"
    assert (series.time[0], series.time[-1], len(series)) == (1845, 1935, 91)

    result = analyze(series, out_dir=tmp_path)
    png, js = tmp_path / "analysis.png", tmp_path / "analysis.json"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(js.read_text())
    assert saved["cycles"]["period"] == pytest.approx(result["cycles"]["period"])

    fit = saved["lv_fit"]
    assert all(fit[k] > 0 for k in ("alpha", "beta", "gamma", "delta"))
    # the fitted cycle is a ~10-year cycle around the mean populations
    assert 7.0 < fit["period_small_oscillation"] < 13.0
    assert fit["equilibrium"]["prey"] == pytest.approx(series.prey.mean(), rel=0.5)
    assert fit["equilibrium"]["predator"] == pytest.approx(series.predator.mean(), rel=0.5)
    assert fit["r2_predator"] > 0.3
    assert fit["r2_prey"] > 0.0
