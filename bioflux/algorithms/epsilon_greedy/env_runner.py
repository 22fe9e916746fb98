"""An EnvRunner that returns flat per-species transitions for replay-based Q-learning.

RLlib's DQN samples with ``MultiAgentEnvRunner`` (per-agent connector and episode
bookkeeping at every step) and replays ``MultiAgentEpisode`` objects, so most of an
epsilon-greedy trial's time goes to per-agent Python, not to the Q-network. This runner steps
``num_envs_per_env_runner`` worlds of a ``BatchedWorld`` together, runs each species' Q-network
once per step on all its acting agents (epsilon-greedy, with RLlib's own
``forward_exploration`` and epsilon schedule) and returns, per species, one row per agent-step:

- ``obs``, ``actions``, ``rewards``, ``new_obs`` (the agent's next observation; for an agent
  whose trajectory just ended, its final observation);
- ``terminateds``: a capture, starvation or extinction (no bootstrap in the Q-target);
- ``truncateds``: the step limit (the Q-target bootstraps from ``new_obs``).

Newborns (ecology mode) act from the step after their birth; a world whose episode ended is
reset and its agents start afresh. These are the transitions RLlib's episode replay gives its
DQN learner with ``n_step: 1``.

With ``n_step: n > 1`` each row folds the agent's next ``n`` steps (``fold_n_steps``):
``rewards`` is the discounted sum ``r_t + γ r_{t+1} + … + γ^{m-1} r_{t+m-1}``, ``new_obs`` and
the end flags are those of step ``t+m-1``, and ``n_step`` holds ``m``: ``n``, or fewer where
the agent's trajectory ends (a death or the step limit) first, as in RLlib's episode replay,
or the fragment ends first (where RLlib's replay would reach into the next fragment). The loss
then bootstraps with ``γ^m``.

Select it with ``resources.env_runner: transitions`` (or ``columnar``, its old name) in an
epsilon-greedy config.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

from bioflux.algorithms.shared.batched_env_runner import BatchedCoreEnvRunner, CoreStep
from bioflux.envs.config import SPECIES

#: the transition columns and their dtypes (``shared.ring_replay.RingReplayBuffer`` fields)
TRANSITION_FIELDS = {
    Columns.OBS: np.float32,
    Columns.ACTIONS: np.int64,
    Columns.REWARDS: np.float32,
    Columns.NEXT_OBS: np.float32,
    Columns.TERMINATEDS: np.bool_,
    Columns.TRUNCATEDS: np.bool_,
    "n_step": np.int64,  # the steps folded into the row (RLlib's DQN loss reads this column)
}


def fold_n_steps(steps: list[dict[str, np.ndarray]], n: int, gamma: float, shape: tuple):
    """Fold each row of a fragment with the agent's next ``n - 1`` steps (module docstring).

    ``steps``: per env step, the acting agents' ``b, a`` (world, slot) and their one-step
    ``rewards``, ``new_obs``, ``terminateds``, ``truncateds``; ``shape``: the worlds' ``(B, N)``.
    Returns those columns plus ``n_step``, concatenated in step order."""
    keys = (Columns.REWARDS, Columns.NEXT_OBS, Columns.TERMINATEDS, Columns.TRUNCATEDS)
    if n == 1:  # nothing to fold (the default): no index maps, no copies on the hot path
        out1 = {k: np.concatenate([st[k] for st in steps]) for k in keys}
        return {**out1, "n_step": np.ones(len(out1[Columns.REWARDS]), dtype=np.int64)}
    row_of = []  # per step: each (world, slot) -> its row in that step, -1 if it did not act
    for st in steps:
        index = np.full(shape, -1, dtype=np.int64)
        index[st["b"], st["a"]] = np.arange(len(st["a"]))
        row_of.append(index)
    out: dict[str, list[np.ndarray]] = {k: [] for k in (*keys, "n_step")}
    for t, st in enumerate(steps):
        b, a = st["b"], st["a"]
        folded = {k: st[k].copy() for k in keys}
        m = np.ones(len(a), dtype=np.int64)
        going = ~(st[Columns.TERMINATEDS] | st[Columns.TRUNCATEDS])
        for k in range(1, min(n, len(steps) - t)):
            if not going.any():
                break
            later = steps[t + k]
            j = row_of[t + k][b[going], a[going]]  # a continuing agent acts at t+k
            folded[Columns.REWARDS][going] += gamma**k * later[Columns.REWARDS][j]
            for key in keys[1:]:
                folded[key][going] = later[key][j]
            m[going] += 1
            going[going] = ~(later[Columns.TERMINATEDS][j] | later[Columns.TRUNCATEDS][j])
        for key in keys:
            out[key].append(folded[key])
        out["n_step"].append(m)
    return {k: np.concatenate(v) for k, v in out.items()}


class TransitionEnvRunner(BatchedCoreEnvRunner):
    """``sample_transitions()``: one fragment of every world as per-species transitions."""

    def __init__(self, config, **kwargs):
        super().__init__(config=config, **kwargs)
        self._env_steps_since_sync = 0

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if NUM_ENV_STEPS_SAMPLED_LIFETIME in state:
            self._env_steps_since_sync = 0

    def _epsilon_step(self, env_steps_in_sample: int) -> int:
        """The global env step that drives the epsilon schedule: the algorithm's lifetime count
        (pushed to every EnvRunner after each iteration and on restore, as for RLlib's own
        runners, so a resumed run continues its schedule) plus this runner's steps since then,
        times the number of runners."""
        runners = self.config.num_env_runners or 1
        since = self._env_steps_since_sync + env_steps_in_sample
        return int(self.num_env_steps_sampled_lifetime) + since * runners

    def _q_actions(self, obs: np.ndarray, is_pred: np.ndarray, explore: bool, t: int):
        actions = np.zeros(len(obs), dtype=np.int64)
        for mask, module, batch in self._species_batches(obs, is_pred):
            with torch.no_grad():
                if explore:
                    out = module.forward_exploration(batch, t=t)
                else:
                    out = module.forward_inference(batch)
            actions[mask] = out[Columns.ACTIONS].numpy()
        return actions

    def sample_transitions(
        self, num_steps_per_world: int | None = None, explore: bool = True
    ) -> dict[str, dict[str, np.ndarray]]:
        """Step every world ``num_steps_per_world`` times (default: the rollout fragment
        length); returns ``{species: {column: array}}`` for the trained species."""
        w = self._world
        if self._cur is None:
            self._start()
        N = w.n_agents
        steps = num_steps_per_world or self.config.get_rollout_fragment_length(self.worker_index)
        rows: dict[str, list[np.ndarray]] = {k: [] for k in (Columns.OBS, Columns.ACTIONS)}
        one_step: list[dict[str, np.ndarray]] = []
        is_pred_rows: list[np.ndarray] = []
        counts: list[dict[str, np.ndarray]] = []
        agent_steps = env_steps = 0

        def act(b, a, obs):
            t = self._epsilon_step(env_steps)
            return self._q_actions(obs, w.is_predator[a], explore, t), None

        def record(step: CoreStep) -> None:
            b, a, res = step.b, step.a, step.res
            rows[Columns.OBS].append(step.obs)
            rows[Columns.ACTIONS].append(step.actions)
            one_step.append(
                {
                    "b": b,
                    "a": a,
                    Columns.REWARDS: res.rewards[b, a],
                    Columns.NEXT_OBS: step.next_obs_of_actors(),
                    Columns.TERMINATEDS: res.terminated[b, a],
                    Columns.TRUNCATEDS: res.truncated[b, a],
                }
            )
            is_pred_rows.append(w.is_predator[a])
            counts.append({"uid": self._serial[b] * N + a, "rew": res.rewards[b, a]})

        for _ in range(steps):
            step = self._advance(act, record)
            agent_steps += step.agent_steps
            env_steps += step.env_steps
        self._env_steps_since_sync += env_steps
        self._log_counts(env_steps, agent_steps, counts)
        self._fragment += 1
        flat = {k: np.concatenate(v) for k, v in rows.items()}
        flat.update(
            fold_n_steps(one_step, int(self.config.n_step), float(self.config.gamma), w.alive.shape)
        )
        is_pred_flat = np.concatenate(is_pred_rows)
        trained = set(self.config.policies_to_train or SPECIES)
        return {
            species: {k: v[mask] for k, v in flat.items()}
            for species, mask in (("predator", is_pred_flat), ("prey", ~is_pred_flat))
            if species in trained
        }
