"""Epsilon-greedy (RLlib's DQN) training throughput: the columnar path against RLlib's own.

Run: ``python benchmarks/dqn_throughput.py [--world demo|reference] [--iterations 4]
[--paths columnar,multi_agent] [--set KEY=VALUE ...]``. Prints one JSON object.

Both paths train ``configs/epsilon_greedy.yaml`` (its hyper-parameters, EnvRunners and worlds,
``training_intensity: 4``: the same replayed rows per sampled env step) on the chosen world:
``demo`` (the config's own, 24×24, 12 agents) or ``reference`` (the default env, 100×100, 120
agents, as in ``configs/study.yaml``):

- ``columnar``: ``TransitionEnvRunner`` + ``ColumnarDQN`` (the batched core, flat transitions,
  a flat replay per species);
- ``multi_agent``: RLlib's ``MultiAgentEnvRunner`` and multi-agent episode replay.

Each iteration samples ``training.steps_per_iteration`` env steps (one env step = one step of a
world, all its agents). Reported per path, median over the iterations after the first (RLlib's
warm-up: ``learning_starts``, actor start): env steps/s and agent steps/s of the whole
iteration, and the seconds per iteration spent in learner updates (``learning_s``, all of the
iteration's replayed batches) and in the rest (``other_s``: sampling, replay, weight sync;
see ``timed_iterations.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import ray
from timed_iterations import timed_iterations

from bioflux import config
from bioflux.algorithms import get_algorithm

#: the env section per world: the config's own, or the defaults (the reference world)
WORLDS = ("demo", "reference")


def measure(path: str, world: str, iterations: int, overrides: list[str]) -> dict:
    exp = config.load("epsilon_greedy", [f"resources.env_runner={path}", *overrides])
    if world == "reference":
        exp = config.validate({**exp.to_dict(), "env": {}})
    algo = get_algorithm("epsilon_greedy").build_config(exp).build_algo()
    try:
        timed = timed_iterations(algo, iterations)
    finally:
        algo.stop()
    env_rates = [it.env_steps / it.wall_s for it in timed]
    return {
        "env_steps_per_s": round(statistics.median(env_rates)),
        "agent_steps_per_s": round(statistics.median(it.agent_steps / it.wall_s for it in timed)),
        "per_iteration_env_steps_per_s": [round(r) for r in env_rates],
        "learning_s": round(statistics.median(it.learning_s for it in timed), 4),
        "other_s": round(statistics.median(it.other_s for it in timed), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="demo", choices=WORLDS)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--paths", default="columnar,multi_agent")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        paths = {
            p: measure(p, args.world, args.iterations, args.set) for p in args.paths.split(",")
        }
    finally:
        ray.shutdown()
    out = {
        "machine": {"cpus": os.cpu_count()},
        "world": args.world,
        "config": "epsilon_greedy",
        "overrides": args.set,
        "paths": paths,
    }
    if {"columnar", "multi_agent"} <= set(paths):
        base = paths["multi_agent"]["env_steps_per_s"]
        out["speedup_columnar_vs_multi_agent"] = round(
            paths["columnar"]["env_steps_per_s"] / base, 2
        )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
