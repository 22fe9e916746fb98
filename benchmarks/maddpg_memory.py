"""MADDPG's memory on the reference world: the joint replay filled to capacity, then updates.

Run: ``python benchmarks/maddpg_memory.py [--transitions 50000] [--updates 3]``. Prints one
JSON object.

It builds ``configs/maddpg.yaml``'s algorithm on the reference world (100×100, 20 predators,
100 prey; the config's replay capacity, 50,000), samples joint transitions into the replay
until it holds ``--transitions`` of them (no learning while it fills, which is the sampling
the trial does anyway), then runs ``--updates`` gradient steps at the config's batch size.
It reports the replay's bytes per transition, its size at capacity, and the process's peak
RSS (``resource.getrusage``; the learner runs in this process). "dense_bytes_per_transition"
is what the replay stored before it kept compact world states: the float16 global state and
every slot's observation, before and after the step.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import ray

from bioflux import config
from bioflux.algorithms import get_algorithm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=50_000)
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--worlds", type=int, default=8)
    args = parser.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        exp = config.load(
            "maddpg",
            [
                "env={}",
                "resources.num_env_runners=0",
                f"resources.num_envs_per_env_runner={args.worlds}",
            ],
        )
        algo = get_algorithm("maddpg").build_config(exp).build_algo()
        runner = algo.env_runner_group.local_env_runner
        t0 = time.perf_counter()
        while len(algo.replay) < args.transitions:
            algo.replay.add(runner.sample_joint(200))
        fill_s = time.perf_counter() - t0
        learner = algo.learner_group._learner
        cfg = algo.config
        t0 = time.perf_counter()
        learner.update_joint([algo.replay.sample(cfg.batch_size) for _ in range(args.updates)])
        update_s = (time.perf_counter() - t0) / args.updates
        replay_bytes = sum(v.nbytes for v in algo.replay.data.values())
        w = runner._world
        views = w.config.height * w.config.width * 3 + w.n_agents * w.config.obs_size**2 * 4
        result = {
            "env": "reference (100x100, 20 predators, 100 prey)",
            "replay_capacity": algo.replay.capacity,
            "transitions_stored": len(algo.replay),
            "bytes_per_transition": round(replay_bytes / algo.replay.capacity),
            "replay_gb_at_capacity": round(replay_bytes / 1e9, 3),
            "dense_bytes_per_transition": 2 * 2 * views,
            "dense_replay_gb_at_capacity": round(2 * 2 * views * algo.replay.capacity / 1e9, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
            "batch_size": cfg.batch_size,
            "s_per_update": round(update_s, 2),
            "fill_s": round(fill_s, 1),
        }
        algo.stop()
    finally:
        ray.shutdown()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
