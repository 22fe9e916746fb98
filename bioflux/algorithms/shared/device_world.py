"""Sampling on the learner's device: the torch world beside the learner, for every algorithm
that samples there (``resources.env_device``).

``DeviceWorldSampler`` holds what every device sampler shares: ``TorchWorld`` worlds on the
learner's device, the learner's own modules (the same parameters: no weights travel), the
one world step, and the episode metrics, logged under the EnvRunners' keys so curves, stop
criteria and ``metrics.jsonl`` read the same. PPO's ``ppo.device_sampler`` and
epsilon-greedy's ``epsilon_greedy.device_sampler`` build on it; ``DeviceRingReplay`` is the
replay of flat transitions on a device.

What RLlib does and does not do there: the algorithm, its ``Learner``, the RLModules,
checkpoints and metrics are RLlib's; the EnvRunners, their connectors and the weight sync
are bypassed, because they exist to move observations and weights between processes, which
is the cost this path removes.

A world whose episode ends idles for one step before it is reset: its observations in that
step are the final ones (PPO bootstraps truncated agents from them; epsilon-greedy stores them
as ``new_obs``), so every step costs one policy forward.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
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


class DeviceWorldSampler:
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


def check_env_device(r: Any, samplers: tuple[str, ...]) -> None:
    """``resources.env_device`` needs one of ``samplers`` (the algorithm's flat sampler) and
    one local learner on that device (``r``: the experiment's ``resources`` section); raises
    a one-line ``ValueError``."""
    if r.env_runner not in samplers or r.num_learners > 0 or r.num_env_runners > 0:
        raise ValueError(
            f"resources.env_device={r.env_device!r} needs env_runner: {samplers[0]}, "
            "num_learners: 0 and num_env_runners: 0 (the worlds step in the learner's process)"
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
