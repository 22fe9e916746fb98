"""Environment throughput: agent-steps per second through the PettingZoo API and the batched core.

Run: ``python benchmarks/env_throughput.py [--seconds 5] [--worlds 16]``. Prints one JSON object.
Random actions, one process, the default configuration (100×100, 20 predators, 100 prey).
An agent-step is one live agent stepping once (observation, reward and flags included).
Targets on a 2-core machine: >= 600k/s through PettingZoo, >= 2.5M/s for the batched core (B=16).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from bioflux.envs import BatchedWorld, EnvConfig, predator_prey_v0


def pettingzoo_rate(seconds: float, seed: int = 0) -> float:
    env = predator_prey_v0.parallel_env()
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        if not env.agents:
            env.reset()
        agents = env.agents
        actions = dict(zip(agents, rng.integers(0, 5, len(agents)).tolist()))
        env.step(actions)
        steps += len(agents)
    return steps / (time.perf_counter() - start)


def core_rate(seconds: float, worlds: int, seed: int = 0) -> float:
    world = BatchedWorld(EnvConfig(), num_worlds=worlds, seed=seed)
    world.reset()
    rng = np.random.default_rng(seed)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        if world.done.any():
            world.reset(worlds=np.flatnonzero(world.done))
        acting = world.alive.copy()
        world.step(rng.integers(0, 5, acting.shape))
        b, a = np.nonzero(world.alive & ~world.done[:, None])
        world.observe(b, a)
        steps += int(acting.sum())
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--worlds", type=int, default=16)
    args = parser.parse_args()
    result = {
        "config": "default (100x100, 20 predators, 100 prey)",
        "pettingzoo_agent_steps_per_s": round(pettingzoo_rate(args.seconds)),
        "batched_core_agent_steps_per_s": round(core_rate(args.seconds, args.worlds)),
        "batched_core_worlds": args.worlds,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    result["agent_steps_per_s"] = {
        "pettingzoo": result["pettingzoo_agent_steps_per_s"],
        "batched_core": result["batched_core_agent_steps_per_s"],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
