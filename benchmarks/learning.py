"""Learning benchmark: is PPO's learning real? Prints one JSON object.

Run: ``python benchmarks/learning.py [--config demo] [--time-budget 600] [--set KEY=VALUE ...]``.

Trains the config from scratch (stopping at its own criteria or the time budget, whichever
comes first), then evaluates, on the same seeds, trained vs random for each species and random
vs random. Targets (issue #3): trained predators' capture rate against random prey ≥ 2× random
predators'; trained prey survive random predators better than random prey do.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bioflux import config, evaluation, training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo")
    parser.add_argument("--time-budget", type=float, default=600.0, help="seconds of training")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", type=Path, default=None, help="keep outputs here")
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="bioflux-learning-"))
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
