"""Training throughput: agent-steps trained per second, PPO, on the default env configuration.

Run: ``python benchmarks/train_throughput.py [--iterations 4] [--num-env-runners 1]
[--num-envs 4] [--paths columnar,batched,pettingzoo] [--learner-precision bfloat16]
[--num-gpus-per-learner 1 [--learner-cuda-graph]]``. Prints one JSON object.

Paths compared in the same run, with the same PPO hyper-parameters and network:

- ``pettingzoo``: the straightforward path — RLlib's stock ``ParallelPettingZooEnv`` wrapper
  around ``predator_prey_v0`` (observations flattened by RLlib's ``FlattenObservations``
  connector) sampled by RLlib's ``MultiAgentEnvRunner``;
- ``adapter``: BioFlux's RLlib env adapter (``PredatorPreyRLlibEnv``) on ``MultiAgentEnvRunner``;
- ``batched``: BioFlux's ``BatchedCoreEnvRunner`` (the default): one ``SingleAgentEpisode`` per
  agent trajectory, GAE in RLlib's learner connectors;
- ``columnar``: ``ColumnarEnvRunner`` + ``ColumnarPPO``: values and GAE computed on the
  EnvRunners, flat batches straight to SGD;
- ``columnar_ahead``: ``columnar`` with ``training.sample_ahead`` (remote EnvRunners sample the
  next batch while the learner trains; each batch is one update old).

Every path runs the same learner (``PerModuleEpochsPPOTorchLearner``: each species' module makes
exactly ``num_epochs`` passes over its own rows), so the SGD work per agent-step is the same.

"agent-steps trained/s" = agent-steps in an iteration's train batch / the iteration's wall time
(sampling + learning), median over the iterations after the first. "learning_s" is the wall time
of the iteration's ``LearnerGroup.update`` call and "other_s" the rest: sampling, weight sync
and metrics, or with ``sample_ahead`` the wait for the batch in flight (medians; see
``timed_iterations.py``; figures before 2026-11-27 quoted RLlib's moving-average timers).
"""

from __future__ import annotations

import argparse
import json
import statistics

import ray
from timed_iterations import timed_iterations

from bioflux import config
from bioflux.algorithms import get_algorithm


def build(
    path: str,
    runners: int,
    envs: int,
    batch: int,
    hidden: list[int],
    precision: str,
    gpus: float,
    minibatch: int,
    compile_mode: str = "off",
    cuda_graph: bool = False,
):
    from ray.rllib.connectors.env_to_module import FlattenObservations
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
    from ray.tune.registry import register_env

    from bioflux.envs import predator_prey_v0

    exp = config.validate(
        {
            "name": f"throughput_{path}",
            "algorithm": "ppo",
            "seed": 0,
            "env": {},
            "training": {
                "train_batch_size": batch,
                "minibatch_size": minibatch,
                "num_epochs": 5,
                "hidden": hidden,
                "learner_precision": precision,
                "sample_ahead": path == "columnar_ahead",
                "learner_cuda_graph": cuda_graph,
            },
            "resources": {
                "num_env_runners": runners,
                "num_envs_per_env_runner": envs,
                "env_runner": {"columnar_ahead": "columnar"}.get(path, path)
                if path in ("batched", "columnar", "columnar_ahead")
                else "multi_agent",
                "num_gpus_per_learner": gpus,
            },
            "stop": {"iterations": 1},
        }
    )
    cfg = get_algorithm("ppo").build_config(exp)
    if compile_mode != "off":  # torch.compile of the modules' forward_train in the learner
        cfg.framework(
            torch_compile_learner=True,
            torch_compile_learner_what_to_compile="forward_train",
            torch_compile_learner_dynamo_backend="inductor",
            torch_compile_learner_dynamo_mode=None if compile_mode == "default" else compile_mode,
        )
    if path == "pettingzoo":
        register_env(
            "pz_predator_prey_v0",
            lambda c: ParallelPettingZooEnv(predator_prey_v0.parallel_env(**c)),
        )
        cfg.environment("pz_predator_prey_v0", env_config={})
        cfg.env_runners(
            env_to_module_connector=lambda env, spaces, device: FlattenObservations(
                multi_agent=True
            )
        )
    return cfg.build_algo()


def measure(path: str, iterations: int, **kw) -> dict:
    algo = build(path, **kw)
    try:
        timed = timed_iterations(algo, iterations)
    finally:
        algo.stop()
    rates = [it.agent_steps / it.wall_s for it in timed]
    learning = [it.learning_s for it in timed]
    other = [it.other_s for it in timed]
    graph_steps = sum(
        it.result["learners"]["__all_modules__"].get("num_sgd_steps_cuda_graph", 0) for it in timed
    )
    return {
        "agent_steps_trained_per_s": round(statistics.median(rates)),
        "per_iteration": [round(r) for r in rates],
        "learning_s": round(statistics.median(learning), 3),
        "other_s": round(statistics.median(other), 3),
        "sgd_steps_replayed_as_cuda_graph": int(graph_steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--num-env-runners", type=int, default=1)
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--train-batch-size", type=int, default=12000, help="agent-steps")
    parser.add_argument("--hidden", default="128,128")
    parser.add_argument("--minibatch-size", type=int, default=4096, help="agent rows")
    parser.add_argument("--num-gpus-per-learner", type=float, default=0.0)
    parser.add_argument(
        "--torch-compile",
        default="off",
        choices=["off", "default", "reduce-overhead", "max-autotune-no-cudagraphs"],
        help="torch.compile the learner's forward_train (inductor) with this mode",
    )
    parser.add_argument(
        "--learner-cuda-graph",
        action="store_true",
        help="GPU learner: replay each SGD step as a CUDA graph (training.learner_cuda_graph)",
    )
    parser.add_argument(
        "--paths", default="columnar,batched,pettingzoo", help="also: columnar_ahead, adapter"
    )
    parser.add_argument(
        "--learner-precision",
        default="float32",
        choices=["float32", "bfloat16"],
        help="dtype of the PPO update's forward pass, for every path",
    )
    args = parser.parse_args()
    import torch

    ray.init(include_dashboard=False, log_to_driver=False, num_gpus=torch.cuda.device_count())
    kw = dict(
        runners=args.num_env_runners,
        envs=args.num_envs,
        batch=args.train_batch_size,
        hidden=[int(h) for h in args.hidden.split(",")],
        precision=args.learner_precision,
        gpus=args.num_gpus_per_learner,
        minibatch=args.minibatch_size,
        compile_mode=args.torch_compile,
        cuda_graph=args.learner_cuda_graph,
    )
    try:
        results = {p: measure(p, args.iterations, **kw) for p in args.paths.split(",")}
    finally:
        ray.shutdown()
    import os

    out = {
        "machine": {
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "env": "default (100x100, 20 predators, 100 prey, 300 steps)",
        "num_env_runners": args.num_env_runners,
        "num_envs_per_env_runner": args.num_envs,
        "train_batch_size_agent_steps": args.train_batch_size,
        "hidden": kw["hidden"],
        "minibatch_size": args.minibatch_size,
        "num_epochs": 5,
        "num_gpus_per_learner": args.num_gpus_per_learner,
        "torch_compile": args.torch_compile,
        "learner_cuda_graph": args.learner_cuda_graph,
        "learner_precision": args.learner_precision,
        "paths": results,
    }
    if "pettingzoo" in results:
        base = results["pettingzoo"]["agent_steps_trained_per_s"]
        out["speedup_vs_pettingzoo"] = {
            p: round(r["agent_steps_trained_per_s"] / base, 2) for p, r in results.items()
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
