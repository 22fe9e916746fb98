"""What transfer buys: PPO on a bigger world, from scratch against ``--init-from`` a model
trained on the demo world, measured as target agent-steps to a capture-rate threshold.

Run: ``python benchmarks/transfer.py [--source-iterations 40] [--target-iterations 20]
[--eval-every 2] [--seeds 0,1,2] [--episodes 50] [--threshold 1.5] [--figure PNG]``.
Prints one JSON object (``--figure`` also draws the capture-rate curves).

1. the source: ``configs/demo.yaml`` (24×24, 2 predators, 10 prey, 50 steps, 9×9 windows),
   trained ``--source-iterations`` iterations; its cost is reported (agent-steps, wall s);
2. the target world: 40×40, 4 predators, 20 prey, 100 steps, the same 9×9 window (so the
   modules fit); ``--target-iterations`` iterations of the demo's PPO, per seed, from random
   weights ("scratch") and from the source's weights ("transfer");
3. during each target run, its predators (the learner's module as it stands) play random prey
   on the target world: before the first iteration (the weights the run starts from, 0
   target agent-steps), every ``--eval-every`` iterations and after the last one.
   ``--episodes`` episodes per point, on one evaluation seed shared by every point, every run
   and the random predators (common random numbers: the same worlds every time).

Reported, per arm (the training seed is the unit; 95% t-intervals over seeds):

- ``agent_steps_to_threshold``: per seed, the target agent-steps at which the capture rate
  against random prey first reaches ``--threshold`` × the random predators' rate on the same
  worlds, linearly interpolated between the two evaluation points around the crossing (0 when
  the starting weights already reach it). A seed that never reaches it is censored: reported
  as ``null`` with ``censored_at`` (its last evaluation's agent-steps), never averaged in.
  The mean and interval are given only when every seed reached it; otherwise ``mean_at_least``
  is the mean with censored seeds counted at their censoring point (a lower bound);
- ``final``: the capture rate after the last iteration (both arms train the same iterations of
  the same batch size, so equal target agent-steps: ``agent_steps`` per seed shows it), and
  ``transfer_minus_scratch``: the difference of the arms' means with a Welch 95% interval;
- ``curve``: the capture rate at each evaluation point per seed, with its mean and interval;
- ``train_wall_s``: each run's wall time without the evaluations (Ray is started once for the
  whole script, before any timing); ``iteration_time_s``: the summed iteration times.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from scipy import stats as st

from bioflux import config, training
from bioflux.evaluation import run_episodes, summarize
from bioflux.policies import ModulePolicy, Policy, load_policy

TARGET_WORLD = {
    "height": 40,
    "width": 40,
    "n_predators": 4,
    "n_prey": 20,
    "max_steps": 100,
    "wall_density": 0.02,
    "obs_radius": 4,
}
EVAL_SEED = 900_001


def capture_rate(predator: str | Policy, env_cfg, episodes: int, seed: int = EVAL_SEED) -> float:
    """Capture rate of ``predator`` against random prey: ``episodes`` episodes, all at once."""
    policy = load_policy(predator, "predator") if isinstance(predator, str) else predator
    records = run_episodes(
        policy, load_policy("random", "prey"), env_cfg, episodes, seed, num_worlds=episodes
    )
    return summarize(records)["predator"]["success_rate"]


def t_interval(xs: list[float], digits: int = 3) -> list[float]:
    """95% t-interval of the mean of ``xs`` (the seeds)."""
    if len(xs) < 2:
        return [round(xs[0], digits)] * 2
    m, se = statistics.mean(xs), statistics.stdev(xs) / len(xs) ** 0.5
    h = st.t.ppf(0.975, len(xs) - 1) * se
    return [round(m - h, digits), round(m + h, digits)]


def welch_interval(a: list[float], b: list[float]) -> list[float]:
    """95% Welch t-interval of mean(a) − mean(b)."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    d = statistics.mean(a) - statistics.mean(b)
    if va + vb == 0:
        return [round(d, 3)] * 2
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    h = st.t.ppf(0.975, df) * math.sqrt(va + vb)
    return [round(d - h, 3), round(d + h, 3)]


def crossing(points: list[tuple[int, float]], threshold: float) -> dict[str, Any]:
    """Where a run's capture rate first reaches ``threshold``: ``points`` are (agent-steps,
    rate) in training order. Linear interpolation between the two points around the crossing;
    the first point itself when it is already there; censored when no point reaches it."""
    for i, (x, r) in enumerate(points):
        if r >= threshold:
            if i == 0:
                return {"agent_steps": x, "first_point_at_or_above": x, "censored_at": None}
            x0, r0 = points[i - 1]
            at = x0 + (threshold - r0) / (r - r0) * (x - x0)
            return {"agent_steps": round(at), "first_point_at_or_above": x, "censored_at": None}
    return {"agent_steps": None, "first_point_at_or_above": None, "censored_at": points[-1][0]}


def arm_experiment(world: dict, iterations: int, seed: int, arm: str, model: str):
    """The demo's PPO on ``world`` for ``iterations``: from random weights (``arm``
    "scratch") or from ``model`` ("transfer")."""
    overrides = [
        f"env={json.dumps(world)}",
        f"stop.iterations={iterations}",
        f"seed={seed}",
        f"name={arm}_s{seed}",
        "checkpoint.frequency=1000",
    ]
    if arm == "transfer":
        overrides.append(f"training.init_from={json.dumps(model)}")
    return config.load("demo", overrides)


def train_run(
    exp, root: Path, env_cfg, episodes: int, every: int, log
) -> tuple[dict[str, Any], list[dict[str, Any]], float, float]:
    """Train ``exp``, evaluating the learner's predator module against random prey at the start
    and every ``every`` iterations and at the end; returns (summary, points, wall s without the
    evaluations, evaluation s)."""
    state: dict[str, Any] = {"algo": None, "points": [], "eval_s": 0.0}
    last_iteration = exp.stop.iterations

    def evaluate(agent_steps: int, iteration: int) -> None:
        t0 = time.perf_counter()
        module = state["algo"].learner_group._learner.module["predator"]
        rate = capture_rate(ModulePolicy(module, f"{exp.name}@{iteration}"), env_cfg, episodes)
        state["points"].append({"iteration": iteration, "agent_steps": agent_steps, "rate": rate})
        state["eval_s"] += time.perf_counter() - t0

    def on_start(algo) -> None:
        state["algo"] = algo
        evaluate(0, 0)

    def on_row(rows: list[dict[str, Any]]) -> None:
        if rows and (rows[-1]["iteration"] % every == 0 or rows[-1]["iteration"] == last_iteration):
            evaluate(rows[-1]["agent_steps"], rows[-1]["iteration"])

    t0 = time.perf_counter()
    summary = training.train(
        exp, output=root / "runs", models=root / "m", log=log, on_row=on_row, on_start=on_start
    )
    wall = time.perf_counter() - t0
    return summary, state["points"], wall - state["eval_s"], state["eval_s"]


def arm_summary(runs: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    cross = [
        crossing([(p["agent_steps"], p["rate"]) for p in r["points"]], threshold) for r in runs
    ]
    reached = [c["agent_steps"] for c in cross if c["agent_steps"] is not None]
    to_threshold: dict[str, Any] = {
        "per_seed": [c["agent_steps"] for c in cross],
        "first_evaluation_at_or_above": [c["first_point_at_or_above"] for c in cross],
        "censored_at": [c["censored_at"] for c in cross],
        "reached": f"{len(reached)}/{len(runs)}",
    }
    if len(reached) == len(runs):
        to_threshold["mean"] = round(statistics.mean(reached))
        to_threshold["ci95_over_seeds"] = t_interval(reached, digits=0)
    else:
        bounded = [
            c["agent_steps"] if c["censored_at"] is None else c["censored_at"] for c in cross
        ]
        to_threshold["mean"] = None
        to_threshold["mean_at_least"] = round(statistics.mean(bounded))
    finals = [r["points"][-1]["rate"] for r in runs]
    n_points = min(len(r["points"]) for r in runs)
    curve = []
    for i in range(n_points):
        rates = [r["points"][i]["rate"] for r in runs]
        curve.append(
            {
                "iteration": runs[0]["points"][i]["iteration"],
                "agent_steps": [r["points"][i]["agent_steps"] for r in runs],
                "rate": [round(x, 3) for x in rates],
                "mean": round(statistics.mean(rates), 3),
                "ci95_over_seeds": t_interval(rates),
            }
        )
    return {
        "agent_steps_to_threshold": to_threshold,
        "final": {
            "agent_steps": [r["points"][-1]["agent_steps"] for r in runs],
            "capture_rate": [round(x, 3) for x in finals],
            "mean": round(statistics.mean(finals), 3),
            "ci95_over_seeds": t_interval(finals),
        },
        "curve": curve,
        "train_wall_s": [round(r["wall_s"], 1) for r in runs],
        "iteration_time_s": [round(r["iteration_time_s"], 1) for r in runs],
        "evaluation_s": [round(r["eval_s"], 1) for r in runs],
    }


def plot(result: dict[str, Any], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colors = {"scratch": "tab:blue", "transfer": "tab:orange"}
    for arm, color in colors.items():
        curve = result[arm]["curve"]
        x = [statistics.mean(p["agent_steps"]) / 1e6 for p in curve]
        lo = [max(0.0, p["ci95_over_seeds"][0]) for p in curve]  # a rate: drawn within [0, 1]
        hi = [min(1.0, p["ci95_over_seeds"][1]) for p in curve]
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
        for k in range(len(curve[0]["rate"])):
            xs = [p["agent_steps"][k] / 1e6 for p in curve]
            ax.plot(xs, [p["rate"][k] for p in curve], color=color, lw=0.6, alpha=0.5)
        ax.plot(x, [p["mean"] for p in curve], color=color, lw=2, label=f"{arm} (mean, 95% t band)")
    ax.axhline(result["random_on_target"], color="gray", ls=":", label="random predators")
    ax.axhline(
        result["threshold_rate"],
        color="black",
        ls="--",
        lw=1,
        label=f"{result['threshold']}× random",
    )
    ax.set_xlabel("target agent-steps trained (millions)")
    ax.set_ylabel("capture rate against random prey")
    ax.set_title(
        f"40×40 target world, {len(result['seeds'])} seeds, "
        f"{result['episodes']} evaluation episodes per point"
    )
    ax.legend(fontsize=8, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-iterations", type=int, default=40)
    parser.add_argument("--target-iterations", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=2, help="iterations between evaluations")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes per point")
    parser.add_argument("--threshold", type=float, default=1.5, help="× random predators' rate")
    parser.add_argument("--figure", type=Path, default=None, help="write the curves to this PNG")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    quiet = lambda _: None  # noqa: E731
    start = time.perf_counter()
    import ray

    from bioflux.ray_session import init_ray

    started_ray = init_ray()  # once: every run below reuses it
    try:
        with tempfile.TemporaryDirectory(prefix="bioflux-transfer-") as tmp:
            root = Path(tmp)
            src = config.load("demo", [f"stop.iterations={args.source_iterations}", "name=source"])
            t0 = time.perf_counter()
            source = training.train(src, output=root / "runs", models=root / "m", log=quiet)
            source_wall = time.perf_counter() - t0
            model = source["models"]["final"]
            env_cfg = config.validate(
                {
                    **config.read_sections(config.resolve_path("demo")),
                    "env": TARGET_WORLD,
                    "name": "t",
                    "stop": {"iterations": 1},
                }
            ).env_config
            random_rate = capture_rate("random", env_cfg, args.episodes)
            threshold_rate = args.threshold * random_rate
            result: dict[str, Any] = {
                "random_on_target": round(random_rate, 3),
                "threshold": args.threshold,
                "threshold_rate": round(threshold_rate, 3),
                "source": {
                    "iterations": source["iterations"],
                    "agent_steps": source["last"]["agent_steps"],
                    "env_steps": source["env_steps"],
                    "train_wall_s": round(source_wall, 1),
                    "iteration_time_s": round(source["time_s"], 1),
                    "capture_rate_on_target": round(capture_rate(model, env_cfg, args.episodes), 3),
                },
            }
            for arm in ("scratch", "transfer"):
                runs = []
                for seed in seeds:
                    exp = arm_experiment(TARGET_WORLD, args.target_iterations, seed, arm, model)
                    summary, points, wall, eval_s = train_run(
                        exp, root, env_cfg, args.episodes, args.eval_every, quiet
                    )
                    runs.append(
                        {
                            "points": points,
                            "wall_s": wall,
                            "eval_s": eval_s,
                            "iteration_time_s": summary["time_s"],
                        }
                    )
                result[arm] = arm_summary(runs, threshold_rate)
            a = [r for r in result["transfer"]["final"]["capture_rate"]]
            b = [r for r in result["scratch"]["final"]["capture_rate"]]
            result["final_transfer_minus_scratch"] = {
                "mean": round(statistics.mean(a) - statistics.mean(b), 3),
                "ci95_welch": welch_interval(a, b),
            }
    finally:
        if started_ray:
            ray.shutdown()
    result.update(
        source_iterations=args.source_iterations,
        target_iterations=args.target_iterations,
        eval_every=args.eval_every,
        target_world=TARGET_WORLD,
        seeds=seeds,
        episodes=args.episodes,
        evaluation_seed=EVAL_SEED,
        wall_s=round(time.perf_counter() - start, 1),
    )
    if args.figure is not None:
        result["figure"] = str(plot(result, args.figure))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
