"""PPO end to end with the world on the learner's device (``resources.env_device``).

Run: ``python benchmarks/device_ppo.py [--device cuda] [--worlds 1024]
[--train-batch-size 1000000] [--minibatch-sizes 16384] [--hidden 128,128] [--iterations 3]
[--learner-cuda-graph]``. Prints one JSON object.

Default world (100×100, 20 predators, 100 prey, 300 steps), PPO with 5 epochs per species'
module. Per iteration: the ``DeviceRolloutSampler`` steps ``--worlds`` torch worlds with the
learner's own modules until the train batch is full, computes GAE there, and the learner runs
SGD on the device tensors. "agent-steps trained/s" = agent-steps in an iteration's batch / the
iteration's wall time (sampling + learning), median over the iterations after the first
(``timed_iterations.py``), as ``train_throughput.py`` reports it for the EnvRunner paths.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import ray
import torch
from timed_iterations import timed_iterations

from bioflux import config
from bioflux.algorithms import get_algorithm


def build(args, minibatch: int):
    gpu = args.device == "cuda"
    exp = config.validate(
        {
            "name": "device_ppo",
            "algorithm": "ppo",
            "seed": 0,
            "env": {},
            "training": {
                "train_batch_size": args.train_batch_size,
                "minibatch_size": minibatch,
                "num_epochs": 5,
                "hidden": [int(h) for h in args.hidden.split(",")],
                "learner_cuda_graph": args.learner_cuda_graph,
            },
            "resources": {
                "env_runner": "columnar",
                "env_device": args.device,
                "num_env_runners": 0,
                "num_envs_per_env_runner": args.worlds,
                "num_gpus_per_learner": 1 if gpu else 0,
            },
            "stop": {"iterations": 1},
        }
    )
    return get_algorithm("ppo").build_config(exp).build_algo()


def measure(args, minibatch: int) -> dict:
    t0 = time.perf_counter()
    algo = build(args, minibatch)
    build_s = time.perf_counter() - t0
    try:
        its = timed_iterations(algo, args.iterations)
    finally:
        algo.stop()
    rates = [it.agent_steps / it.wall_s for it in its]
    last = its[-1].result
    learners = last.get("learners", {}).get("__all_modules__", {})
    return {
        "minibatch_size": minibatch,
        "agent_steps_trained_per_s": round(statistics.median(rates)),
        "per_iteration": [round(r) for r in rates],
        "agent_steps_per_iteration": round(statistics.median(it.agent_steps for it in its)),
        "sampling_s": round(statistics.median(it.other_s for it in its), 3),
        "learning_s": round(statistics.median(it.learning_s for it in its), 3),
        "sgd_steps_replayed_as_cuda_graph": learners.get("num_sgd_steps_cuda_graph"),
        "build_s": round(build_s, 1),
        "capture_rate": last["env_runners"].get("capture_rate"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--worlds", type=int, default=16)
    parser.add_argument("--train-batch-size", type=int, default=24000, help="agent-steps")
    parser.add_argument("--minibatch-sizes", default="4096", help="agent rows, comma-separated")
    parser.add_argument("--hidden", default="128,128")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--learner-cuda-graph", action="store_true")
    args = parser.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False, num_gpus=torch.cuda.device_count())
    try:
        results = [measure(args, int(m)) for m in args.minibatch_sizes.split(",")]
    finally:
        ray.shutdown()
    out = {
        "machine": {
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "env": "default (100x100, 20 predators, 100 prey, 300 steps)",
        "env_device": args.device,
        "worlds": args.worlds,
        "train_batch_size_agent_steps": args.train_batch_size,
        "hidden": [int(h) for h in args.hidden.split(",")],
        "num_epochs": 5,
        "learner_cuda_graph": args.learner_cuda_graph,
        "results": results,
        "best_agent_steps_trained_per_s": max(r["agent_steps_trained_per_s"] for r in results),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
