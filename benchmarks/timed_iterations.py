"""Whole training iterations, timed: the one timing loop of the throughput benchmarks.

Per iteration: its wall time, the wall time of its ``LearnerGroup.update`` calls (each ends with
a read-back of the learner's metrics, so a GPU learner's work is inside it), and the agent- and
env-steps it sampled. RLlib's own timers are not used: they are exponential moving averages
(coefficient 0.01), so after a few iterations they still mostly hold the first one's cost.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Iteration:
    result: dict[str, Any]
    wall_s: float
    learning_s: float  # in LearnerGroup.update
    agent_steps: float  # rows sampled, all modules
    env_steps: float

    @property
    def other_s(self) -> float:
        """Sampling, weight sync and metrics (with ``sample_ahead``: waiting for the batch)."""
        return self.wall_s - self.learning_s


def timed_iterations(algo: Any, iterations: int) -> list[Iteration]:
    """Train ``iterations`` + 1 iterations; return all but the first (actor start, first weight
    sync, a CUDA graph's capture, learning starts)."""
    update, update_s = algo.learner_group.update, []

    def timed_update(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return update(*args, **kwargs)
        finally:
            update_s.append(time.perf_counter() - t0)

    algo.learner_group.update = timed_update
    timed = []
    for _ in range(iterations + 1):
        update_s.clear()
        t0 = time.perf_counter()
        result = algo.train()
        wall = time.perf_counter() - t0
        er = result["env_runners"]
        # agent-steps = rows sampled per module (RLlib's per-agent counts can be NaN on the
        # stock runner once agents leave mid-episode)
        agents = math.fsum(v for v in (er.get("num_module_steps_sampled") or {}).values() if v == v)
        timed.append(
            Iteration(result, wall, math.fsum(update_s), agents, er["num_env_steps_sampled"])
        )
    return timed[1:]
