"""The replay of the ``multi_agent`` path: RLlib's episode replay, seeded (the ``transitions``
path replays from ``shared.RingReplayBuffer``s)."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.utils.replay_buffers import MultiAgentEpisodeReplayBuffer


class SeededMultiAgentEpisodeReplayBuffer(MultiAgentEpisodeReplayBuffer):
    """RLlib's multi-agent episode replay, drawing from a generator seeded with the run's seed.

    RLlib 2.60's episode buffers draw with ``np.random.default_rng(seed=None)``, so two runs of
    one config and seed replayed different transitions from their first update on."""

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rng = np.random.default_rng(seed)
