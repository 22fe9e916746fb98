"""Joint-transition replay: every agent of a world at one step, stored together.

RLlib's ``MultiAgentEpisodeReplayBuffer`` returns per-module rows with no link between agents
of the same step; a centralised critic needs the joint transition, so MADDPG keeps its own
ring buffer of ``(s, o_1..N, a_1..N, r_1..N, alive, terminated, s', o'_1..N, alive')``.
Observations and states are stored as float16 (counts and flags are exact in it).
"""

from __future__ import annotations

import numpy as np

FIELDS = {
    "state": np.float16,
    "obs": np.float16,
    "actions": np.int8,
    "rewards": np.float32,
    "alive": np.bool_,
    "terminated": np.bool_,
    "next_state": np.float16,
    "next_obs": np.float16,
    "next_alive": np.bool_,
}


class JointReplayBuffer:
    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self.data: dict[str, np.ndarray] = {}
        self.size = 0
        self.cursor = 0

    def __len__(self) -> int:
        return self.size

    def add(self, batch: dict[str, np.ndarray]) -> None:
        n = len(batch["actions"])
        if n == 0:
            return
        if not self.data:
            self.data = {
                k: np.zeros((self.capacity, *batch[k].shape[1:]), dtype=dt)
                for k, dt in FIELDS.items()
            }
        idx = (self.cursor + np.arange(n)) % self.capacity
        for k in FIELDS:
            self.data[k][idx] = batch[k]
        self.cursor = int((self.cursor + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        idx = self.rng.integers(0, self.size, batch_size)
        return {k: v[idx] for k, v in self.data.items()}
