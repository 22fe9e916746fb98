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
this one; the new weights reach each EnvRunner after that sample. Every batch is then one
update old when it is trained on (PPO's ratio uses the log-probs of the policy that sampled
it, so the clipped objective stays the right one); an iteration takes max(sampling, learning)
instead of their sum.
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
    """Concatenate the EnvRunners' columns per module; standardise advantages per module."""
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


class ColumnarPPO(PPO):
    @classmethod
    def get_default_config(cls) -> ColumnarPPOConfig:
        return ColumnarPPOConfig()

    def training_step(self) -> None:
        cfg = self.config
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
            )
            self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            modules = set(learner_results[0].keys()) - {ALL_MODULES}
            runners.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                policies=modules,
                inference_only=False,  # the EnvRunners compute values too
            )


class ColumnarPPOConfig(AgentRowMinibatchPPOConfig):
    def __init__(self, algo_class: Any = None):
        super().__init__(algo_class=algo_class or ColumnarPPO)
        self.sample_ahead = False  # see the module docstring
