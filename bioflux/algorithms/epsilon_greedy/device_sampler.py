"""Epsilon-greedy's sampler on the learner's device (``resources.env_device`` with
``env_runner: transitions``): ``ColumnarDQN`` then has no EnvRunners. The learner's
Q-modules act (RLlib's own epsilon-greedy ``forward_exploration`` and schedule), each acting
agent's step becomes one transition row (``obs, actions, rewards, new_obs, terminateds,
truncateds``, ``n_step`` 1; ``new_obs`` is the final observation where the trajectory ended),
and the rows go to a ``DeviceRingReplay`` on the same device, which the learner samples
without a host round trip. See ``algorithms.shared.device_world``.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns

from bioflux.algorithms.shared.device_world import DeviceWorldSampler
from bioflux.envs.config import EnvConfig


class DeviceTransitionSampler(DeviceWorldSampler):
    """Epsilon-greedy: ``sample_transitions(steps, t)`` steps every world ``steps`` times
    with the learner's Q-modules and returns ``{species: {column: tensor}}`` on the device."""

    def __init__(self, env_config: EnvConfig, modules: Any, **kwargs: Any):
        super().__init__(env_config, modules, **kwargs)
        self._obs: torch.Tensor | None = None  # the current observations, carried over

    @torch.no_grad()
    def _q_actions(self, obs: torch.Tensor, t: int, explore: bool) -> torch.Tensor:
        B, N, D = obs.shape
        actions = torch.zeros((B, N), dtype=torch.int64, device=self.device)
        for species, sl in self._slots.items():
            module = self.modules[species]
            batch = {Columns.OBS: obs[:, sl].reshape(-1, D)}
            out = (
                module.forward_exploration(batch, t=t)
                if explore
                else (module.forward_inference(batch))
            )
            actions[:, sl] = out[Columns.ACTIONS].view(B, -1)
        return actions

    def sample_transitions(
        self, num_steps_per_world: int, t: int, explore: bool = True
    ) -> dict[str, dict[str, torch.Tensor]]:
        """``t``: the env step that drives the epsilon schedule at the first step (the
        algorithm's lifetime env steps); it advances by the worlds that step."""
        obs = self._observe() if self._obs is None else self._obs
        rows: dict[str, dict[str, list[torch.Tensor]]] = {s: {} for s in self.train_species}
        active, rewards = [], []
        env_steps = 0
        for _ in range(num_steps_per_world):
            actions = self._q_actions(obs, t + env_steps, explore)
            res, acting, was_done = self._step(actions)
            new_obs = self._observe()  # before any reset: final observations where one ended
            for species in self.train_species:
                sl = self._slots.get(species)
                if sl is None:
                    continue
                mask = acting[:, sl]
                for key, value in (
                    (Columns.OBS, obs[:, sl]),
                    (Columns.ACTIONS, actions[:, sl]),
                    (Columns.REWARDS, res.rewards[:, sl]),
                    (Columns.NEXT_OBS, new_obs[:, sl]),
                    (Columns.TERMINATEDS, res.terminated[:, sl]),
                    (Columns.TRUNCATEDS, res.truncated[:, sl]),
                ):
                    rows[species].setdefault(key, []).append(value[mask])
            active.append(acting)
            rewards.append(res.rewards)
            env_steps += int(acting.any(dim=1).sum())
            obs = self._observe() if self._finish(was_done) else new_obs
        self._obs = obs
        self._log_counts(torch.stack(active), torch.stack(rewards), env_steps)
        out = {}
        for species, cols in rows.items():
            if cols:
                flat = {k: torch.cat(v) for k, v in cols.items()}
                flat["n_step"] = torch.ones_like(flat[Columns.ACTIONS])
                out[species] = flat
        return out
