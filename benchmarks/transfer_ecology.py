"""Transfer into ecology mode: PPO on a small ecology world (births and starvation), from
scratch against ``--init-from`` a model trained without ecology; then each trained model's
capture rate and the population cycles its policies make.

Run: ``python benchmarks/transfer_ecology.py [--source PATH | --source-iterations 40]
[--target-iterations 20] [--seeds 0,1,2] [--episodes 50] [--sim-seeds 3] [--sim-steps 1000]
[--out DIR]``. Prints one JSON object; ``--out`` keeps each model's simulation (series CSVs,
``summary.json``) and ``bioflux ecology analyze`` output (``analysis.json``, ``analysis.png``).

1. the source: ``configs/demo.yaml`` (no ecology; 24×24, 2 predators, 10 prey, 9×9 windows),
   ``--source-iterations`` iterations, or an existing model (``--source``);
2. the ecology target (``ECOLOGY_TARGET``, 30×30, 4 predators and 20 prey at reset, births
   and starvation, the same 9×9 window; in ecology mode the window's fourth channel is the
   predator's energy level instead of a constant 1, so the modules fit): ``--target-
   iterations`` iterations of the demo's PPO per seed, from random weights ("scratch") and
   from the source's weights ("transfer");
3. per trained model:
   - ``capture_rate``: its predators against random prey on the ecology target, ``--episodes``
     episodes on one evaluation seed shared by every model (prey born in an episode count);
   - the cycles: its predators *and* prey play ``SIMULATION_WORLD`` (the target's rules with
     recycled slots, on a 60×60 grid with 16 predators and 200 prey, ``--sim-steps`` steps)
     with ``bioflux.ecology.simulate.simulate`` (``bioflux simulate``) on ``--sim-seeds``
     seeds; per seed ``cycle_statistics`` (period, predator lag / period, full cycles) and
     the extinction step; ``bioflux.ecology.analysis.analyze`` (``bioflux ecology analyze``) on
     the folder (the mean over the seeds that ran the full length);
     ``sim_capture_fraction`` = prey captured / prey that lived (initial + born).
   The source's own predators and prey, and random ones, are measured the same way as
   references (0 iterations on the target).

Per arm: each model's value (a model's seeds averaged first: the training seed is the unit),
the mean and a 95% t-interval over training seeds; per quantity the Welch 95% interval of
transfer − scratch and a verdict: ``differ`` when it excludes 0, else ``inconclusive``. A
statistic undefined for a seed (no full cycle, an early extinction) is left out of that
model's mean; a model with none is ``null`` and the arm's ``n`` says how many models count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transfer import (  # noqa: E402
    EVAL_SEED,
    arm_experiment,
    capture_rate,
    t_interval,
    welch_interval,
)

from bioflux import config, training  # noqa: E402
from bioflux.ecology.analysis import analyze, cycle_statistics  # noqa: E402
from bioflux.ecology.simulate import (  # noqa: E402
    load_for_analysis,
    simulate,
    to_population_series,
)

#: The ecology world the target runs train in (no recycled slots: training needs agents that
#: keep their slot for life, so the pools hold every birth of a 100-step episode).
ECOLOGY_TARGET = {
    "height": 30,
    "width": 30,
    "n_predators": 4,
    "n_prey": 20,
    "max_predators": 24,
    "max_prey": 80,
    "max_steps": 100,
    "wall_density": 0.02,
    "obs_radius": 4,
    "ecology": True,
    "energy_init": 20.0,
    "energy_decay": 0.5,
    "energy_gain": 10.0,
    "reproduce_energy": 30.0,
    "prey_birth_prob": 0.02,
    "prey_capacity": 60,
    "birth_radius": None,
}
#: The world the models' populations are simulated in: the target's rules, bigger and longer,
#: with recycled slots (simulation only) so the pools cap the live populations.
SIMULATION_WORLD = {
    **ECOLOGY_TARGET,
    "height": 60,
    "width": 60,
    "n_predators": 16,
    "n_prey": 200,
    "max_predators": 400,
    "max_prey": 800,
    "prey_capacity": 400,
    "recycle_slots": True,
}
#: Per-model quantities compared between the arms.
QUANTITIES = (
    "capture_rate",
    "sim_capture_fraction",
    "extinct_fraction",
    "n_cycles",
    "period",
    "lag_fraction",
    "mean_predators",
    "mean_prey",
)


def mean_or_none(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and np.isnan(x))]
    return float(statistics.mean(xs)) if xs else None


def measure(
    name: str,
    predator: str,
    prey: str,
    eval_cfg,
    episodes: int,
    sim_seeds: list[int],
    sim_steps: int,
    out: Path,
) -> dict[str, Any]:
    """Capture rate against random prey on the target, and the simulated cycles."""
    t0 = time.perf_counter()
    rate = capture_rate(predator, eval_cfg, episodes)
    folder = out / name
    sim = simulate(
        SIMULATION_WORLD,
        predator,
        prey,
        steps=sim_steps,
        seeds=sim_seeds,
        out_dir=folder,
        progress=False,
    )
    per_seed = {}
    for seed, s in sim["series"].items():
        info = sim["per_seed"][seed]
        stats = cycle_statistics(to_population_series(s))
        lived = info["initial"]["prey"] + info["births"]["prey"]
        per_seed[str(seed)] = {
            "steps": info["steps"],
            "extinction_step": info["extinction_step"],
            "n_cycles": stats.n_cycles,
            "period": None if np.isnan(stats.period) else round(stats.period, 1),
            "lag_fraction": None if np.isnan(stats.lag_fraction) else round(stats.lag_fraction, 3),
            "capture_fraction": round(info["deaths"]["prey"] / lived, 4) if lived else None,
            "mean": {k: round(v, 1) for k, v in info["mean"].items()},
        }
    mean, _ = load_for_analysis(folder)  # what `bioflux ecology analyze <folder>` reads
    mean_analysis = analyze(mean, out_dir=folder)["cycles"]
    seeds = list(per_seed.values())
    return {
        "predator": predator,
        "prey": prey,
        "capture_rate": round(rate, 3),
        "sim_capture_fraction": mean_or_none([s["capture_fraction"] for s in seeds]),
        "extinct_fraction": statistics.mean(
            [any(v is not None for v in s["extinction_step"].values()) for s in seeds]
        ),
        "n_cycles": statistics.mean([s["n_cycles"] for s in seeds]),
        "period": mean_or_none([s["period"] for s in seeds]),
        "lag_fraction": mean_or_none([s["lag_fraction"] for s in seeds]),
        "mean_predators": statistics.mean([s["mean"]["predator"] for s in seeds]),
        "mean_prey": statistics.mean([s["mean"]["prey"] for s in seeds]),
        "per_seed": per_seed,
        "mean_series_cycles": {
            k: mean_analysis[k] for k in ("period", "lag_fraction", "n_cycles", "extinctions")
        },
        "measure_s": round(time.perf_counter() - t0, 1),
    }


def compare(arms: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for q in QUANTITIES:
        row: dict[str, Any] = {}
        values = {}
        for arm, models in arms.items():
            xs = [m[q] for m in models if m[q] is not None]
            values[arm] = xs
            row[arm] = {
                "per_seed": [None if m[q] is None else round(m[q], 3) for m in models],
                "n": len(xs),
                "mean": round(statistics.mean(xs), 3) if xs else None,
                "ci95_over_seeds": t_interval(xs) if xs else None,
            }
        a, b = values["transfer"], values["scratch"]
        if len(a) >= 2 and len(b) >= 2:
            ci = welch_interval(a, b)
            row["transfer_minus_scratch"] = {
                "mean": round(statistics.mean(a) - statistics.mean(b), 3),
                "ci95_welch": ci,
                "verdict": "differ" if ci[0] > 0 or ci[1] < 0 else "inconclusive",
            }
        else:
            row["transfer_minus_scratch"] = {"verdict": "not measurable (too few models)"}
        out[q] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="a model trained without ecology")
    parser.add_argument("--source-iterations", type=int, default=40)
    parser.add_argument("--target-iterations", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--sim-seeds", type=int, default=3)
    parser.add_argument("--sim-steps", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None, help="keep the simulations here")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    sim_seeds = list(range(args.sim_seeds))
    quiet = lambda _: None  # noqa: E731
    start = time.perf_counter()
    import ray

    from bioflux.ray_session import init_ray

    started_ray = init_ray()  # once: every run below reuses it
    result: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bioflux-transfer-eco-") as tmp:
            root = Path(tmp)
            out = args.out or root / "simulations"
            if args.source is None:
                src = config.load(
                    "demo", [f"stop.iterations={args.source_iterations}", "name=source"]
                )
                t0 = time.perf_counter()
                source = training.train(src, output=root / "runs", models=root / "m", log=quiet)
                model = source["models"]["final"]
                result["source"] = {
                    "iterations": source["iterations"],
                    "agent_steps": source["last"]["agent_steps"],
                    "train_wall_s": round(time.perf_counter() - t0, 1),
                    "iteration_time_s": round(source["time_s"], 1),
                }
            else:
                model = args.source
                result["source"] = {"path": model}
            eval_cfg = config.validate(
                {
                    **config.read_sections(config.resolve_path("demo")),
                    "env": ECOLOGY_TARGET,
                    "name": "t",
                    "stop": {"iterations": 1},
                }
            ).env_config
            measured = lambda name, pred, prey: measure(  # noqa: E731
                name, pred, prey, eval_cfg, args.episodes, sim_seeds, args.sim_steps, out
            )
            result["references"] = {
                "random": measured("random", "random", "random"),
                "source_untrained_on_target": measured("source", model, model),
            }
            arms: dict[str, list[dict[str, Any]]] = {"scratch": [], "transfer": []}
            for arm in arms:
                for seed in seeds:
                    exp = arm_experiment(ECOLOGY_TARGET, args.target_iterations, seed, arm, model)
                    t0 = time.perf_counter()
                    summary = training.train(
                        exp, output=root / "runs", models=root / "m", log=quiet
                    )
                    wall = time.perf_counter() - t0
                    final = summary["models"]["final"]
                    m = measured(f"{arm}_s{seed}", final, final)
                    m.update(
                        seed=seed,
                        agent_steps=summary["last"]["agent_steps"],
                        train_wall_s=round(wall, 1),
                        training_capture_rate=summary["last"]["capture_rate"],
                    )
                    m.pop("predator"), m.pop("prey")
                    arms[arm].append(m)
            result["models"] = arms
            result["comparison"] = compare(arms)
    finally:
        if started_ray:
            ray.shutdown()
    result.update(
        target_iterations=args.target_iterations,
        ecology_target=ECOLOGY_TARGET,
        simulation_world=SIMULATION_WORLD,
        seeds=seeds,
        episodes=args.episodes,
        evaluation_seed=EVAL_SEED,
        sim_seeds=sim_seeds,
        sim_steps=args.sim_steps,
        out=str(args.out) if args.out else None,
        wall_s=round(time.perf_counter() - start, 1),
    )
    print(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
