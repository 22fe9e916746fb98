"""Joint-transition replay: every agent of a world at one step, stored together, compactly.

RLlib's ``MultiAgentEpisodeReplayBuffer`` returns per-module rows with no link between agents
of the same step; a centralised critic needs the joint transition, so MADDPG keeps its own
ring buffer. It stores the world, not the views: the walls (packed bits), every slot's
position, energy and alive flag before and after the step, the actions, rewards and
terminal flags. The learner re-encodes the observations ``o_1..N``, ``o'_1..N`` and the
global states ``s``, ``s'`` on its own device (``envs.torch_core.ViewEncoder``).

On the reference world (100×100, 120 slots) a transition is ~3.5 KB instead of ~352 KB of
float16 views, so the default capacity of 50,000 holds ~0.2 GB instead of ~17.6 GB.
"""

from __future__ import annotations

import numpy as np

from bioflux.algorithms.shared.ring_replay import RingReplayBuffer

FIELDS = {
    "walls": np.uint8,  # numpy.packbits of the row-major (H, W) wall grid
    "pos": np.int16,  # (N, 2)
    "energy": np.float32,
    "actions": np.int8,
    "rewards": np.float32,
    "alive": np.bool_,  # acted in this step (alive at its start)
    "terminated": np.bool_,
    "next_pos": np.int16,
    "next_energy": np.float32,
    "next_alive": np.bool_,
    "next_seen": np.bool_,  # observed after the step: the actors and the newborns
}
#: the compact fields the learner turns into views (``MADDPGTorchLearner._on_device``)
COMPACT_FIELDS = ("walls", "pos", "energy", "next_pos", "next_energy", "next_seen")


class JointReplayBuffer(RingReplayBuffer):
    def __init__(self, capacity: int, seed: int = 0):
        super().__init__(capacity, FIELDS, seed)
