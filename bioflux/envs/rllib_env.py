"""RLlib adapter: ``predator_prey_v0`` as an RLlib ``MultiAgentEnv``.

Differences from RLlib's stock ``ParallelPettingZooEnv`` (why this adapter exists):
- ``__all__`` comes from "no agents left", so an episode whose last step mixes terminated
  (caught) and truncated (time limit) agents still ends; the stock wrapper computes
  ``all(values)`` per flag and leaves such episodes dangling.
- Observations are flattened to ``Box(S*S*4,)`` (same values, ``(row, col, channel)`` order), so
  RLlib's default MLP encoder applies without a connector (``core.flatten_observation``).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv
from ray.tune.registry import register_env

from bioflux.envs.core import flatten_observation
from bioflux.envs.predator_prey import PredatorPreyEnv

#: Name under which the env is registered with Ray Tune/RLlib.
RLLIB_ENV_NAME = "bioflux_predator_prey_v0"


def species_of(agent_id: str, *args: Any, **kwargs: Any) -> str:
    """Policy mapping: ``predator_7`` → ``predator`` (one shared module per species)."""
    return agent_id.rsplit("_", 1)[0]


class PredatorPreyRLlibEnv(MultiAgentEnv):
    """``predator_prey_v0`` for RLlib: flattened observations and a correct ``__all__``."""

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__()
        self.env = PredatorPreyEnv(**dict(config or {}))
        self.possible_agents = list(self.env.possible_agents)
        self.agents = []
        box = self.env.observation_space(self.possible_agents[0])
        flat = gymnasium.spaces.Box(
            flatten_observation(box.low), flatten_observation(box.high), dtype=np.float32
        )
        self.observation_spaces = dict.fromkeys(self.possible_agents, flat)
        self.action_spaces = dict.fromkeys(
            self.possible_agents, self.env.action_space(self.possible_agents[0])
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, infos = self.env.reset(seed=seed, options=options)
        self.agents = self.env.agents
        return {a: flatten_observation(o) for a, o in obs.items()}, infos

    def step(self, action_dict: dict[str, int]):
        obs, rewards, terminated, truncated, infos = self.env.step(action_dict)
        self.agents = self.env.agents
        over = not self.agents
        timed_out = over and any(truncated.values())
        terminated["__all__"] = over and not timed_out
        truncated["__all__"] = timed_out
        return (
            {a: flatten_observation(o) for a, o in obs.items()},
            rewards,
            terminated,
            truncated,
            infos,
        )

    def render(self):
        return self.env.render()


def register() -> str:
    """Register the env with Ray (needed in every process that builds or restores an algo)."""
    register_env(RLLIB_ENV_NAME, PredatorPreyRLlibEnv)
    return RLLIB_ENV_NAME
