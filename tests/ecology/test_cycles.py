"""Cycle statistics (period, lag, damping, extinctions), CSV loading, reference comparison."""

import json

import numpy as np
import pytest

from bioflux.ecology import (
    PopulationSeries,
    analyze,
    compare_with_reference,
    cycle_statistics,
    load_lynx_hare,
)


def _sine_pair(period: float, lag: float, n: int = 150, dt: float = 1.0, noise: float = 0.0):
    t = np.arange(n) * dt
    rng = np.random.default_rng(1)
    prey = 10.0 + 4.0 * np.sin(2 * np.pi * t / period) + noise * rng.standard_normal(n)
    pred = 5.0 + 2.0 * np.sin(2 * np.pi * (t - lag) / period) + noise * rng.standard_normal(n)
    return PopulationSeries(t, prey, pred)


@pytest.mark.parametrize(
    ("period", "lag", "dt"),
    [(11.0, 2.7, 1.0), (25.0, 6.0, 0.5), (40.0, -8.0, 1.0), (9.3, 3.9, 0.25)],
)
def test_period_and_lag_of_shifted_sines(period, lag, dt):
    stats = cycle_statistics(_sine_pair(period, lag, n=int(12 * period / dt), dt=dt, noise=0.1))
    assert stats.period == pytest.approx(period, rel=0.05)
    assert stats.period_peaks == pytest.approx(period, rel=0.05)
    assert stats.period_predator == pytest.approx(period, rel=0.05)
    assert stats.lag_fraction == pytest.approx(lag / period, abs=0.03)
    assert stats.lag == pytest.approx(lag, abs=0.03 * period)
    assert stats.n_cycles in (10, 11, 12)
    assert stats.damping_ratio == pytest.approx(1.0, abs=0.05)
    assert stats.extinctions == []


def test_damping_ratio_decaying_vs_sustained():
    t = np.arange(0.0, 200.0, 0.5)
    decay = 20.0 + 15.0 * np.exp(-t / 60.0) * np.sin(2 * np.pi * t / 20.0)
    steady = 20.0 + 15.0 * np.sin(2 * np.pi * t / 20.0)
    pred = 10.0 + np.cos(2 * np.pi * t / 20.0)
    decaying = cycle_statistics(PopulationSeries(t, decay, pred))
    sustained = cycle_statistics(PopulationSeries(t, steady, pred))
    assert decaying.damping_ratio < 0.95
    assert sustained.damping_ratio == pytest.approx(1.0, abs=0.02)
    # growing oscillation reads as > 1
    grow = 20.0 + 5.0 * np.exp(t / 150.0) * np.sin(2 * np.pi * t / 20.0)
    assert cycle_statistics(PopulationSeries(t, grow, pred)).damping_ratio > 1.02


def test_extinction_events_are_detected_with_time():
    t = np.arange(100.0)
    prey = 30.0 + 10.0 * np.sin(2 * np.pi * t / 12.0)
    pred = 8.0 + 3.0 * np.sin(2 * np.pi * (t - 3) / 12.0)
    pred[60:] = 0.0  # predators die out at t = 60
    prey[90:93] = 0.0  # prey hits zero twice: t = 90 and t = 97
    prey[97:] = 0.0
    stats = cycle_statistics(PopulationSeries(t, prey, pred))
    assert stats.extinctions == [
        {"species": "predator", "time": 60.0},
        {"species": "prey", "time": 90.0},
        {"species": "prey", "time": 97.0},
    ]
    alive = cycle_statistics(PopulationSeries(t, prey + 50, pred + 1))
    assert alive.extinctions == []


def test_lynx_hare_cycle_statistics():
    stats = cycle_statistics(load_lynx_hare())
    assert 8.0 < stats.period < 12.0
    assert 8.0 < stats.period_peaks < 12.0
    assert 0.05 < stats.lag_fraction < 0.45  # lynx peaks follow hare peaks
    assert 0.5 < stats.lag < 3.0  # years
    assert 7 <= stats.n_cycles <= 9
    assert stats.extinctions == []
    assert stats.time_unit == "year"


def test_from_csv_simulate_output_and_lynx_hare(tmp_path):
    sim = tmp_path / "sim.csv"
    t = np.arange(60)
    rows = ["episode,step,prey,predator,grass"] + [
        f"0,{s},{20 + 5 * np.sin(s / 3):.3f},{6 + 2 * np.cos(s / 3):.3f},100" for s in t
    ]
    sim.write_text("\n".join(rows) + "\n")
    s = PopulationSeries.from_csv(sim)
    assert s.time_unit == "step" and len(s) == 60
    np.testing.assert_allclose(s.time, t)
    assert s.prey[0] == pytest.approx(20.0) and s.predator[0] == pytest.approx(8.0)

    lh = tmp_path / "lh.csv"
    lh.write_text("Year,Hare,Lynx\n1900,10,2\n1901,12,3\n1902,8,4\n")
    s2 = PopulationSeries.from_csv(lh)
    assert s2.time_unit == "year"
    np.testing.assert_allclose(s2.prey, [10, 12, 8])
    np.testing.assert_allclose(s2.predator, [2, 3, 4])

    bad = tmp_path / "bad.csv"
    bad.write_text("step,rabbits,predator\n0,1,2\n1,2,3\n")
    with pytest.raises(ValueError, match=r"missing column.*prey.*available columns: step, rabbits"):
        PopulationSeries.from_csv(bad)
    s3 = PopulationSeries.from_csv(bad, prey_col="rabbits")
    np.testing.assert_allclose(s3.prey, [1, 2])


def test_compare_and_analyze_with_reference(tmp_path):
    sim = _sine_pair(period=40.0, lag=10.0, n=400, noise=0.05)
    ref = load_lynx_hare()
    cmp = compare_with_reference(sim, ref)
    assert cmp["time_unit"] == {"simulation": "step", "reference": "year"}
    assert cmp["period"]["simulation"] == pytest.approx(40.0, rel=0.05)
    assert 8.0 < cmp["period"]["reference"] < 12.0
    assert cmp["lag_fraction"]["simulation"] == pytest.approx(0.25, abs=0.03)
    for key in ("damping_ratio", "r2_prey", "r2_predator"):
        assert set(cmp[key]) == {"simulation", "reference"}

    csv_path = tmp_path / "sim.csv"
    lines = ["step,prey,predator"] + [
        f"{t:g},{x:.4f},{y:.4f}" for t, x, y in zip(sim.time, sim.prey, sim.predator, strict=True)
    ]
    csv_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = analyze(csv_path, reference="lynx_hare", out_dir=out)
    saved = json.loads((out / "analysis.json").read_text())
    assert saved["comparison"]["period"]["reference"] == pytest.approx(cmp["period"]["reference"])
    assert saved["reference"]["series"]["time_unit"] == "year"
    assert result["files"]["png"] == str(out / "analysis.png")
    assert (out / "analysis.png").stat().st_size > 10_000
