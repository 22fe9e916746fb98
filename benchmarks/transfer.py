"""What transfer buys: PPO on a bigger world, from scratch against ``--init-from`` a model
trained on the demo world.

Run: ``python benchmarks/transfer.py [--source-iterations 40] [--target-iterations 10]
[--seeds 0,1,2] [--episodes 100]``. Prints one JSON object.

1. the source: ``configs/demo.yaml`` (24×24, 2 predators, 10 prey, 50 steps, 9×9 windows),
   trained ``--source-iterations`` iterations;
2. the target world: 40×40, 4 predators, 20 prey, 100 steps, the same 9×9 window (so the
   modules fit); ``--target-iterations`` iterations of the demo's PPO, per seed, from random
   weights ("scratch") and from the source's weights ("transfer");
3. each target run's final predators against random prey, and the source's predators as
   they are (0 iterations on the target world), ``--episodes`` episodes on one evaluation seed.

The capture rate is the mean over seeds with a 95% t-interval over the seeds' rates (the
seed is the unit); also the target's training-time capture rate per iteration (self-play:
both species learn, so read it with the evaluation, not alone).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from scipy import stats as st

from bioflux import config, training
from bioflux.evaluation import run_episodes, summarize
from bioflux.policies import load_policy

TARGET_WORLD = {
    "height": 40,
    "width": 40,
    "n_predators": 4,
    "n_prey": 20,
    "max_steps": 100,
    "wall_density": 0.02,
    "obs_radius": 4,
}


def capture_rate(predator: str, env_cfg, episodes: int, seed: int) -> float:
    records = run_episodes(
        load_policy(predator, "predator"), load_policy("random", "prey"), env_cfg, episodes, seed
    )
    return summarize(records)["predator"]["success_rate"]


def t_interval(xs: list[float]) -> list[float]:
    if len(xs) < 2:
        return [xs[0], xs[0]]
    m, se = statistics.mean(xs), statistics.stdev(xs) / len(xs) ** 0.5
    h = st.t.ppf(0.975, len(xs) - 1) * se
    return [round(m - h, 3), round(m + h, 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-iterations", type=int, default=40)
    parser.add_argument("--target-iterations", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    quiet = lambda _: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bioflux-transfer-") as root:
        root = Path(root)
        src = config.load("demo", [f"stop.iterations={args.source_iterations}", "name=source"])
        source = training.train(src, output=root / "runs", models=root / "m", log=quiet)
        model = source["models"]["final"]
        target_env = config.validate(
            {
                **config.read_sections(config.resolve_path("demo")),
                "env": TARGET_WORLD,
                "name": "t",
                "stop": {"iterations": 1},
            }
        )
        env_cfg = target_env.env_config
        eval_seed = 900_001
        result = {
            "source_on_target": capture_rate(model, env_cfg, args.episodes, eval_seed),
            "random_on_target": capture_rate("random", env_cfg, args.episodes, eval_seed),
        }
        for arm in ("scratch", "transfer"):
            rates, curves, times = [], [], []
            for seed in seeds:
                overrides = [
                    f"env={json.dumps(TARGET_WORLD)}",
                    f"stop.iterations={args.target_iterations}",
                    f"seed={seed}",
                    f"name={arm}_s{seed}",
                ]
                if arm == "transfer":
                    overrides.append(f"training.init_from={json.dumps(model)}")
                exp = config.load("demo", overrides)
                summary = training.train(exp, output=root / "runs", models=root / "m", log=quiet)
                rows = [json.loads(line) for line in Path(summary["metrics"]).open()]
                curves.append([r.get("capture_rate_iter") for r in rows])
                times.append(summary["time_s"])
                rates.append(
                    capture_rate(summary["models"]["final"], env_cfg, args.episodes, eval_seed)
                )
            result[arm] = {
                "capture_rate_vs_random_prey": [round(r, 3) for r in rates],
                "mean": round(statistics.mean(rates), 3),
                "ci95_over_seeds": t_interval(rates),
                "train_time_s": [round(t, 1) for t in times],
                "training_capture_rate_per_iteration": curves,
            }
    result.update(
        source_iterations=args.source_iterations,
        target_iterations=args.target_iterations,
        target_world=TARGET_WORLD,
        seeds=seeds,
        episodes=args.episodes,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
