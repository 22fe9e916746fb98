"""EnvRunner that samples joint transitions from the batched core for MADDPG."""

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
    """``sample_joint(n)`` steps all worlds ``n`` times with the actors and returns dense
    ``(transitions, ...)`` arrays, one transition per live world and step (see ``replay``)."""

    def _dense(self, b: np.ndarray, a: np.ndarray, rows: np.ndarray) -> np.ndarray:
        w = self._world
        out = np.zeros((*w.alive.shape, rows.shape[1]), dtype=np.float16)
        out[b, a] = rows
        return out

    def _states(self, worlds: np.ndarray) -> np.ndarray:
        """Flattened global states of ``worlds`` (the critic's ``s``)."""
        return self._world.states(worlds).reshape(len(worlds), -1).astype(np.float16)

    def sample_joint(self, num_env_steps: int, explore: bool = True) -> dict[str, np.ndarray]:
        w = self._world
        if self._cur is None:
            self._start()
        out: dict[str, list] = {
            k: []
            for k in (
                "state",
                "obs",
                "actions",
                "rewards",
                "alive",
                "terminated",
                "next_state",
                "next_obs",
                "next_alive",
            )
        }
        env_steps = agent_steps = 0
        pred_steps = 0

        def act(b, a, obs):
            live = np.unique(b)  # the worlds that step: one joint transition each
            actions, _, _ = self._policy(obs, w.is_predator[a], explore, False)
            return actions, (live, self._states(live), self._dense(b, a, obs)[live])

        def record(step: CoreStep) -> None:
            live, state, joint_obs = step.extras
            out["state"].append(state)
            out["obs"].append(joint_obs)
            out["actions"].append(self._actions[live].astype(np.int8))
            out["rewards"].append(step.res.rewards[live])
            out["alive"].append(step.res.acted[live])
            out["terminated"].append(step.res.terminated[live])
            out["next_state"].append(self._states(live))
            out["next_obs"].append(self._dense(step.ob, step.oa, step.nxt)[live])
            out["next_alive"].append(w.alive[live].copy())

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
