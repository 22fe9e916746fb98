"""Joint-transition replay: every agent of a world at one step, stored together.

RLlib's ``MultiAgentEpisodeReplayBuffer`` returns per-module rows with no link between agents
of the same step; a centralised critic needs the joint transition, so MADDPG keeps its own
ring buffer of ``(s, o_1..N, a_1..N, r_1..N, alive, terminated, s', o'_1..N, alive')``.
Observations and states are stored as float16 (counts and flags are exact in it).
"""

from __future__ import annotations

import numpy as np

from bioflux.algorithms.shared.ring_replay import RingReplayBuffer

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


class JointReplayBuffer(RingReplayBuffer):
    def __init__(self, capacity: int, seed: int = 0):
        super().__init__(capacity, FIELDS, seed)
