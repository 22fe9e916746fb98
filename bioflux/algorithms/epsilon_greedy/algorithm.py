"""DQN whose samples never become episode objects: flat transitions in, SGD out.

``ColumnarDQN.training_step`` keeps RLlib DQN's schedule and learner, and replaces its data
path:

- sampling: every EnvRunner (``TransitionEnvRunner``) steps its worlds one rollout fragment
  and returns per-species transition columns, ``store_weight`` times per training step;
- replay: one ``RingReplayBuffer`` per species (uniform, seeded by the run's seed) instead
  of RLlib's ``MultiAgentEpisodeReplayBuffer``;
- learning: ``sample_and_train_weight`` times, ``train_batch_size`` rows per species →
  ``LearnerGroup.update(batch=...)`` (the learner-connector pipeline is skipped: the columns
  are already what RLlib's DQN loss reads, n-step returns folded on the EnvRunners, with unit
  importance weights);
  RLlib's DQN learner does the double-Q loss and the target-network updates;
- the new weights go to the EnvRunners.

The two weights come from RLlib's own ``calculate_rr_weights`` (``training_intensity``), and
learning starts after ``num_steps_sampled_before_learning_starts`` env steps, as in RLlib's
DQN. Replay is uniform on this path.

With ``resources.env_device`` the EnvRunners are replaced by a ``DeviceTransitionSampler`` in
the learner's process (the torch world and the learner's Q-modules on its device) and the
replay by ``DeviceRingReplay`` on that device: the same schedule, no weight sync, no host
round trip (``device_sampler``, ``shared.device_world``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.dqn import DQN, DQNConfig
from ray.rllib.algorithms.dqn.dqn import calculate_rr_weights
from ray.rllib.core import ALL_MODULES
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    REPLAY_BUFFER_SAMPLE_TIMER,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TD_ERROR_KEY,
    TIMERS,
)

from bioflux.algorithms.epsilon_greedy.env_runner import TRANSITION_FIELDS
from bioflux.algorithms.shared.ring_replay import RingReplayBuffer
from bioflux.envs.config import SPECIES


class ColumnarDQN(DQN):
    @classmethod
    def get_default_config(cls) -> ColumnarDQNConfig:
        return ColumnarDQNConfig()

    def setup(self, config: Any) -> None:
        super().setup(config)
        capacity = int(self.config.replay_buffer_config["capacity"])
        seed = self.config.seed or 0
        self._device_sampler = None
        if self.config.env_device:
            from bioflux.algorithms.shared.device_world import DeviceRingReplay

            device = self.learner_group._learner._device
            self.replay = {
                species: DeviceRingReplay(capacity, device, seed=seed * len(SPECIES) + i)
                for i, species in enumerate(SPECIES)
            }
            return
        self.replay = {
            species: RingReplayBuffer(capacity, TRANSITION_FIELDS, seed=seed * len(SPECIES) + i)
            for i, species in enumerate(SPECIES)
        }

    def _replayed_batch(self) -> MultiAgentBatch:
        n = self.config.total_train_batch_size
        batches = {}
        for species, buffer in self.replay.items():
            if len(buffer):
                columns = buffer.sample(n)
                columns["weights"] = (
                    torch.ones(n, device=buffer.device)
                    if self.config.env_device
                    else np.ones(n, dtype=np.float32)
                )
                batches[species] = SampleBatch(columns)
        return MultiAgentBatch(batches, env_steps=n)

    def _sample_on_device(self) -> list:
        """One fragment of the device sampler's worlds (see the module docstring)."""
        from bioflux.algorithms.epsilon_greedy.device_sampler import DeviceTransitionSampler
        from bioflux.algorithms.shared.device_world import sampler_rng_seed
        from bioflux.envs.config import EnvConfig

        cfg, learner = self.config, self.learner_group._learner
        if self._device_sampler is None:
            self._device_sampler = DeviceTransitionSampler(
                EnvConfig.from_kwargs(dict(cfg.env_config)).require_agent_identity("training"),
                learner.module,
                num_worlds=cfg.num_envs_per_env_runner,
                device=learner._device,
                seed=sampler_rng_seed(cfg.seed),
                train_species=tuple(cfg.policies_to_train or SPECIES),
                episodes_window=cfg.metrics_num_episodes_for_smoothing,
            )
        sampler = self._device_sampler
        t = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        part = sampler.sample_transitions(cfg.get_rollout_fragment_length(), int(t))
        return [(part, sampler.get_metrics())]

    def training_step(self) -> None:
        cfg = self.config
        runners = self.env_runner_group
        remote = runners.num_remote_env_runners()
        store_weight, train_weight = calculate_rr_weights(cfg)
        for _ in range(store_weight):
            with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
                if cfg.env_device:
                    sampled = self._sample_on_device()
                else:
                    sampled = runners.foreach_env_runner(
                        lambda r: (r.sample_transitions(), r.get_metrics()),
                        local_env_runner=remote == 0,
                    )
            self.metrics.aggregate([m for _, m in sampled], key=ENV_RUNNER_RESULTS)
            for part, _ in sampled:
                for species, columns in part.items():
                    self.replay[species].add(columns)

        env_steps = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME))
        agent_steps = self.metrics.peek(
            (ENV_RUNNER_RESULTS, NUM_AGENT_STEPS_SAMPLED_LIFETIME), default={}
        )
        current = sum(agent_steps.values()) if cfg.count_steps_by == "agent_steps" else env_steps
        if current < cfg.num_steps_sampled_before_learning_starts:
            return
        for _ in range(train_weight):
            with self.metrics.log_time((TIMERS, REPLAY_BUFFER_SAMPLE_TIMER)):
                batch = self._replayed_batch()
            with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
                results = self.learner_group.update(
                    batch=batch,
                    timesteps={
                        NUM_ENV_STEPS_SAMPLED_LIFETIME: env_steps,
                        NUM_AGENT_STEPS_SAMPLED_LIFETIME: agent_steps,
                    },
                )
            for result in results:  # uniform replay: no priorities to update
                for module_results in result.values():
                    module_results.pop(TD_ERROR_KEY, None)
            self.metrics.aggregate(results, key=LEARNER_RESULTS)
        if cfg.env_device:  # the sampler acts with the learner's own modules
            return
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            runners.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                policies=[m for m in results[0] if m != ALL_MODULES],
                inference_only=True,
            )


class ColumnarDQNConfig(DQNConfig):
    def __init__(self, algo_class: Any = None):
        super().__init__(algo_class=algo_class or ColumnarDQN)
        self.env_device: str | None = None  # resources.env_device (device_sampler)
