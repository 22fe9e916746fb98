"""An EnvRunner that samples from the batched numpy core instead of one env per agent-dict.

Why: RLlib's ``MultiAgentEnvRunner`` does Python work per agent and step (episode bookkeeping,
connector pipelines); at the default 120 agents that caps sampling at a few thousand
agent-steps/s whatever the env costs. This runner steps ``num_envs_per_env_runner`` worlds of a
``BatchedWorld`` together, runs each species' module once per step on all its agents' stacked
observations, stores the rollout as flat arrays and only at the end cuts it into one
``SingleAgentEpisode`` per agent trajectory (tagged with ``agent_id``/``module_id``, so RLlib's
multi-agent learner connectors route each to its species' module).

Per-agent learning semantics are kept: every agent's trajectory holds its own observations,
actions, log-probs and rewards; a capture or starvation terminates that agent's trajectory
(``terminated=True``, no bootstrap); the step limit truncates it (bootstrapped); a trajectory
still running at the end of a rollout fragment continues in the next one and is bootstrapped
from its latest observation. Newborns (ecology mode) start their own trajectories.

Select it with ``resources.env_runner: batched`` in an experiment config.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.env.utils.infinite_lookback_buffer import InfiniteLookbackBuffer
from ray.rllib.utils.metrics import (
    EPISODE_LEN_MEAN,
    EPISODE_MODULE_RETURN_MEAN,
    EPISODE_RETURN_MEAN,
    NUM_AGENT_STEPS_SAMPLED,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_EPISODES,
    NUM_EPISODES_LIFETIME,
    NUM_MODULE_STEPS_SAMPLED,
    NUM_MODULE_STEPS_SAMPLED_LIFETIME,
)

from bioflux.envs.config import N_ACTIONS, SPECIES, EnvConfig
from bioflux.envs.core import BatchedWorld, StepResult
from bioflux.rollout import EpisodeStats


@dataclass
class CoreStep:
    """One step of every running world, as ``BatchedCoreEnvRunner._advance`` hands it over.

    ``b, a``: the acting agents (world, slot), row-major; ``obs``: their observations;
    ``actions``: what they did, with ``extras`` (whatever the sampler's ``act`` returned with
    them); ``res``: the core's result; ``ob, oa, nxt``: everyone observed after the step
    (the actors, with final observations for those whose trajectory ended, and newborns),
    row-major; ``dead``: whose trajectory ended, over ``ob, oa``."""

    b: np.ndarray
    a: np.ndarray
    obs: np.ndarray
    actions: np.ndarray
    extras: Any
    res: StepResult
    ob: np.ndarray
    oa: np.ndarray
    nxt: np.ndarray
    dead: np.ndarray

    @property
    def env_steps(self) -> int:
        """Worlds that stepped (one env step each, as RLlib counts a multi-agent env)."""
        return int(self.res.acted.any(axis=1).sum())

    @property
    def agent_steps(self) -> int:
        return len(self.a)

    def next_obs_of_actors(self) -> np.ndarray:
        """Each actor's observation after the step (its final one if its trajectory ended)."""
        N = self.res.acted.shape[1]
        return self.nxt[np.searchsorted(self.ob * N + self.oa, self.b * N + self.a)]


class BatchedCoreEnvRunner(MultiAgentEnvRunner):
    """``MultiAgentEnvRunner`` whose ``_sample`` drives a ``BatchedWorld`` (see module doc)."""

    def __init__(self, config, **kwargs):
        super().__init__(config=config, **kwargs)
        seed = (config.seed or 0) * 10_007 + 101 * (self.worker_index or 0)
        self._world_seed = seed
        self._world = BatchedWorld(
            EnvConfig.from_kwargs(dict(config.env_config)).require_agent_identity("training"),
            num_worlds=config.num_envs_per_env_runner,
            seed=seed,
        )
        self._cur: np.ndarray | None = None  # current observations of the acting agents
        self._serial = np.zeros(self._world.num_worlds, dtype=np.int64)
        self._next_serial = 0
        self._fragment = 0

    # ----------------------------------------------------------------- rollout
    def _reset_worlds(self, worlds: np.ndarray) -> None:
        w = self._world
        w.reset(worlds=worlds)
        n = len(worlds)
        self._serial[worlds] = np.arange(self._next_serial, self._next_serial + n)
        self._next_serial += n
        self._stats.reset(worlds)
        self._started[worlds] = time.perf_counter()

    def _acting(self) -> tuple[np.ndarray, np.ndarray]:
        w = self._world
        return np.nonzero(w.alive & ~w.done[:, None])

    def _start(self) -> None:
        w = self._world
        self._stats = EpisodeStats(w)
        self._captured_since_log = 0
        self._started = np.zeros(w.num_worlds)
        self._reset_worlds(np.arange(w.num_worlds))
        b, a = self._acting()
        self._cur = w.observe(b, a).reshape(len(a), -1)
        self._actions = np.zeros(w.alive.shape, dtype=np.int64)

    def _advance(
        self,
        act: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, Any]],
        record: Callable[[CoreStep], None],
    ) -> CoreStep:
        """Step every running world once: the one rollout step of every sampler here.

        ``act(b, a, obs)`` returns the acting agents' actions and any extras; ``record(step)``
        runs after the step and before the worlds whose episode ended are reset (the world
        still shows their last state, and ``self._serial`` still names their episodes). Then
        the survivors' and newborns' observations become ``self._cur``, and ended worlds
        restart."""
        w = self._world
        b, a = self._acting()
        obs = self._cur
        actions, extras = act(b, a, obs)
        self._actions[:] = 0
        self._actions[b, a] = actions
        res = w.step(self._actions)
        self._track(res)
        step = CoreStep(b, a, obs, actions, extras, res, *self._observe_after(res))
        record(step)
        self._cur = step.nxt[~step.dead]
        self._restart_finished(res)
        return step

    def _species_batches(self, obs: np.ndarray, is_pred: np.ndarray):
        """For each species with acting agents: ``(its rows' mask, its module, a module batch
        of those rows' observations)``."""
        for species, mask in (("predator", is_pred), ("prey", ~is_pred)):
            if mask.any():
                yield mask, self.module[species], {Columns.OBS: torch.from_numpy(obs[mask])}

    def _policy(self, obs: np.ndarray, is_pred: np.ndarray, explore: bool, random_actions: bool):
        actions = np.zeros(len(obs), dtype=np.int64)
        logp = np.zeros(len(obs), dtype=np.float32)
        logits = np.zeros((len(obs), N_ACTIONS), dtype=np.float32)
        for mask, module, batch in self._species_batches(obs, is_pred):
            if random_actions:
                out = torch.zeros((int(mask.sum()), N_ACTIONS))
            else:
                with torch.no_grad():
                    fwd = (module.forward_exploration if explore else module.forward_inference)(
                        batch
                    )
                out = fwd[Columns.ACTION_DIST_INPUTS]
            dist = torch.distributions.Categorical(logits=out)
            act = dist.sample() if explore or random_actions else out.argmax(-1)
            actions[mask] = act.numpy()
            logp[mask] = dist.log_prob(act).numpy()
            logits[mask] = out.numpy()
        return actions, logp, logits

    def _observe_after(self, res):
        """Observe everyone who acted (the final observations of those whose trajectory just
        ended) and the newborns: ``(worlds, slots, flat observations, ended)``."""
        ob, oa = np.nonzero(res.acted | (res.born & ~res.done[:, None]))
        nxt = self._world.observe(ob, oa).reshape(len(oa), -1)
        return ob, oa, nxt, (res.terminated | res.truncated)[ob, oa]

    def _track(self, res) -> None:
        """Episode statistics of the running worlds (returns, captures, first capture)."""
        self._stats.update(res)
        self._captured_since_log += int(res.captured.sum())

    def _restart_finished(self, res) -> int:
        """Log and reset the worlds whose episode ended; splice their new agents' first
        observations into ``self._cur``. Returns how many episodes ended."""
        w = self._world
        finished = np.flatnonzero(res.done)
        if len(finished):
            self._log_finished(finished)
            self._reset_worlds(finished)
            b, a = self._acting()
            keep = ~np.isin(b, finished)
            cur = np.empty((len(a), self._cur.shape[1]), dtype=np.float32)
            cur[keep] = self._cur
            cur[~keep] = w.observe(b[~keep], a[~keep]).reshape(int((~keep).sum()), -1)
            self._cur = cur
        return len(finished)

    def _sample(
        self,
        *,
        num_timesteps=None,
        num_episodes=None,
        explore=True,
        random_actions=False,
        force_reset=False,
    ):
        w = self._world
        N = w.n_agents
        if self._cur is None or force_reset or num_episodes is not None:
            self._start()
        steps: list[dict[str, np.ndarray]] = []
        final_uid, final_obs = [], []
        agent_steps = env_steps = episodes_done = 0

        def act(b, a, obs):
            actions, logp, logits = self._policy(obs, w.is_predator[a], explore, random_actions)
            return actions, (logp, logits)

        def record(step: CoreStep) -> None:
            logp, logits = step.extras
            b, a, res = step.b, step.a, step.res
            steps.append(
                {
                    "uid": self._serial[b] * N + a,
                    "obs": step.obs,
                    "act": step.actions,
                    "logp": logp,
                    "logits": logits,
                    "rew": res.rewards[b, a],
                    "term": res.terminated[b, a],
                    "trunc": res.truncated[b, a],
                }
            )
            final_uid.append(self._serial[step.ob[step.dead]] * N + step.oa[step.dead])
            final_obs.append(step.nxt[step.dead])

        while True:
            if num_timesteps is not None and agent_steps >= num_timesteps:
                break
            if num_episodes is not None and episodes_done >= num_episodes:
                break
            step = self._advance(act, record)
            agent_steps += step.agent_steps
            env_steps += step.env_steps
            episodes_done += int(step.res.done.sum())
        # trajectories still running: bootstrap from their current observation
        b, a = self._acting()
        final_uid.append(self._serial[b] * N + a)
        final_obs.append(self._cur)
        self._log_counts(env_steps, agent_steps, steps)
        self._fragment += 1
        return self._episodes(steps, np.concatenate(final_uid), np.concatenate(final_obs))

    def _episodes(self, steps, final_uid, final_obs) -> list[SingleAgentEpisode]:
        if not steps:
            return []
        N = self._world.n_agents
        cols = {k: np.concatenate([s[k] for s in steps]) for k in steps[0]}
        order = np.argsort(cols["uid"], kind="stable")  # groups by agent, time-ordered
        cols = {k: v[order] for k, v in cols.items()}
        uids, starts = np.unique(cols["uid"], return_index=True)
        ends = np.append(starts[1:], len(order))
        f_order = np.argsort(final_uid)
        f_pos = f_order[np.searchsorted(final_uid, uids, sorter=f_order)]
        names = self._agent_names
        P = self._world.n_pred_slots
        episodes = []
        trained = set(self.config.policies_to_train or SPECIES)
        for uid, s, e, fp in zip(uids.tolist(), starts.tolist(), ends.tolist(), f_pos.tolist()):
            slot = uid % N
            agent = names[slot]
            species = SPECIES[0] if slot < P else SPECIES[1]
            if species not in trained:
                continue  # fixed (non-learned) modules need no training data
            obs = np.concatenate([cols["obs"][s:e], final_obs[fp][None]])
            episodes.append(
                SingleAgentEpisode(
                    id_=f"{uid}-{self.worker_index}-{self._fragment}",
                    agent_id=agent,
                    module_id=species,
                    multi_agent_episode_id=f"{uid // N}-{self.worker_index}",
                    observations=InfiniteLookbackBuffer(obs),
                    actions=InfiniteLookbackBuffer(cols["act"][s:e]),
                    rewards=InfiniteLookbackBuffer(cols["rew"][s:e].astype(np.float32)),
                    extra_model_outputs={
                        Columns.ACTION_LOGP: InfiniteLookbackBuffer(cols["logp"][s:e]),
                        Columns.ACTION_DIST_INPUTS: InfiniteLookbackBuffer(cols["logits"][s:e]),
                    },
                    terminated=bool(cols["term"][e - 1]),
                    truncated=bool(cols["trunc"][e - 1]),
                    len_lookback_buffer=0,
                    observation_space=self.module[species].observation_space,
                    action_space=self.module[species].action_space,
                )
            )
        return episodes

    @functools.cached_property
    def _agent_names(self) -> list[str]:
        c = self._world.config
        return [f"predator_{i}" for i in range(c.max_predators)] + [
            f"prey_{i}" for i in range(c.max_prey)
        ]

    # ----------------------------------------------------------------- metrics
    def _log_counts(self, env_steps: int, agent_steps: int, steps: list) -> None:
        m = self.metrics
        m.log_value(NUM_ENV_STEPS_SAMPLED, env_steps, reduce="sum")
        m.log_value(
            NUM_ENV_STEPS_SAMPLED_LIFETIME, env_steps, reduce="lifetime_sum", with_throughput=True
        )
        N, P = self._world.n_agents, self._world.n_pred_slots
        n_pred = reward_pred = reward_prey = 0.0
        for step in steps:
            is_pred = step["uid"] % N < P
            n_pred += int(is_pred.sum())
            reward_pred += float(step["rew"][is_pred].sum())
            reward_prey += float(step["rew"][~is_pred].sum())
        for species, n in (("predator", int(n_pred)), ("prey", agent_steps - int(n_pred))):
            m.log_value((NUM_AGENT_STEPS_SAMPLED, species), n, reduce="sum")
            m.log_value((NUM_AGENT_STEPS_SAMPLED_LIFETIME, species), n, reduce="lifetime_sum")
            m.log_value((NUM_MODULE_STEPS_SAMPLED, species), n, reduce="sum")
            m.log_value((NUM_MODULE_STEPS_SAMPLED_LIFETIME, species), n, reduce="lifetime_sum")
        # Dense per-step signals: defined in every iteration, even when no episode ends in it.
        m.log_value(("step_rewards", "predator"), reward_pred, reduce="sum")
        m.log_value(("step_rewards", "prey"), reward_prey, reduce="sum")
        m.log_value("captures_sampled", self._captured_since_log, reduce="sum")
        self._captured_since_log = 0

    def _log_finished(self, worlds: np.ndarray) -> None:
        m = self.metrics
        win = max(
            1,
            self.config.metrics_num_episodes_for_smoothing
            // max(1, self.config.num_env_runners or 1),
        )
        for b in worlds.tolist():
            record = self._stats.record(b)
            pred, prey = (record.total_return(species) for species in SPECIES)
            m.log_value(NUM_EPISODES, 1, reduce="sum")
            m.log_value(NUM_EPISODES_LIFETIME, 1, reduce="lifetime_sum")
            m.log_dict(
                {
                    EPISODE_LEN_MEAN: record.length,
                    EPISODE_RETURN_MEAN: pred + prey,
                    EPISODE_MODULE_RETURN_MEAN: {"predator": pred, "prey": prey},
                },
                window=win,
            )
            m.log_value("capture_rate", record.capture_rate, window=win)
            m.log_value("captures", record.captures, window=win)
            if record.first_capture_step is not None:
                m.log_value("first_capture_step", record.first_capture_step, window=win)

    def get_metrics(self) -> dict[str, Any]:
        return self.metrics.reduce()
