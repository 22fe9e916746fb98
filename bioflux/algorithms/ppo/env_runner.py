"""An EnvRunner that returns ready-to-train PPO batches: advantages computed where sampled.

``BatchedCoreEnvRunner`` hands the learner one ``SingleAgentEpisode`` per agent trajectory,
and RLlib's learner connectors then process each one on its own (add a timestep, value
predictions, GAE, batching): thousands of Python objects per iteration. This runner keeps
the rollout columnar instead:

- each step runs each species' module once on all its acting agents for the action *and* the
  value estimate (the EnvRunner holds full modules, value head included);
- at the end of a fragment, ``gae.dense_gae`` computes advantages and value targets for every
  trajectory at once over the ``(T, worlds, agents)`` layout: a death (capture, starvation,
  extinction) is terminal with no bootstrap; the step limit and the fragment's end bootstrap
  from the value of the last observation; newborns and reset worlds start fresh trajectories;
- it returns flat per-species columns (observations, actions, log-probs, logits, advantages,
  value targets), so the learner only runs SGD (``algorithm.ColumnarPPO``).

Select it with ``resources.env_runner: columnar``.
"""

from __future__ import annotations

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

from bioflux.algorithms.ppo.gae import dense_gae
from bioflux.algorithms.shared.batched_env_runner import BatchedCoreEnvRunner, CoreStep
from bioflux.envs.config import N_ACTIONS, SPECIES


class ColumnarEnvRunner(BatchedCoreEnvRunner):
    """``sample_columnar(n)``: at least ``n`` agent-steps as per-species training columns."""

    def make_module(self) -> None:
        # Full modules (inference_only=False): the value head runs here, next to the policy.
        spec = self.config.get_multi_rl_module_spec(spaces=self.get_spaces(), inference_only=False)
        self.module = spec.build()

    def _act_and_value(self, obs: np.ndarray, is_pred: np.ndarray, explore: bool):
        n = len(obs)
        actions = np.zeros(n, dtype=np.int64)
        logp = np.zeros(n, dtype=np.float32)
        logits = np.zeros((n, N_ACTIONS), dtype=np.float32)
        values = np.zeros(n, dtype=np.float32)
        for mask, module, batch in self._species_batches(obs, is_pred):
            with torch.no_grad():
                out = (module.forward_exploration if explore else module.forward_inference)(batch)
                dist_inputs = out[Columns.ACTION_DIST_INPUTS]
                if hasattr(module, "compute_values"):
                    values[mask] = module.compute_values(batch).numpy()
            dist = torch.distributions.Categorical(logits=dist_inputs)
            act = dist.sample() if explore else dist_inputs.argmax(-1)
            actions[mask] = act.numpy()
            logp[mask] = dist.log_prob(act).numpy()
            logits[mask] = dist_inputs.numpy()
        return actions, logp, logits, values

    def _values(self, obs: np.ndarray, is_pred: np.ndarray) -> np.ndarray:
        values = np.zeros(len(obs), dtype=np.float32)
        for mask, module, batch in self._species_batches(obs, is_pred):
            if hasattr(module, "compute_values"):
                with torch.no_grad():
                    values[mask] = module.compute_values(batch).numpy()
        return values

    def sample_columnar(
        self, num_agent_steps: int, explore: bool = True
    ) -> dict[str, dict[str, np.ndarray]]:
        """Step all worlds until ``num_agent_steps`` agent-steps are sampled; returns
        ``{species: {column: array}}`` for the trained species (see the module docstring)."""
        w = self._world
        if self._cur is None:
            self._start()
        B, N = w.alive.shape
        gamma, lambda_ = float(self.config.gamma), float(self.config.lambda_)
        dense: dict[str, list[np.ndarray]] = {
            k: [] for k in ("active", "values", "rewards", "terminated", "continues", "bootstrap")
        }
        rows: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "logp", "logits")}
        is_pred_rows: list[np.ndarray] = []
        counts: list[dict[str, np.ndarray]] = []
        agent_steps = env_steps = 0

        def act(b, a, obs):
            actions, logp, logits, values = self._act_and_value(obs, w.is_predator[a], explore)
            return actions, (logp, logits, values)

        def record(st: CoreStep) -> None:
            logp, logits, values = st.extras
            b, a, res, ob, oa, dead = st.b, st.a, st.res, st.ob, st.oa, st.dead
            cut = dead & ~res.terminated[ob, oa]  # truncated: bootstrap from the final obs
            step = {k: np.zeros((B, N), dtype=bool) for k in ("active", "terminated", "continues")}
            step.update(
                {k: np.zeros((B, N), dtype=np.float32) for k in ("values", "rewards", "bootstrap")}
            )
            step["active"][b, a] = True
            step["values"][b, a] = values
            step["rewards"][b, a] = res.rewards[b, a]
            step["terminated"][b, a] = res.terminated[b, a]
            acted = res.acted[ob, oa]
            step["continues"][ob[acted & ~dead], oa[acted & ~dead]] = True
            if cut.any():
                nxt = st.nxt[cut]
                step["bootstrap"][ob[cut], oa[cut]] = self._values(nxt, w.is_predator[oa[cut]])
            for k, v in step.items():
                dense[k].append(v)
            rows["obs"].append(st.obs)
            rows["act"].append(st.actions)
            rows["logp"].append(logp)
            rows["logits"].append(logits)
            is_pred_rows.append(w.is_predator[a])
            counts.append({"uid": self._serial[b] * N + a, "rew": res.rewards[b, a]})

        while agent_steps < num_agent_steps:
            st = self._advance(act, record)
            agent_steps += st.agent_steps
            env_steps += st.env_steps
        # the fragment ends: trajectories still running bootstrap from their current obs
        b, a = self._acting()
        last = dense["continues"][-1]
        dense["bootstrap"][-1][b, a] = np.where(
            last[b, a], self._values(self._cur, w.is_predator[a]), dense["bootstrap"][-1][b, a]
        )
        dense["continues"][-1] = np.zeros_like(last)
        arrays = {k: np.stack(v) for k, v in dense.items()}
        advantages, targets = dense_gae(
            arrays["rewards"],
            arrays["values"],
            arrays["active"],
            arrays["terminated"],
            arrays["continues"],
            arrays["bootstrap"],
            gamma,
            lambda_,
        )
        active = arrays["active"]
        flat = {k: np.concatenate(v) for k, v in rows.items()}
        flat_adv, flat_targets, flat_values = (
            advantages[active],
            targets[active],
            arrays["values"][active],
        )
        is_pred_flat = np.concatenate(is_pred_rows)
        self._log_counts(env_steps, agent_steps, counts)
        self._fragment += 1
        trained = set(self.config.policies_to_train or SPECIES)
        out: dict[str, dict[str, np.ndarray]] = {}
        for species, mask in (("predator", is_pred_flat), ("prey", ~is_pred_flat)):
            if species not in trained or not mask.any():
                continue
            out[species] = {
                Columns.OBS: flat["obs"][mask],
                Columns.ACTIONS: flat["act"][mask],
                Columns.ACTION_LOGP: flat["logp"][mask],
                Columns.ACTION_DIST_INPUTS: flat["logits"][mask],
                Columns.VF_PREDS: flat_values[mask],
                Postprocessing.ADVANTAGES: flat_adv[mask],
                Postprocessing.VALUE_TARGETS: flat_targets[mask],
            }
        return out
