"""EnvRunner that samples joint transitions from the batched core for MADDPG, as compact
world states (``replay``): the learner re-encodes the views on its device."""

from __future__ import annotations

import numpy as np
from ray.rllib.utils.metrics import (
    NUM_AGENT_STEPS_SAMPLED,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
)

from bioflux.algorithms.shared.batched_env_runner import BatchedCoreEnvRunner, CoreStep


class JointTransitionEnvRunner(BatchedCoreEnvRunner):
    """``sample_joint(n)`` steps all worlds ``n`` times with the actors and returns
    ``(transitions, ...)`` arrays, one transition per live world and step (see ``replay``)."""

    def _compact(self, worlds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (int16) and energies of every slot of ``worlds``, as they are now."""
        w = self._world
        return w.pos[worlds].astype(np.int16), w.energy[worlds].copy()

    def sample_joint(self, num_env_steps: int, explore: bool = True) -> dict[str, np.ndarray]:
        w = self._world
        if self._cur is None:
            self._start()
        out: dict[str, list] = {
            k: []
            for k in (
                "walls",
                "pos",
                "energy",
                "actions",
                "rewards",
                "alive",
                "terminated",
                "next_pos",
                "next_energy",
                "next_alive",
                "next_seen",
            )
        }
        env_steps = agent_steps = 0
        pred_steps = 0

        def act(b, a, obs):
            live = np.unique(b)  # the worlds that step: one joint transition each
            actions, _, _ = self._policy(obs, w.is_predator[a], explore, False)
            walls = np.packbits(w.walls[live].reshape(len(live), -1), axis=1)
            return actions, (live, walls, *self._compact(live))

        def record(step: CoreStep) -> None:
            live, walls, pos, energy = step.extras
            next_pos, next_energy = self._compact(live)
            out["walls"].append(walls)  # an episode's walls: the same before and after
            out["pos"].append(pos)
            out["energy"].append(energy)
            out["actions"].append(self._actions[live].astype(np.int8))
            out["rewards"].append(step.res.rewards[live])
            out["alive"].append(step.res.acted[live])
            out["terminated"].append(step.res.terminated[live])
            out["next_pos"].append(next_pos)
            out["next_energy"].append(next_energy)
            out["next_alive"].append(w.alive[live].copy())
            seen = np.zeros_like(w.alive)
            seen[step.ob, step.oa] = True  # the runner observes them after the step
            out["next_seen"].append(seen[live])

        while env_steps < num_env_steps:
            step = self._advance(act, record)
            env_steps += step.env_steps
            agent_steps += step.agent_steps
            pred_steps += int(w.is_predator[step.a].sum())
        m = self.metrics
        m.log_value(NUM_ENV_STEPS_SAMPLED, env_steps, reduce="sum")
        m.log_value(
            NUM_ENV_STEPS_SAMPLED_LIFETIME, env_steps, reduce="lifetime_sum", with_throughput=True
        )
        for species, n in (("predator", pred_steps), ("prey", agent_steps - pred_steps)):
            m.log_value((NUM_AGENT_STEPS_SAMPLED, species), n, reduce="sum")
            m.log_value((NUM_AGENT_STEPS_SAMPLED_LIFETIME, species), n, reduce="lifetime_sum")
        return {k: np.concatenate(v) for k, v in out.items()}
