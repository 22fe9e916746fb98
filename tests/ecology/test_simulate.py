"""Long ecology simulations: determinism per seed, birth/death bookkeeping, files, CLI."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest

from bioflux import cli, config, training
from bioflux.ecology.simulate import (
    COLUMNS,
    action_rng,
    load_for_analysis,
    mean_series,
    read_series,
    simulate,
)
from bioflux.envs.config import SPECIES, EnvConfig
from bioflux.envs.core import BatchedWorld
from bioflux.policies import load_policy
from bioflux.rollout import play_step

#: A small ecology world: births, captures and starvation all happen within ~100 steps.
SMALL = {
    "ecology": True,
    "height": 12,
    "width": 12,
    "n_predators": 4,
    "n_prey": 20,
    "max_predators": 200,
    "max_prey": 2000,
    "wall_density": 0.05,
    "obs_radius": 2,
    "energy_init": 10.0,
    "energy_decay": 1.0,
    "energy_gain": 8.0,
    "reproduce_energy": 16.0,
    "prey_birth_prob": 0.05,
    "prey_capacity": 400,
    "birth_radius": 1,
    "recycle_slots": False,
}
STEPS = 120
SMALL_SET = [f"env.{k}={v}" for k, v in SMALL.items() if k != "ecology"]


def _run(seeds, **kw):
    return simulate(SMALL, "random", "random", STEPS, seeds, progress=False, **kw)


def _equal(a, b) -> bool:
    return all(np.array_equal(a[c], b[c]) for c in COLUMNS)


def test_deterministic_per_seed_and_independent_of_other_seeds():
    alone = _run([3])["series"][3]
    again = _run([3])["series"][3]
    other = _run([4])["series"][4]
    together = _run([1, 3, 5])["series"]
    assert _equal(alone, again)
    assert not _equal(alone, other)
    assert _equal(alone, together[3])
    assert list(alone) == list(COLUMNS)
    assert alone["step"][0] == 0 and (alone["step"] == np.arange(len(alone["step"]))).all()
    assert (alone["predator"][0], alone["prey"][0]) == (SMALL["n_predators"], SMALL["n_prey"])


def test_births_and_deaths_match_the_environment():
    seed = 2
    result = _run([seed])
    s = result["series"][seed]
    births = s["births_predator"].sum() + s["births_prey"].sum()
    assert s["births_prey"].sum() > 0 and s["deaths_prey"].sum() > 0
    assert s["deaths_predator"].sum() > 0 and s["births_predator"].sum() > 0
    # population balance: every change is a birth or a death
    for sp in ("predator", "prey"):
        delta = np.diff(s[sp])
        assert (delta == s[f"births_{sp}"][1:] - s[f"deaths_{sp}"][1:]).all()

    # replay the same episode on the env and compare with its own counts
    cfg = EnvConfig(**{**SMALL, "max_steps": STEPS})
    world = BatchedWorld(cfg, num_worlds=1, seed=seed)
    world.reset()
    rng = action_rng(seed)
    pol = {s: load_policy("random", s) for s in SPECIES}
    captured = starved = 0
    pops = [world.populations()[0].copy()]
    while not world.done[0]:
        res = play_step(world, pol, rng)
        captured += int(res.captured[0])
        starved += int(res.starved[0].sum())
        pops.append(world.populations()[0].copy())
    pops = np.array(pops)
    assert (pops[:, 0] == s["predator"]).all() and (pops[:, 1] == s["prey"]).all()
    assert births == world.used[0].sum() - SMALL["n_predators"] - SMALL["n_prey"]
    P = world.n_pred_slots
    assert s["births_predator"].sum() == world.used[0, :P].sum() - SMALL["n_predators"]
    assert s["deaths_prey"].sum() == captured
    assert s["deaths_predator"].sum() == starved
    summary = result["per_seed"][seed]
    assert summary["births"] == {
        "predator": int(s["births_predator"].sum()),
        "prey": int(s["births_prey"].sum()),
    }
    assert summary["final"] == {"predator": int(pops[-1, 0]), "prey": int(pops[-1, 1])}


def test_extinction_ends_the_series_and_is_recorded():
    # predators with 1 energy that cannot reach any prey starve on the first step
    env = {**SMALL, "energy_init": 1.0, "capture_radius": 0, "height": 30, "width": 30}
    r = simulate(env, "random", "random", 50, [0], progress=False)
    info = r["per_seed"][0]
    assert info["extinction_step"] == {"predator": 1, "prey": None}
    assert info["extinct"] and info["steps"] == 1 and r["survived"] == []
    assert len(r["series"][0]["step"]) == 2


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="ecology"):
        simulate({**SMALL, "ecology": False}, "random", "random", 10, 1, progress=False)
    with pytest.raises(ValueError, match="steps"):
        simulate(SMALL, "random", "random", 0, 1, progress=False)
    with pytest.raises(ValueError, match="seeds"):
        simulate(SMALL, "random", "random", 10, [], progress=False)
    with pytest.raises(ValueError, match="neither a built-in"):
        simulate(SMALL, "nope", "random", 10, 1, progress=False)


def test_population_balance_with_recycled_slots_and_capacity():
    """Each step: live count = previous + births - deaths, even when newborns reuse the slots
    of the dead; the prey never exceed the carrying capacity's pool."""
    env = {
        **SMALL,
        "recycle_slots": True,
        "max_prey": 40,
        "prey_capacity": 30,
        "prey_birth_prob": 0.2,
    }
    s = simulate(env, "random", "random", 300, [0], progress=False)["series"][0]
    for species in ("predator", "prey"):
        change = np.diff(s[species])
        assert (change == s[f"births_{species}"][1:] - s[f"deaths_{species}"][1:]).all()
    assert s["births_prey"].sum() > env["max_prey"]  # more births than slots: slots reused
    assert s["prey"].max() <= env["max_prey"]


def test_ecology_config_is_simulation_only(tmp_path):
    exp = config.load("ecology")
    cfg = exp.env_config
    assert cfg.ecology and cfg.recycle_slots and cfg.prey_capacity < cfg.max_prey
    with pytest.raises(ValueError, match="recycle_slots"):  # before Ray starts
        training.train(exp, output=tmp_path / "runs", models=tmp_path / "models")


def test_cli_simulate_writes_series_and_summary(tmp_path, capsys):
    out = tmp_path / "sim"
    argv = ["simulate", "--config", "ecology", "--predator", "random", "--prey", "random"]
    argv += ["--steps", "60", "--seeds", "2", "--out", str(out)]
    for item in SMALL_SET:
        argv += ["--set", item]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    seeds = [0, 1]  # ecology.yaml has seed 0
    assert sorted(printed["per_seed"]) == [str(s) for s in seeds]
    for s in seeds:
        path = out / f"series_seed{s}.csv"
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        assert tuple(rows[0]) == COLUMNS
        assert int(rows[1][0]) == 0 and len(rows) <= 62
        assert _equal(read_series(path), _run_cli_equivalent(s))
        if importlib.util.find_spec("pyarrow") is not None:  # optional Parquet copy
            import pyarrow.parquet as pq

            table = pq.read_table(path.with_suffix(".parquet")).to_pydict()
            assert _equal({k: np.array(v) for k, v in table.items()}, read_series(path))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env"]["max_steps"] == 60 and summary["env"]["height"] == SMALL["height"]
    assert summary["policies"]["predator"] == "random"
    assert set(summary["per_seed"]["0"]) >= {"final", "extinction_step", "births", "deaths"}


def _run_cli_equivalent(seed):
    return simulate(SMALL, "random", "random", 60, [seed], progress=False)["series"][seed]


def test_cli_rejects_a_non_ecology_config(tmp_path, capsys):
    argv = ["simulate", "--config", "demo", "--steps", "5", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "ecology" in capsys.readouterr().err


def _write_lv_like(path, n=400, period=80.0, lag=20.0):
    t = np.arange(n)
    prey = np.round(100 + 60 * np.sin(2 * np.pi * t / period))
    pred = np.round(40 + 20 * np.sin(2 * np.pi * (t - lag) / period))
    zeros = np.zeros(n, dtype=int)
    series = {
        "step": t,
        "predator": pred.astype(int),
        "prey": prey.astype(int),
        "births_predator": zeros,
        "births_prey": zeros,
        "deaths_predator": zeros,
        "deaths_prey": zeros,
    }
    from bioflux.ecology.simulate import write_series

    write_series(series, path)
    return series


def test_cli_ecology_analyze_a_csv_and_a_folder(tmp_path, capsys):
    folder = tmp_path / "sim"
    a = _write_lv_like(folder / "series_seed0.csv")
    b = _write_lv_like(folder / "series_seed1.csv", lag=22.0)
    out = tmp_path / "analysis"
    assert (
        cli.main(["ecology", "analyze", str(folder / "series_seed0.csv"), "--out", str(out)]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert (out / "analysis.json").is_file() and (out / "analysis.png").is_file()
    assert result["cycles"]["period"] == pytest.approx(80.0, rel=0.05)
    assert result["source"]["kind"] == "csv"

    # a simulate folder: the mean over seeds, written next to the series by default
    argv = ["ecology", "analyze", str(folder), "--reference", "lynx_hare"]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert (folder / "analysis.json").is_file() and (folder / "analysis.png").is_file()
    assert result["source"] == {"path": str(folder), "kind": "mean_over_seeds", "seeds": [0, 1]}
    assert "comparison" in result and result["reference"]["series"]["time_unit"] == "year"
    mean, used = mean_series(folder)
    assert used == [0, 1]
    assert np.allclose(mean["predator"], (a["predator"] + b["predator"]) / 2)
    series, _ = load_for_analysis(folder)
    assert series.time_unit == "step" and len(series) == 400

    assert cli.main(["ecology", "analyze", str(tmp_path / "missing.csv")]) == 2


def test_cli_simulate_plays_the_configs_lotka_volterra_coefficients(tmp_path, capsys):
    """A config's ``lotka_volterra`` section sets the built-in policies' coefficients: the CLI's
    series equal ``simulate`` with those coefficients and differ from the defaults'."""
    from bioflux.policies import lotka_volterra_policy

    coefficients = {"predator": {"temperature": 2.0, "delta": 0.5}, "prey": {"beta": 0.2}}
    argv = ["simulate", "--config", "ecology", "--steps", "60", "--out", str(tmp_path / "sim")]
    for item in SMALL_SET + [
        "lotka_volterra.predator.temperature=2.0",
        "lotka_volterra.predator.delta=0.5",
        "lotka_volterra.prey.beta=0.2",
    ]:
        argv += ["--set", item]
    assert cli.main(argv) == 0
    capsys.readouterr()
    got = read_series(tmp_path / "sim" / "series_seed0.csv")

    def run(predator, prey):
        return simulate(SMALL, predator, prey, 60, [0], progress=False)["series"][0]

    configured = run(*(lotka_volterra_policy(s, **coefficients[s]) for s in ("predator", "prey")))
    assert _equal(got, configured)
    assert not _equal(got, run("lotka_volterra", "lotka_volterra"))


@pytest.mark.parametrize(
    "section, needle",
    [
        ({"wolf": {"beta": 1.0}}, "lotka_volterra: wolf: unknown species"),
        ({"prey": {"speed": 1.0}}, "lotka_volterra: prey: unknown Lotka–Volterra coefficient"),
        (
            {"predator": {"temperature": 0}},
            r"lotka_volterra: predator.temperature=0.0: must be > 0",
        ),
        ({"prey": {"beta": "fast"}}, "lotka_volterra.prey.beta"),
    ],
)
def test_a_bad_lotka_volterra_section_is_one_line(section, needle):
    from bioflux import config

    data = config.read_sections(config.resolve_path("ecology"))
    with pytest.raises(config.ConfigError, match=needle) as err:
        config.validate({**data, "lotka_volterra": section})
    assert "\n" not in str(err.value)
