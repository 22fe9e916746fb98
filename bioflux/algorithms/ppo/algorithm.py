"""PPO's algorithm classes: the config whose minibatches count agent rows, and PPO whose
learner only does SGD (batches arrive with their advantages computed).

``AgentRowMinibatchPPOConfig`` (every PPO path): ``minibatch_size`` counts agent rows even when
batches count env steps.

``ColumnarPPO.training_step``: every EnvRunner (``ColumnarEnvRunner``) returns per-species
columns with advantages and value targets → one ``MultiAgentBatch`` (advantages standardised
per module, as RLlib's GAE connector does) → ``LearnerGroup.update(batch=...)``, which skips
the per-episode learner-connector pipeline → the full weights (value heads included, which the
EnvRunners now use) go back to the EnvRunners. The SGD itself (``PerModuleEpochsPPOTorchLearner``,
``num_epochs`` per species, ``minibatch_size``) is the same as on the episode paths.

``training.sample_ahead: true`` overlaps the two halves: as soon as a batch is collected the
EnvRunners start sampling the next one with the weights they hold, while the learner trains on
this one; the new weights reach each EnvRunner after that sample. An iteration takes
max(sampling, learning) instead of their sum, but **this is not synchronous PPO**: every batch
is one update old when it is trained on. The ratio uses the log-probs of the policy that
sampled it (the behaviour policy), which is a valid importance ratio, but the clip region
``1 ± clip_param`` is then centred on the policy one update back, not on the policy the update
starts from; and the values, the GAE bootstraps and so the advantages and value targets come
from the value function one update old. Expect results close to, not equal to, synchronous
PPO's at the same config.

**What is equivalent to RLlib's PPO** (the tests in ``tests/algorithms/test_loss_power.py``,
``test_columnar_runner_gae.py`` and ``test_columnar_ppo.py``):

- per SGD step, yes: the loss, its gradients and the logged statistics equal RLlib's
  ``PPOTorchLearner.compute_loss_for_module`` on the same minibatch, and the EnvRunner's
  advantages and value targets equal RLlib's ``compute_value_targets`` on the same
  trajectories;
- the epoch schedule differs on purpose: every species' module makes exactly ``num_epochs``
  passes over its own rows (``ppo_learner``), where RLlib's iterator runs until every module
  has done ``num_epochs`` and so trains the smaller module for more;
- advantages are standardised per module over real rows only: RLlib's GAE connector
  standardises over every row of the episode batch, including the one artificial timestep per
  trajectory that its loss mask then drops; the columnar batch has no such rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.core import ALL_MODULES
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_MODULE_STEPS_TRAINED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

from bioflux.envs.config import SPECIES

_AHEAD = "sample_ahead"


class AgentRowMinibatchPPOConfig(PPOConfig):
    """PPO config for multi-agent batches counted in env steps (``count_steps_by="env_steps"``).

    RLlib's Learner slices each module's batch into ``minibatch_size`` *agent rows*, but PPO's
    validator compares ``minibatch_size`` with the train batch in the counting unit; with env
    steps (one env step = up to N agent rows) that check would force minibatches N times
    smaller than the experiment asks for, and the stock MultiAgentEnvRunner path would do
    N times more, smaller SGD steps than the batched path with the same config.
    """

    def validate(self) -> None:
        if self.count_steps_by != "env_steps":
            return super().validate()
        minibatch_size, self.minibatch_size = self.minibatch_size, None
        try:
            super().validate()
        finally:
            self.minibatch_size = minibatch_size


def train_batch(parts: list[dict[str, dict[str, np.ndarray]]]) -> MultiAgentBatch:
    """Concatenate the EnvRunners' columns per module; standardise advantages per module
    (``(a − mean) / max(1e-4, std)``, RLlib's formula, over the real rows: the columns hold no
    padding or artificial bootstrap rows)."""
    per_module: dict[str, list[dict[str, np.ndarray]]] = {}
    for part in parts:
        for module_id, columns in part.items():
            per_module.setdefault(module_id, []).append(columns)
    batches = {}
    for module_id, chunks in per_module.items():
        columns = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
        adv = columns[Postprocessing.ADVANTAGES]
        columns[Postprocessing.ADVANTAGES] = ((adv - adv.mean()) / max(1e-4, adv.std())).astype(
            np.float32
        )
        batches[module_id] = SampleBatch(columns)
    env_steps = max((len(b) for b in batches.values()), default=0)
    return MultiAgentBatch(batches, env_steps=env_steps)


def shared_minibatch_count(
    batch: MultiAgentBatch, num_learners: int, num_epochs: int, minibatch_size: int
) -> int:
    """The SGD steps every one of ``num_learners`` DDP learners runs on ``batch``.

    ``LearnerGroup.update(batch=...)`` gives each learner ``ceil(rows / num_learners)`` rows
    of every module (the last learner fewer); a learner left to count its own minibatches
    could run one step fewer than the others and leave them waiting in an all-reduce. This
    count is ``num_epochs × ceil(largest shard / minibatch_size)``, the plan of the learner
    with the largest shard, passed to all (``ppo_learner.minibatch_plan``)."""
    largest = max(
        (math.ceil(len(b) / num_learners) for b in batch.policy_batches.values()), default=0
    )
    return num_epochs * max(1, math.ceil(largest / minibatch_size))


class ColumnarPPO(PPO):
    @classmethod
    def get_default_config(cls) -> ColumnarPPOConfig:
        return ColumnarPPOConfig()

    def training_step(self) -> None:
        cfg = self.config
        if cfg.env_device:
            return self._device_training_step()
        runners = self.env_runner_group
        remote = runners.num_remote_env_runners()
        per_runner = math.ceil(cfg.total_train_batch_size / max(1, remote))

        def sample(runner):
            return runner.sample_columnar(per_runner), runner.get_metrics()

        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            if cfg.sample_ahead and remote:
                if not getattr(self, "_sampling_ahead", False):
                    runners.foreach_env_runner_async(sample, tag=_AHEAD)
                sampled = [
                    r for _, r in runners.fetch_ready_async_reqs(tags=_AHEAD, timeout_seconds=None)
                ]
                self._sampling_ahead = runners.foreach_env_runner_async(sample, tag=_AHEAD) > 0
            else:
                sampled = runners.foreach_env_runner(sample, local_env_runner=remote == 0)
            self.metrics.aggregate([m for _, m in sampled], key=ENV_RUNNER_RESULTS)
        batch = train_batch([b for b, _ in sampled])
        if not batch.policy_batches:
            return
        shared = {}
        if cfg.num_learners > 1:  # DDP: every learner runs the same number of steps
            shared["num_total_minibatches"] = shared_minibatch_count(
                batch, cfg.num_learners, cfg.num_epochs, cfg.minibatch_size
            )
        learner_results = self._update(batch, **shared)
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            modules = set(learner_results[0].keys()) - {ALL_MODULES}
            runners.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                policies=modules,
                inference_only=False,  # the EnvRunners compute values too
            )

    def _device_training_step(self) -> None:
        """``resources.env_device``: sample on the learner's device (``device_sampler``)."""
        from bioflux.algorithms.ppo.device_sampler import DeviceRolloutSampler
        from bioflux.algorithms.shared.device_world import sampler_rng_seed
        from bioflux.envs.config import EnvConfig

        cfg, learner = self.config, self.learner_group._learner
        if getattr(self, "_device_sampler", None) is None:
            self._device_sampler = DeviceRolloutSampler(
                EnvConfig.from_kwargs(dict(cfg.env_config)).require_agent_identity("training"),
                learner.module,
                num_worlds=cfg.num_envs_per_env_runner,
                device=learner._device,
                gamma=float(cfg.gamma),
                lambda_=float(cfg.lambda_),
                seed=sampler_rng_seed(cfg.seed),
                train_species=tuple(cfg.policies_to_train or SPECIES),
                episodes_window=cfg.metrics_num_episodes_for_smoothing,
            )
        sampler = self._device_sampler
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            batch = sampler.sample(cfg.total_train_batch_size)
            self.metrics.aggregate([sampler.get_metrics()], key=ENV_RUNNER_RESULTS)
        if not batch.policy_batches:
            return
        self._update(batch)  # the sampler acts with the learner's own modules: no sync

    def _update(self, batch: MultiAgentBatch, **shared: Any) -> list[dict[str, Any]]:
        """One learner update on ``batch`` (``num_epochs`` × minibatches), logged."""
        cfg = self.config
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            learner_results = self.learner_group.update(
                batch=batch,
                timesteps={
                    NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                        (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)
                    ),
                    NUM_MODULE_STEPS_TRAINED_LIFETIME: self.metrics.peek(
                        (LEARNER_RESULTS, ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME),
                        default=0,
                    ),
                },
                num_epochs=cfg.num_epochs,
                minibatch_size=cfg.minibatch_size,
                shuffle_batch_per_epoch=cfg.shuffle_batch_per_epoch,
                **shared,
            )
            self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        return learner_results


class ColumnarPPOConfig(AgentRowMinibatchPPOConfig):
    def __init__(self, algo_class: Any = None):
        super().__init__(algo_class=algo_class or ColumnarPPO)
        self.sample_ahead = False  # see the module docstring
        self.env_device: str | None = None  # resources.env_device (device_sampler)
