"""Every approach on one tiny world, ranked: PPO, MADDPG, epsilon-greedy and the fitted
Lotka–Volterra rule train on the same small world, then each trained predator plays random
prey, and the approaches are ranked by capture rate (the built-in policies join as baselines).

    python examples/quick_demo.py          # a few minutes on 2 cores
    BIOFLUX_EXAMPLE_BUDGET=tiny python examples/quick_demo.py   # seconds per approach (tests)

For the full comparison (several seeds, cross-play, confidence intervals over seeds) use
``bioflux.study`` (``bioflux study --config configs/study_demo.yaml``).
"""

import os

import ray

from bioflux import config, evaluation, training
from bioflux.artifacts import init_ray

TINY = os.environ.get("BIOFLUX_EXAMPLE_BUDGET") == "tiny"
OUT = "outputs/examples/quick_demo"

# One world for every approach: the demo's 24×24 grid, 2 predators, 10 prey, 50 steps.
WORLD = [
    "env.height=24",
    "env.width=24",
    "env.n_predators=2",
    "env.n_prey=10",
    "env.max_steps=50",
    "env.obs_radius=4",
    "env.wall_density=0.02",
    "env.capture_predators=1",
    "resources.num_env_runners=0",  # sample in this process: best on a small machine
]
# Each approach's packaged config, with a budget: (normal, tiny) overrides.
APPROACHES = {
    "ppo": (
        "demo",
        ["stop.iterations=15"],
        ["stop.iterations=1", "training.train_batch_size=400", "training.minibatch_size=200"],
    ),
    "maddpg": ("maddpg", ["stop.env_steps=20000"], ["stop.iterations=1"]),
    "epsilon_greedy": ("epsilon_greedy", ["stop.env_steps=20000"], ["stop.iterations=1"]),
    "lotka_volterra": (
        "lotka_volterra",
        ["stop.iterations=12"],
        ["stop.iterations=2", "training.num_samples=2", "training.episodes=4"],
    ),
}
EPISODES = 8 if TINY else 100


def log(line: str) -> None:
    # Training's progress lines. A function of this script, not `print` itself: the
    # Lotka–Volterra fit hands its logger to Ray Tune, which pickles it, and by then Ray may
    # have replaced builtins.print with its own, which no longer pickles by name.
    print(line, flush=True)


init_ray()  # one local Ray for every approach (training starts one itself otherwise)
exp = None
results = []
for approach, (name, normal, tiny) in APPROACHES.items():
    # config.load validates everything (unknown keys, wrong types) before Ray starts.
    exp = config.load(name, [*WORLD, *(tiny if TINY else normal), f"name=quick_{approach}"])
    summary = training.train(
        exp, output=f"{OUT}/runs", models=f"{OUT}/models", resume=True, log=log
    )
    trained = summary["models"]["final"]  # the exported modules, one folder per species
    results.append(evaluation.evaluate(trained, "random", exp.env_config, EPISODES, seed=1))
    results[-1]["approach"] = approach
ray.shutdown()

# Baselines: the built-in policies need no training.
for builtin in ("random", "lotka_volterra"):
    results.append(evaluation.evaluate(builtin, "random", exp.env_config, EPISODES, seed=1))
    results[-1]["approach"] = f"{builtin} (built-in)"

# Rank by the predators' capture rate against random prey, with its 95% interval.
results.sort(key=lambda r: r["metrics"]["predator"]["success_rate"], reverse=True)
print(f"\ncapture rate against random prey ({EPISODES} episodes each)")
for rank, r in enumerate(results, 1):
    m = r["metrics"]["predator"]
    lo, hi = m["success_rate_ci95"]
    print(f"{rank}. {r['approach']:<26} {m['success_rate']:.3f} [{lo:.3f}, {hi:.3f}]")
print(f"report: {evaluation.write_report(results, OUT)['md']}")
