"""The PPO learner alone: milliseconds per SGD step, eager against the captured step.

Run: ``python benchmarks/learner_step.py [--num-gpus-per-learner 1] [--minibatch-sizes 256,4096]``.
Prints one JSON object.

It samples one real train batch (default env, columnar path, ``--train-batch-size`` agent-steps),
then times whole updates (``num_epochs`` 5, every species' rows, ``PerModuleEpochsPPOTorchLearner``)
on that batch from the same weights, in two modes:

- ``eager``: the learner's sync-free eager loop (the default);
- ``captured``: ``training.learner_cuda_graph``'s step over padded static buffers: a CUDA graph
  replay on a GPU; on a CPU the same step runs eagerly (no graph), which shows only the cost of
  the padding.

"ms_per_step" = an update's wall time / its SGD steps (median of ``--updates`` updates after a
warm-up update; on a GPU each update ends with a synchronisation). Small minibatches show the
per-step host overhead, which a graph removes; large ones show the FLOPs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import ray
import torch

from bioflux import config
from bioflux.algorithms import get_algorithm


def sample_batch(batch_size: int, hidden: list[int], gpus: float):
    """A learner (local) and one real train batch of ``batch_size`` agent-steps."""
    exp = config.validate(
        {
            "name": "learner_step",
            "algorithm": "ppo",
            "seed": 0,
            "env": {},
            "training": {"train_batch_size": batch_size, "hidden": hidden, "num_epochs": 5},
            "resources": {
                "num_env_runners": 0,
                "num_envs_per_env_runner": 4,
                "env_runner": "columnar",
                "num_gpus_per_learner": gpus,
            },
            "stop": {"iterations": 1},
        }
    )
    algo = get_algorithm("ppo").build_config(exp).build_algo()
    learner = algo.learner_group._learner
    captured, make_batch = {}, learner._make_batch_if_necessary

    def keep(**kwargs):
        captured["batch"] = batch = make_batch(**kwargs)
        return batch

    learner._make_batch_if_necessary = keep
    algo.train()
    learner._make_batch_if_necessary = make_batch
    return algo, learner, captured["batch"]


def time_updates(learner, batch, *, captured: bool, minibatch: int, updates: int) -> dict:
    learner._cuda_graph = captured
    modules = {
        mid: {k: v for k, v in b.items() if torch.is_tensor(v)}
        for mid, b in batch.policy_batches.items()
    }
    rows = {mid: len(b) for mid, b in batch.policy_batches.items()}
    sync = torch.cuda.synchronize if learner._device.type == "cuda" else (lambda: None)
    per_step, steps = [], 0
    for i in range(updates + 1):  # the first: warm-up (and the capture)
        sync()
        t0 = time.perf_counter()
        _, steps, _ = learner._sgd(
            modules,
            rows,
            num_epochs=5,
            minibatch_size=minibatch,
            shuffle=True,
            num_total_minibatches=0,
        )
        sync()
        if i:
            per_step.append((time.perf_counter() - t0) / steps)
    ms = statistics.median(per_step) * 1e3
    steps_objects = list(learner._captured_steps.values()) if captured else []
    return {
        "cuda_graph": bool(steps_objects) and all(s.captured for s in steps_objects),
        "capture_errors": [s.capture_error for s in steps_objects if s.capture_error],
        "ms_per_step": round(ms, 3),
        "sgd_steps_per_update": steps,
        "agent_rows_per_s": round(5 * sum(rows.values()) / (ms * steps / 1e3)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-batch-size", type=int, default=24000, help="agent-steps")
    parser.add_argument("--minibatch-sizes", default="256,4096", help="agent rows, comma-separated")
    parser.add_argument("--hidden", default="128,128")
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--num-gpus-per-learner", type=float, default=0.0)
    args = parser.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False, num_gpus=torch.cuda.device_count())
    try:
        algo, learner, batch = sample_batch(
            args.train_batch_size,
            [int(h) for h in args.hidden.split(",")],
            args.num_gpus_per_learner,
        )
        results = {}
        # every capture before any eager step: on the H200 a capture that followed eager SGD
        # steps of the same learner failed (see bioflux/algorithms/captured_sgd_step.py)
        for mode in ("captured", "eager"):
            for minibatch in (int(m) for m in args.minibatch_sizes.split(",")):
                results[f"{mode}, minibatch {minibatch}"] = time_updates(
                    learner,
                    batch,
                    captured=mode == "captured",
                    minibatch=minibatch,
                    updates=args.updates,
                )
        algo.stop()
    finally:
        ray.shutdown()
    print(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "device": str(learner._device),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                },
                "rows_per_species": {m: len(b) for m, b in batch.policy_batches.items()},
                "hidden": args.hidden,
                "num_epochs": 5,
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
