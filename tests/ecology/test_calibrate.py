"""The calibration objective on series with known answers, calibrate's resume after a kill,
and its refusals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from bioflux.cli import main
from bioflux.ecology import PopulationSeries, load_lynx_hare
from bioflux.ecology.calibrate import read_trials, reference_series
from bioflux.ecology.realism import (
    CYCLE_PENALTY,
    EXTINCTION_LOSS,
    SCALES,
    cycle_realism,
    objective,
)

REPO = Path(__file__).resolve().parents[2]


def _shifted(lag: float, period: float = 50.0, cycles: int = 10, dt: float = 1.0):
    """Prey a raised cosine, predator the same curve ``lag`` periods later."""
    t = np.arange(0, cycles * period, dt)
    prey = 100 + 60 * np.cos(2 * np.pi * t / period)
    pred = 40 + 20 * np.cos(2 * np.pi * (t / period - lag))
    return PopulationSeries(t, prey, pred)


def _lv_orbit(amplitude: float = 0.05, a=1.0, b=1.0, c=1.0, d=1.0):
    """A pure Lotka–Volterra orbit near the equilibrium (c/d, a/b), sampled finely."""

    def rhs(_t, z):
        x, y = z
        return [a * x - b * x * y, d * x * y - c * y]

    t = np.arange(0, 80, 0.05)
    sol = solve_ivp(
        rhs, (0, t[-1]), [c / d * (1 + amplitude), a / b], t_eval=t, rtol=1e-9, atol=1e-12
    )
    return PopulationSeries(t, sol.y[0], sol.y[1])


def test_a_pure_lv_orbit_lags_a_quarter_period():
    stats = cycle_realism(_lv_orbit())
    assert stats["period"] == pytest.approx(2 * np.pi, rel=0.02)  # sqrt(a c) = 1
    assert stats["lag_fraction"] == pytest.approx(0.25, abs=0.01)
    assert stats["peak_lag_fraction"] == pytest.approx(0.25, abs=1 / 40 + 1e-9)
    assert stats["regularity"] < 0.02
    assert stats["n_cycles"] >= 10
    assert not stats["extinct"]


@pytest.mark.parametrize("lag", [0.146, 0.1, 0.3, -0.15])
def test_a_shifted_copy_has_its_known_lag_and_the_objective_measures_the_gap(lag):
    data = cycle_realism(_shifted(0.146))
    stats = cycle_realism(_shifted(lag, period=37.0))  # another period: only phase matters
    assert stats["lag_fraction"] == pytest.approx(lag, abs=0.01)
    assert stats["peak_lag_fraction"] == pytest.approx(lag, abs=1 / 40 + 1e-9)
    assert stats["rise_prey"] == pytest.approx(0.5, abs=0.03)  # a cosine rises half the time
    score = objective(stats, data)
    assert score["terms"]["lag"] == pytest.approx(abs(lag - 0.146) / SCALES["lag"], abs=0.4)
    assert score["shape_prey"] == pytest.approx(1.0, abs=1e-6)
    # the predator's mean cycle (aligned on prey peaks) moves with the lag
    expected = np.cos(2 * np.pi * (lag - 0.146))
    assert score["shape_predator"] == pytest.approx(expected, abs=0.02)
    assert stats["amp_prey"] == pytest.approx(np.log(160 / 40), abs=0.02)
    assert stats["amp_predator"] == pytest.approx(np.log(60 / 20), abs=0.02)
    assert score["terms"]["amplitude"] == pytest.approx(0.0, abs=0.1)


def test_the_data_scores_zero_against_itself_and_worse_with_a_wrong_lag():
    data = cycle_realism(load_lynx_hare())
    assert data["lag_fraction"] == pytest.approx(0.146, abs=0.001)
    assert data["n_cycles"] == 8
    assert objective(data, data)["loss"] == pytest.approx(0.0, abs=1e-9)
    near, far = cycle_realism(_shifted(0.15)), cycle_realism(_shifted(0.33))
    assert objective(near, data)["loss"] < objective(far, data)["loss"]
    assert objective(far, data)["terms"]["lag"] > 5


def test_extinction_and_too_few_cycles_are_penalised():
    s = _shifted(0.146, cycles=10)
    dead = PopulationSeries(s.time, s.prey, np.where(s.time > 300, 0.0, s.predator))
    ref = cycle_realism(s)
    assert objective(cycle_realism(dead), ref)["loss"] == EXTINCTION_LOSS
    short = cycle_realism(_shifted(0.146, cycles=3))  # interior peaks at 50, 100: one cycle
    assert short["n_cycles"] == 1
    assert objective(short, ref)["terms"]["cycles"] == pytest.approx(2 * CYCLE_PENALTY)


def test_a_bad_reference_is_one_line_and_exit_2(capsys, tmp_path):
    code = main(["ecology", "calibrate", "--reference", "wolves_moose", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "wolves_moose" in err and "lynx_hare" in err
    assert not any(tmp_path.iterdir())


def test_resume_refuses_other_settings(capsys, tmp_path):
    (tmp_path / "settings.json").write_text(
        json.dumps(
            {
                "reference": "lynx_hare",
                "years": None,
                "config": "ecology",
                "trials": 3,
                "seeds_per_trial": 1,
                "steps": 400,
                "burn_in": 50,
                "scale": 0.2,
                "seed": 0,
            }
        )
    )
    code = main(
        [
            "ecology",
            "calibrate",
            "--reference",
            "lynx_hare",
            "--out",
            str(tmp_path),
            "--steps",
            "500",
            "--burn-in",
            "50",
            "--scale",
            "0.2",
            "--seeds-per-trial",
            "1",
            "--resume",
        ]
    )
    assert code == 2
    assert "steps" in capsys.readouterr().err


TINY = [
    "--scale",
    "0.2",
    "--steps",
    "240",
    "--burn-in",
    "20",
    "--seeds-per-trial",
    "1",
    "--validate-seeds",
    "1",
    "--max-concurrent",
    "1",
    "--rerank",
    "2",
    "--rerank-seeds",
    "1",
]


def _calibrate(out: Path, trials: int, resume: bool = False) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "bioflux",
        "ecology",
        "calibrate",
        "--reference",
        "lynx_hare",
        "--out",
        str(out),
        "--trials",
        str(trials),
        *TINY,
        *(["--resume"] if resume else []),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_calibrate_resumes_after_a_kill(tmp_path):
    out = tmp_path / "cal"
    proc = _calibrate(out, trials=4)
    deadline = time.monotonic() + 240
    try:
        while not read_trials(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
        proc.wait()
    first = read_trials(out)
    assert 1 <= len(first) < 4, proc.stdout.read()
    assert not (out / "calibration.json").exists()

    proc = _calibrate(out, trials=4, resume=True)
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, text
    assert f"resuming: {len(first)} finished trial(s)" in text
    rows = read_trials(out)
    assert [r["trial"] for r in rows] == [1, 2, 3, 4]
    assert rows[: len(first)] == first  # the finished trials were not run again
    trial_lines = [line for line in text.splitlines() if line.startswith("trial ")]
    assert len(trial_lines) == 4 - len(first)
    doc = json.loads((out / "calibration.json").read_text())
    assert doc["search"]["trials"] == 4
    # the validated trial is the best of the 2 lowest search losses replayed on a fresh seed
    reranked = doc["search"]["rerank"]
    lowest = sorted(rows, key=lambda r: r["loss"])[:2]
    assert [r["trial"] for r in reranked] == [r["trial"] for r in lowest]
    assert doc["search"]["best"]["trial"] == min(reranked, key=lambda r: r["loss"])["trial"]
    assert "rerank: trial" in text
    assert (out / "calibration.png").stat().st_size > 10_000
    # the calibrated config carries the validated trial's policy coefficients and loads
    from bioflux import config
    from bioflux.ecology.calibrate import coefficients_for

    written = config.load(out / "ecology_lynx_hare.yaml")
    best = doc["search"]["best"]["params"]
    assert written.lotka_volterra == coefficients_for(best) == doc["lotka_volterra"]
    assert best["prey_beta"] == written.lotka_volterra["prey"]["beta"]


def test_rerank_chooses_by_the_replay_not_the_search(monkeypatch):
    """The trial with the lowest search loss loses to one that replays better on fresh seeds;
    without re-ranking the lowest search loss is chosen."""
    from bioflux.ecology import calibrate as cal

    params = {k: (spec[1] if spec[0] == "choice" else spec[1]) for k, spec in cal.SPACE.items()}
    done = [
        {"trial": 1, "loss": 3.0, "params": {**params, "energy_init": 5.0}},
        {"trial": 2, "loss": 1.0, "params": {**params, "energy_init": 6.0}},  # lucky
        {"trial": 3, "loss": 2.0, "params": {**params, "energy_init": 7.0}},
    ]
    replay = {6.0: 9.0, 7.0: 4.0, 5.0: 0.5}  # the loss each trial replays to
    seen = []

    def fake_stats(env, seeds, steps, burn_in, workers, coefficients):
        seen.append((env["energy_init"], tuple(seeds)))
        assert coefficients == cal.coefficients_for(params)  # the trial's own policies
        return {s: {"extinct": False, "lag_fraction": 0.1, "e": env["energy_init"]} for s in seeds}

    def fake_score(per_seed, ref, weights=None):
        return {"loss": replay[next(iter(per_seed.values()))["e"]], "per_seed": {}}

    monkeypatch.setattr(cal, "parallel_seed_statistics", fake_stats)
    monkeypatch.setattr(cal, "score", fake_score)
    base = {"height": 20, "width": 20}
    ref = {"lag_fraction": 0.146}
    best, rows = cal.choose_best(done, ref, base, 1.0, 2, 3, 300, 50, 1, lambda _: None)
    assert [r["trial"] for r in rows] == [2, 3]  # the 2 lowest search losses, in order
    assert best["trial"] == 3  # trial 1 (replays best of all) was not among them
    assert all(s == (2000, 2001, 2002) for _, s in seen)  # fresh seeds, not trial seeds
    best, rows = cal.choose_best(done, ref, base, 1.0, 0, 3, 300, 50, 1, lambda _: None)
    assert best["trial"] == 2 and rows == []


def test_choose_by_lag_takes_the_most_replay_seeds_within_the_tolerance(monkeypatch):
    """``choose_by="lag"`` prefers the trial whose replay lags hit the data's ± 0.03 most often
    over one with a lower replay loss; ties go to the lower loss."""
    from bioflux.ecology import calibrate as cal

    params = {k: spec[1] for k, spec in cal.SPACE.items()}
    done = [
        {"trial": t, "loss": float(t), "params": {**params, "energy_init": e}}
        for t, e in ((1, 5.0), (2, 6.0), (3, 7.0))
    ]
    lags = {5.0: 0.25, 6.0: 0.15, 7.0: 0.17}  # trial 1 misses; trials 2 and 3 hit
    losses = {5.0: 1.0, 6.0: 4.0, 7.0: 3.0}

    def fake_stats(env, seeds, steps, burn_in, workers, coefficients):
        e = env["energy_init"]
        return {s: {"extinct": False, "lag_fraction": lags[e], "e": e} for s in seeds}

    def fake_score(per_seed, ref, weights=None):
        return {"loss": losses[next(iter(per_seed.values()))["e"]], "per_seed": {}}

    monkeypatch.setattr(cal, "parallel_seed_statistics", fake_stats)
    monkeypatch.setattr(cal, "score", fake_score)
    ref = {"lag_fraction": 0.146}
    args = (done, ref, {"height": 20, "width": 20}, 1.0, 3, 2, 300, 50, 1, lambda _: None)
    best, rows = cal.choose_best(*args)
    assert best["trial"] == 1  # the lowest replay loss
    best, rows = cal.choose_best(*args, choose_by="lag")
    assert [r["lag_within_tolerance"] for r in rows] == [0, 2, 2]
    assert best["trial"] == 3  # a tie in hits: the lower loss


def test_years_cut_the_record_and_bad_years_are_refused():
    first = reference_series("lynx_hare", "1845:1890")
    assert first.time[0] == 1845 and first.time[-1] == 1890 and len(first) == 46
    for bad, message in (("1890", "START:END"), ("1900:1850", "before"), ("1845:1860", "30")):
        with pytest.raises(ValueError, match=message):
            reference_series("lynx_hare", bad)


def test_a_trial_round_trips_through_its_config():
    """``env_for``/``coefficients_for`` and ``params_of`` are inverses (world size aside), and a
    trial logged before the policies were searched takes their defaults."""
    from bioflux.config import load
    from bioflux.ecology import calibrate as cal
    from bioflux.policy_modules.lotka_volterra import DEFAULTS

    exp = load("ecology_lynx_hare")
    params = cal.params_of(exp.env, exp.lotka_volterra)
    assert set(params) == set(cal.SPACE)
    env = cal.env_for(params, exp.env, 1.0)
    back = cal.params_of(env, cal.coefficients_for(params))
    for k, v in params.items():
        assert back[k] == pytest.approx(v, rel=0.02), k
    old = {k: v for k, v in params.items() if k not in cal.POLICY_COEFFICIENTS}
    assert cal.coefficients_for(old) == {
        "prey": {"beta": DEFAULTS["beta"]},
        "predator": {"temperature": DEFAULTS["temperature"]},
    }
    assert cal._in_space(old)["prey_beta"] == DEFAULTS["beta"]


def test_narrow_searches_around_the_configs_values(tmp_path):
    """``--narrow F`` cuts each numeric range to [v / F, v × F] around the config's value (inside
    ``SPACE``), keeps every choice, and the trials sample only there."""
    from bioflux.config import load
    from bioflux.ecology import calibrate as cal

    exp = load("ecology_lynx_hare")
    start = cal.params_of(exp.env, exp.lotka_volterra)
    space = cal.space_around(start, 1.1)
    moved = cal.space_around({**start, "prey_beta": 1.3}, 1.1)
    assert moved["prey_beta"][1] == pytest.approx(1.3 / 1.1)
    assert space["birth_radius"] == cal.SPACE["birth_radius"]
    for k, spec in space.items():
        if spec[0] != "choice":
            assert cal.SPACE[k][1] <= spec[1] <= start[k] <= spec[2] <= cal.SPACE[k][2], k
            assert spec[2] / spec[1] <= 1.1**2 + 1e-9, k
    assert cal.space_around(start, None) == cal.SPACE
    with pytest.raises(ValueError, match="--narrow"):
        cal.calibrate(config="ecology_lynx_hare", out_dir=tmp_path / "x", narrow=1.0)

    out = tmp_path / "cal"
    argv = ["ecology", "calibrate", "--reference", "lynx_hare", "--config", "ecology_lynx_hare"]
    argv += ["--out", str(out), "--trials", "3", "--narrow", "1.1", *TINY]
    assert main(argv) == 0
    doc = json.loads((out / "calibration.json").read_text())
    assert doc["settings"]["narrow"] == 1.1
    # --set changes the world the search starts from, and is part of the settings
    assert main([*argv, "--set", "lotka_volterra.prey.beta=1.3", "--resume"]) == 2
    for row in read_trials(out):
        for k, spec in space.items():
            value = row["params"][k]
            if spec[0] == "choice":
                assert value in spec[1:]
            else:
                assert spec[1] * (1 - 1e-9) <= value <= spec[2] * (1 + 1e-9), (k, value, spec)


def test_weights_scale_their_terms_and_bad_weights_are_one_line(capsys, tmp_path):
    data = cycle_realism(load_lynx_hare())
    wrong = cycle_realism(_shifted(0.30))
    plain = objective(wrong, data)
    heavy = objective(wrong, data, {"lag": 3.0, "amplitude": 0.0})
    assert heavy["terms"] == plain["terms"]
    expected = plain["loss"] + 2 * plain["terms"]["lag"] - plain["terms"]["amplitude"]
    assert heavy["loss"] == pytest.approx(expected)
    assert plain["terms"]["lag"] > 1
    base = ["ecology", "calibrate", "--reference", "lynx_hare", "--out", str(tmp_path / "x")]
    for bad, needle in (("speed=2", "unknown term"), ("lag", "TERM=NUMBER"), ("lag=-1", ">= 0")):
        assert main([*base, "--weight", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err, err
