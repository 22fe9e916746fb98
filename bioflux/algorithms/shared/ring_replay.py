"""A uniform replay buffer of flat transitions: one preallocated numpy array per field.

RLlib's episode replay buffers store ``SingleAgentEpisode`` objects and rebuild a batch from
them at every sample: per-transition Python work. The columnar samplers (MADDPG's joint
transitions, epsilon-greedy's per-species transitions) already hand over flat arrays, so their
replay is a ring of arrays: ``add`` writes rows at the cursor (overwriting the oldest once
full), ``sample`` draws rows uniformly with replacement from a generator seeded by the run.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class RingReplayBuffer:
    """``fields`` maps each column to its storage dtype; the row shape comes from the first
    ``add``."""

    def __init__(self, capacity: int, fields: Mapping[str, type], seed: int = 0):
        self.capacity = capacity
        self.fields = dict(fields)
        self.rng = np.random.default_rng(seed)
        self.data: dict[str, np.ndarray] = {}
        self.size = 0
        self.cursor = 0

    def __len__(self) -> int:
        return self.size

    def add(self, batch: Mapping[str, np.ndarray]) -> None:
        n = len(next(iter(batch.values())))
        if n == 0:
            return
        if not self.data:
            self.data = {
                k: np.zeros((self.capacity, *np.shape(batch[k])[1:]), dtype=dt)
                for k, dt in self.fields.items()
            }
        idx = (self.cursor + np.arange(n)) % self.capacity
        for k in self.fields:
            self.data[k][idx] = batch[k]
        self.cursor = int((self.cursor + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        idx = self.rng.integers(0, self.size, batch_size)
        return {k: v[idx] for k, v in self.data.items()}
