"""PPO's sampler on the learner's device: the torch world, the policy and GAE in one place.

``resources.env_device: cuda`` (or ``cpu``) replaces the EnvRunners of the columnar PPO path
by one ``DeviceRolloutSampler`` in the learner's process. Each iteration it

1. steps ``resources.num_envs_per_env_runner`` worlds of ``envs.torch_core.TorchWorld`` on
   the device, with every slot's observation cut there (``observe_all``);
2. runs each species' module from the **learner itself** (``learner.module[species]``: the
   same parameters, so no weights travel anywhere) for its logits and values, and samples
   actions there (Gumbel-max, the same distribution as ``Categorical.sample``);
3. computes advantages and value targets with ``dense_gae_torch``, the masks of
   ``columnar_env_runner`` (a death is terminal; the step limit and the fragment's end
   bootstrap from the value of the observation after the step; newborns and reset worlds
   start fresh trajectories);
4. hands the learner a ``MultiAgentBatch`` of device tensors (advantages standardised per
   module over real rows, as ``columnar_ppo.train_batch`` does), so ``learner.update`` runs
   SGD on it with no host round trip.

What RLlib does and does not do here: the ``PPO`` algorithm, its ``Learner`` (this project's
``PerModuleEpochsPPOTorchLearner``, with the CUDA-graph step), the RLModules, checkpoints and
metrics are RLlib's; the EnvRunners, their connectors and the weight sync are bypassed,
because they exist to move observations and weights between processes, which is the cost
this path removes. Episode metrics are logged under the same keys as the EnvRunners' (so
curves, stop criteria and ``metrics.jsonl`` read the same), from one device→host copy per
step of the few scalars that say which worlds finished.

A world whose episode ends idles for one step before it is reset: its values in that step
are the bootstrap of its truncated agents, so every step costs one policy forward.

``DeviceTransitionSampler`` does the same for epsilon-greedy (``ColumnarDQN`` with
``resources.env_device``): the learner's Q-modules act (RLlib's own epsilon-greedy
``forward_exploration`` and schedule), each acting agent's step becomes one transition row
(``obs, actions, rewards, new_obs, terminateds, truncateds``; ``new_obs`` is the final
observation where the trajectory ended), and the rows go to a ``DeviceRingReplay`` on the
same device, which the learner samples without a host round trip.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
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
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

from bioflux.envs.config import SPECIES, EnvConfig
from bioflux.envs.torch_core import TorchWorld, resolve_device


def dense_gae_torch(
    rewards: torch.Tensor,
    values: torch.Tensor,
    active: torch.Tensor,
    terminated: torch.Tensor,
    continues: torch.Tensor,
    bootstrap: torch.Tensor,
    gamma: float,
    lambda_: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``gae.dense_gae`` on torch tensors ``(T, B, N)`` (same masks, same arithmetic)."""
    next_values = torch.cat(
        [torch.where(continues[:-1], values[1:], bootstrap[:-1]), bootstrap[-1:]]
    )
    next_values = torch.where(terminated, 0.0, next_values)
    deltas = (rewards + gamma * next_values - values).double()
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[1:], dtype=torch.float64, device=rewards.device)
    for t in range(rewards.shape[0] - 1, -1, -1):
        carry = torch.where(continues[t] & ~terminated[t], running, 0.0)
        running = torch.where(active[t], deltas[t] + gamma * lambda_ * carry, 0.0)
        advantages[t] = running.float()
    targets = torch.where(active, advantages + values, 0.0)
    return advantages, targets


class _DeviceWorldSampler:
    """The torch world on the learner's device, the learner's modules, and the episode
    metrics (under the EnvRunners' keys); subclasses sample what their algorithm trains on."""

    def __init__(
        self,
        env_config: EnvConfig,
        modules: Any,
        *,
        num_worlds: int,
        device: torch.device | str,
        seed: int = 0,
        train_species: tuple[str, ...] = SPECIES,
        episodes_window: int = 100,
    ):
        self.world = TorchWorld(env_config, num_worlds=num_worlds, device=device, seed=seed)
        self.world.reset()
        self.device = self.world.device
        self.modules = modules
        self.train_species = tuple(s for s in SPECIES if s in train_species)
        self.metrics = MetricsLogger()
        self._window = max(1, episodes_window)
        self._gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        P, N = self.world.n_pred_slots, self.world.n_agents
        self._slots = {
            s: sl
            for s, sl in (("predator", slice(0, P)), ("prey", slice(P, N)))
            if sl.stop > sl.start
        }
        B = num_worlds
        self._returns = torch.zeros((B, N), dtype=torch.float32, device=self.device)
        self._captures = torch.zeros(B, dtype=torch.int64, device=self.device)
        self._first_capture = torch.full((B,), -1, dtype=torch.int64, device=self.device)

    def _observe(self) -> torch.Tensor:
        """Every slot's flattened observation ``(B, N, D)``."""
        B, N = self.world.alive.shape
        return self.world.observe_all().view(B, N, -1)

    def _step(self, actions: torch.Tensor):
        """One world step; returns ``(result, acting, was_done)`` and updates the episode
        statistics."""
        w = self.world
        was_done = w.done.clone()
        acting = w.alive & ~w.done[:, None]
        res = w.step(actions, check_actions=False)
        self._returns += res.rewards
        self._captures += res.captured
        self._first_capture = torch.where(
            (self._first_capture < 0) & (res.captured > 0), w.t.long(), self._first_capture
        )
        return res, acting, was_done

    def _finish(self, was_done: torch.Tensor) -> int:
        """Log and reset the worlds that were done before this step (they idled in it);
        returns how many (one device→host sync)."""
        idx = torch.nonzero(was_done).flatten()
        if not len(idx):
            return 0
        w, P = self.world, self.world.n_pred_slots
        used = w.used[idx]
        pred_used, prey_used = used[:, :P], used[:, P:]
        returns = self._returns[idx]
        stats = (
            torch.stack(
                [
                    w.t[idx].double(),
                    self._captures[idx].double(),
                    prey_used.sum(1).double(),
                    self._first_capture[idx].double(),
                    torch.where(pred_used, returns[:, :P], 0.0).sum(1).double(),
                    torch.where(prey_used, returns[:, P:], 0.0).sum(1).double(),
                ],
                dim=1,
            )
            .cpu()
            .numpy()
        )
        m, win = self.metrics, self._window
        for length, captures, prey_total, first, pred, prey in stats:
            m.log_value(NUM_EPISODES, 1, reduce="sum")
            m.log_value(NUM_EPISODES_LIFETIME, 1, reduce="lifetime_sum")
            m.log_dict(
                {
                    EPISODE_LEN_MEAN: length,
                    EPISODE_RETURN_MEAN: pred + prey,
                    EPISODE_MODULE_RETURN_MEAN: {"predator": pred, "prey": prey},
                },
                window=win,
            )
            m.log_value("capture_rate", captures / prey_total if prey_total else 0.0, window=win)
            m.log_value("captures", captures, window=win)
            if first >= 0:
                m.log_value("first_capture_step", first, window=win)
        w.reset(worlds=idx)
        self._returns[idx] = 0.0
        self._captures[idx] = 0
        self._first_capture[idx] = -1
        return len(idx)

    def _log_counts(self, active: torch.Tensor, rewards: torch.Tensor, env_steps: int) -> None:
        """Sample counts and reward sums of ``(T, B, N)`` acting masks and rewards."""
        m = self.metrics
        m.log_value(NUM_ENV_STEPS_SAMPLED, env_steps, reduce="sum")
        m.log_value(
            NUM_ENV_STEPS_SAMPLED_LIFETIME, env_steps, reduce="lifetime_sum", with_throughput=True
        )
        sums = (
            torch.stack(
                [active[:, :, sl].sum().double() for sl in self._slots.values()]
                + [rewards[:, :, sl].sum().double() for sl in self._slots.values()]
            )
            .cpu()
            .numpy()
        )
        k = len(self._slots)
        for i, species in enumerate(self._slots):
            n = int(sums[i])
            m.log_value((NUM_AGENT_STEPS_SAMPLED, species), n, reduce="sum")
            m.log_value((NUM_AGENT_STEPS_SAMPLED_LIFETIME, species), n, reduce="lifetime_sum")
            m.log_value((NUM_MODULE_STEPS_SAMPLED, species), n, reduce="sum")
            m.log_value((NUM_MODULE_STEPS_SAMPLED_LIFETIME, species), n, reduce="lifetime_sum")
            m.log_value(("step_rewards", species), float(sums[k + i]), reduce="sum")

    def get_metrics(self) -> dict[str, Any]:
        return self.metrics.reduce()


class DeviceRolloutSampler(_DeviceWorldSampler):
    """PPO: ``sample(n)`` returns at least ``n`` agent-steps as a learner-ready
    ``MultiAgentBatch`` (advantages and value targets computed on the device)."""

    def __init__(
        self, env_config: EnvConfig, modules: Any, *, gamma: float, lambda_: float, **kwargs: Any
    ):
        super().__init__(env_config, modules, **kwargs)
        self.gamma, self.lambda_ = gamma, lambda_
        #: keep the last fragment's dense arrays (no observations) in ``last_fragment``
        self.keep_fragment = False
        self.last_fragment: dict[str, torch.Tensor] = {}

    # --------------------------------------------------------------- the policy
    @torch.no_grad()
    def _forward(self, obs: torch.Tensor):
        """Logits ``(B, N, A)`` and values ``(B, N)`` of every slot (each species' module
        once on all its slots)."""
        B, N, D = obs.shape
        logits = values = None
        for species, sl in self._slots.items():
            module = self.modules[species]
            batch = {Columns.OBS: obs[:, sl].reshape(-1, D)}
            out = module.forward_exploration(batch)
            lg = out[Columns.ACTION_DIST_INPUTS].float()
            if logits is None:
                logits = obs.new_zeros((B, N, lg.shape[-1]))
                values = obs.new_zeros((B, N))
            logits[:, sl] = lg.view(B, -1, lg.shape[-1])
            if hasattr(module, "compute_values"):
                values[:, sl] = module.compute_values(batch).float().view(B, -1)
        return logits, values

    def _act(self, logits: torch.Tensor):
        u = torch.rand(logits.shape, generator=self._gen, device=self.device)
        actions = torch.argmax(logits - torch.log(-torch.log(u.clamp(min=1e-20))), dim=-1)
        logp = torch.log_softmax(logits, dim=-1).gather(-1, actions[..., None])[..., 0]
        return actions, logp

    # ----------------------------------------------------------------- sampling
    def sample(self, num_agent_steps: int) -> MultiAgentBatch:
        w = self.world
        B, N = w.alive.shape
        steps: dict[str, list[torch.Tensor]] = {
            k: []
            for k in (
                "obs",
                "actions",
                "logp",
                "logits",
                "values",
                "rewards",
                "active",
                "terminated",
                "continues",
                "bootstrap",
                "truncated",
            )
        }
        env_steps = 0
        sampled = 0
        pending_truncated = None
        while sampled < num_agent_steps:
            obs = self._observe()
            logits, values = self._forward(obs)
            if pending_truncated is not None:  # the final observation of the step before
                steps["bootstrap"][-1] = torch.where(pending_truncated, values, 0.0)
            actions, logp = self._act(logits)
            res, acting, was_done = self._step(actions)
            for k, v in (
                ("obs", obs),
                ("actions", actions),
                ("logp", logp),
                ("logits", logits),
                ("values", values),
                ("rewards", res.rewards),
                ("active", acting),
                ("terminated", res.terminated),
            ):
                steps[k].append(v)
            steps["continues"].append(acting & ~(res.terminated | res.truncated))
            steps["truncated"].append(res.truncated)
            steps["bootstrap"].append(torch.zeros_like(values))
            pending_truncated = res.truncated
            # the one sync per step: agent-steps, and worlds that stepped (RLlib's env steps)
            n, worlds = torch.stack([acting.sum(), acting.any(dim=1).sum()]).tolist()
            sampled += n
            env_steps += worlds
            self._finish(was_done)
        # the fragment ends: running and just-truncated trajectories bootstrap from now
        _, values = self._forward(self._observe())
        last = steps["continues"][-1] | pending_truncated
        steps["bootstrap"][-1] = torch.where(last, values, 0.0)
        steps["continues"][-1] = torch.zeros_like(last)
        dense = {k: torch.stack(v) for k, v in steps.items()}
        if self.keep_fragment:
            self.last_fragment = {k: v for k, v in dense.items() if k != "obs"}
            self.last_fragment["final_values"] = values
        adv, targets = dense_gae_torch(
            dense["rewards"],
            dense["values"],
            dense["active"],
            dense["terminated"],
            dense["continues"],
            dense["bootstrap"],
            self.gamma,
            self.lambda_,
        )
        self._log_counts(dense["active"], dense["rewards"], env_steps)
        batches = {}
        for species in self.train_species:
            sl = self._slots.get(species)
            if sl is None:
                continue
            mask = dense["active"][:, :, sl]
            if not bool(mask.any()):
                continue
            a = adv[:, :, sl][mask]
            batches[species] = SampleBatch(
                {
                    Columns.OBS: dense["obs"][:, :, sl][mask],
                    Columns.ACTIONS: dense["actions"][:, :, sl][mask],
                    Columns.ACTION_LOGP: dense["logp"][:, :, sl][mask],
                    Columns.ACTION_DIST_INPUTS: dense["logits"][:, :, sl][mask],
                    Columns.VF_PREDS: dense["values"][:, :, sl][mask],
                    Postprocessing.ADVANTAGES: (a - a.mean())
                    / torch.clamp(a.std(unbiased=False), min=1e-4),
                    Postprocessing.VALUE_TARGETS: targets[:, :, sl][mask],
                }
            )
        env = max((len(b) for b in batches.values()), default=0)
        return MultiAgentBatch(batches, env_steps=env)


class DeviceTransitionSampler(_DeviceWorldSampler):
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


class DeviceRingReplay:
    """``ring_replay.RingReplayBuffer`` with torch tensors on a device: ``add`` writes rows at
    the cursor (the oldest are overwritten once full), ``sample`` draws rows uniformly with
    replacement from a seeded generator on that device."""

    def __init__(self, capacity: int, device: torch.device, seed: int = 0):
        self.capacity = capacity
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.data: dict[str, torch.Tensor] = {}
        self.size = 0
        self.cursor = 0

    def __len__(self) -> int:
        return self.size

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        n = len(next(iter(batch.values())))
        if n == 0:
            return
        if not self.data:
            self.data = {
                k: torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype, device=self.device)
                for k, v in batch.items()
            }
        if n > self.capacity:  # only the newest rows fit
            batch = {k: v[-self.capacity :] for k, v in batch.items()}
            n = self.capacity
        idx = (self.cursor + torch.arange(n, device=self.device)) % self.capacity
        for k, v in batch.items():
            self.data[k][idx] = v
        self.cursor = (self.cursor + n) % self.capacity
        self.size = min(self.capacity, self.size + n)

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(
            0, self.size, (batch_size,), generator=self.generator, device=self.device
        )
        return {k: v[idx] for k, v in self.data.items()}


def check_env_device(r: Any) -> None:
    """``resources.env_device`` needs the columnar path with one local learner on that device
    (``r``: the experiment's ``resources`` section); raises a one-line ``ValueError``."""
    if r.env_runner != "columnar" or r.num_learners > 0 or r.num_env_runners > 0:
        raise ValueError(
            f"resources.env_device={r.env_device!r} needs env_runner: columnar, num_learners: 0 "
            "and num_env_runners: 0 (the worlds step in the learner's process)"
        )
    resolve_device(r.env_device)
    on_gpu = r.num_gpus_per_learner > 0
    if on_gpu != (r.env_device == "cuda"):
        raise ValueError(
            f"resources.env_device={r.env_device!r} must be where the learner is: "
            f"num_gpus_per_learner={r.num_gpus_per_learner} puts it on "
            f"{'cuda' if on_gpu else 'cpu'}"
        )


def sampler_rng_seed(seed: int | None) -> int:
    """The device sampler's seed for an experiment seed (distinct from the EnvRunners')."""
    return int(np.uint32((seed or 0) * 7919 + 17))
