"""Learning benchmark: is PPO's learning real? Prints one JSON object.

Run: ``python benchmarks/learning.py [--config demo] [--time-budget 600] [--set KEY=VALUE ...]``.

Trains the config from scratch (stopping at its own criteria or the time budget, whichever
comes first), then evaluates, on the same seeds, trained vs random for each species and random
vs random. Targets (issue #3): trained predators' capture rate against random prey ≥ 2× random
predators'; trained prey survive random predators better than random prey do.

``--algo maddpg`` instead trains ``configs/maddpg_coop.yaml`` (cooperative capture) with
MADDPG-style centralised critics and with independent PPO on the same world and the same
env-step budget (``--env-steps``), and prints both predators' capture rates against random prey
and against each other's prey.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bioflux import config, evaluation, training


def compare_maddpg(args: argparse.Namespace, out: Path) -> dict:
    budget = [f"stop.env_steps={args.env_steps}", "stop.iterations=null", "stop.time_s=null"]
    maddpg = config.load("maddpg_coop", [*args.set, *budget])
    data = maddpg.to_dict()
    data.update(
        name="ppo_coop",
        algorithm="ppo",
        training={
            "train_batch_size": 8000,
            "minibatch_size": 2000,
            "num_epochs": 6,
            "lr": 5e-4,
            "gamma": 0.95,
        },
    )
    ppo = config.validate(config.apply_overrides(data, budget))
    results, models = {}, {}
    for exp in (maddpg, ppo):
        t0 = time.perf_counter()
        summary = training.train(
            exp,
            output=out / "runs",
            models=out / "models",
            log=lambda line: print(line, flush=True),
        )
        models[exp.algorithm] = summary["models"]["final"]
        results[exp.algorithm] = {
            "env_steps": summary["env_steps"],
            "iterations": summary["iterations"],
            "train_wall_s": round(time.perf_counter() - t0, 1),
            "learning_curves": summary["learning_curves"],
        }
    ev = dict(env_config=maddpg.env_config, episodes=args.episodes, seed=maddpg.evaluation.seed)
    base = evaluation.evaluate("random", "random", **ev)["metrics"]["predator"]["capture_rate"]
    for algo, model in models.items():
        results[algo]["capture_rate_vs_random_prey"] = evaluation.evaluate(model, "random", **ev)[
            "metrics"
        ]["predator"]["capture_rate"]
        other = models["ppo" if algo == "maddpg" else "maddpg"]
        results[algo]["capture_rate_vs_other_algorithms_prey"] = evaluation.evaluate(
            model, other, **ev
        )["metrics"]["predator"]["capture_rate"]
    m, p = results["maddpg"], results["ppo"]
    return {
        "config": "maddpg_coop (capture_predators: 2)",
        "env_step_budget": args.env_steps,
        "random_predators_capture_rate": base,
        "maddpg": m,
        "ppo": p,
        "maddpg_at_least_matches_ppo": m["capture_rate_vs_random_prey"]
        >= p["capture_rate_vs_random_prey"],
        "outputs": str(out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=["ppo", "maddpg"], default="ppo")
    parser.add_argument(
        "--env-steps",
        type=int,
        default=40_000,
        help="--algo maddpg: env-step budget of each algorithm",
    )
    parser.add_argument("--config", default="demo")
    parser.add_argument("--time-budget", type=float, default=600.0, help="seconds of training")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", type=Path, default=None, help="keep outputs here")
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="bioflux-learning-"))
    if args.algo == "maddpg":
        print(json.dumps(compare_maddpg(args, out), indent=2))
        return
    exp = config.load(args.config, [*args.set, f"stop.time_s={args.time_budget}"])
    t0 = time.perf_counter()
    summary = training.train(
        exp, output=out / "runs", models=out / "models", log=lambda line: print(line, flush=True)
    )
    wall = time.perf_counter() - t0
    trained = summary["models"]["final"]
    ev = dict(env_config=exp.env_config, episodes=args.episodes, seed=exp.evaluation.seed)
    base = evaluation.evaluate("random", "random", **ev)["metrics"]
    pred = evaluation.evaluate(trained, "random", **ev)["metrics"]
    prey = evaluation.evaluate("random", trained, **ev)["metrics"]
    random_capture = base["predator"]["capture_rate"]
    result = {
        "config": args.config,
        "iterations": summary["iterations"],
        "env_steps": summary["env_steps"],
        "train_wall_s": round(wall, 1),
        "eval_episodes": args.episodes,
        "capture_rate": {
            "random_vs_random": random_capture,
            "trained_predators_vs_random_prey": pred["predator"]["capture_rate"],
            "ratio": pred["predator"]["capture_rate"] / max(random_capture, 1e-9),
        },
        "prey_survival": {
            "random_prey_vs_random_predators": base["prey"]["success_rate"],
            "trained_prey_vs_random_predators": prey["prey"]["success_rate"],
        },
        "targets": {
            "capture_ratio_ge_2": pred["predator"]["capture_rate"] >= 2 * random_capture,
            "trained_prey_survive_better": prey["prey"]["success_rate"]
            > base["prey"]["success_rate"],
            "within_10_minutes": wall <= 600,
        },
        "outputs": str(out),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
