"""The MADDPG learner alone: milliseconds and FLOPs per gradient step on the study's world.

Run: ``python benchmarks/maddpg_update.py [--num-gpus-per-learner 1] [--batch-size 128]
[--world study] [--critic-state flat]``. Prints one JSON object.

It builds ``configs/maddpg.yaml``'s algorithm on ``configs/study_demo.yaml``'s world (24×24,
2 predators, 10 prey; ``--world study``: the reference world, 100×100, 20 + 100), samples
until the joint replay holds ``--replay`` transitions, then
times ``update_joint`` on replayed batches of ``--batch-size`` transitions: one gradient step
for both species' actors and critics plus the soft target updates. "ms_per_step" is the median,
over ``--repeats`` passes, of a pass's wall time per step (a pass = ``--steps`` steps in one
call, as an iteration sends them; on a GPU the call ends with reading the losses back, a
synchronisation). "gflop_per_step" is counted by ``torch.utils.flop_counter``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import ray
import torch
from torch.utils.flop_counter import FlopCounterMode

from bioflux import config
from bioflux.algorithms import get_algorithm


def build(batch_size: int, gpus: float, seed: int, world: str, critic_state: str):
    study_world = config.read_sections(config.resolve_path(world))["env"]
    exp = config.load(
        "maddpg",
        [
            f"env={json.dumps(study_world)}",
            f"training.batch_size={batch_size}",
            f"training.critic_state={critic_state}",
            f"resources.num_gpus_per_learner={gpus}",
            "resources.num_env_runners=0",
            f"seed={seed}",
        ],
    )
    return get_algorithm("maddpg").build_config(exp).build_algo()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128, help="joint transitions")
    parser.add_argument("--replay", type=int, default=3000, help="transitions sampled first")
    parser.add_argument("--steps", type=int, default=40, help="gradient steps per pass")
    parser.add_argument("--repeats", type=int, default=8, help="timed passes")
    parser.add_argument("--num-gpus-per-learner", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--world", default="study_demo", help="the world of this study config (study: 100×100)"
    )
    parser.add_argument("--critic-state", default="auto", choices=["auto", "flat", "pooled"])
    args = parser.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False, num_gpus=torch.cuda.device_count())
    try:
        algo = build(
            args.batch_size, args.num_gpus_per_learner, args.seed, args.world, args.critic_state
        )
        while len(algo.replay) < args.replay:
            algo.train()
        learner = algo.learner_group._learner
        batches = [algo.replay.sample(args.batch_size) for _ in range(args.steps)]
        learner.update_joint(batches)  # warm-up
        per_step = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            learner.update_joint(batches)
            per_step.append((time.perf_counter() - t0) / len(batches))
        with FlopCounterMode(display=False) as flops:
            learner.update_joint(batches[:1])
        device = str(learner._device)
        algo.stop()
    finally:
        ray.shutdown()
    print(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "device": device,
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                },
                "world": args.world,
                "critic_state": args.critic_state,
                "batch_size": args.batch_size,
                "ms_per_step": round(statistics.median(per_step) * 1e3, 2),
                "ms_per_step_min": round(min(per_step) * 1e3, 2),
                "gflop_per_step": round(flops.get_total_flops() / 1e9, 3),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
