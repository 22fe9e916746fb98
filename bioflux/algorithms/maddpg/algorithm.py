"""MADDPG-style centralised-critic training as an RLlib ``Algorithm`` (new API stack).

``training_step``: the EnvRunners (``JointTransitionEnvRunner``) step the batched core with the
current actors and return joint transitions → the joint replay buffer → once
``learning_starts`` transitions are stored, ``updates_per_iteration`` replayed batches, sent to
the Learner in one call (``MADDPGTorchLearner.update_joint``: a gradient step each) → the
actors' weights go back to the EnvRunners.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, LEARNER_RESULTS

from bioflux.algorithms.maddpg.params import MODEL_KEYS, Params
from bioflux.algorithms.maddpg.replay import JointReplayBuffer
from bioflux.envs.config import SPECIES

#: MADDPG's own ``AlgorithmConfig`` attributes and their defaults, taken from ``Params``
#: (``gamma`` and ``grad_clip`` are RLlib's own and set through ``AlgorithmConfig.training``).
MADDPG_DEFAULTS: dict[str, Any] = {
    key: field.default
    for key, field in Params.model_fields.items()
    if key not in MODEL_KEYS | {"gamma", "grad_clip"}
}


class MADDPGConfig(AlgorithmConfig):
    def __init__(self, algo_class: type | None = None):
        super().__init__(algo_class=algo_class or MADDPG)
        for key, value in MADDPG_DEFAULTS.items():
            setattr(self, key, value)
        self.gamma = Params.model_fields["gamma"].default
        self.grad_clip = Params.model_fields["grad_clip"].default

    def training(self, **kwargs: Any) -> MADDPGConfig:
        own = {k: kwargs.pop(k) for k in list(kwargs) if k in MADDPG_DEFAULTS}
        super().training(**kwargs)
        for key, value in own.items():
            if value is not NotProvided:
                setattr(self, key, value)
        return self

    def get_default_rl_module_spec(self):
        from ray.rllib.core.rl_module.rl_module import RLModuleSpec

        from bioflux.algorithms.maddpg.modules import GumbelActorModule

        return RLModuleSpec(module_class=GumbelActorModule)

    def get_default_learner_class(self):
        from bioflux.algorithms.maddpg.learner import MADDPGTorchLearner

        return MADDPGTorchLearner


class MADDPG(Algorithm):
    @classmethod
    def get_default_config(cls) -> MADDPGConfig:
        return MADDPGConfig()

    def setup(self, config: Any) -> None:
        super().setup(config)
        self.replay = JointReplayBuffer(self.config.replay_capacity, seed=self.config.seed or 0)

    def training_step(self) -> None:
        cfg = self.config
        runners = self.env_runner_group
        local = runners.num_remote_env_runners() == 0
        per_runner = max(1, cfg.env_steps_per_iteration // max(1, runners.num_remote_env_runners()))
        sampled = runners.foreach_env_runner(
            lambda r: (r.sample_joint(per_runner), r.get_metrics()), local_env_runner=local
        )
        for batch, _ in sampled:
            self.replay.add(batch)
        self.metrics.aggregate([m for _, m in sampled], key=ENV_RUNNER_RESULTS)
        if len(self.replay) < cfg.learning_starts:
            return
        learner = self.learner_group
        batches = [self.replay.sample(cfg.batch_size) for _ in range(cfg.updates_per_iteration)]
        results = learner.foreach_learner(lambda lrn, bs=batches: lrn.update_joint(bs))
        for module_id, values in next(iter(results)).get().items():
            for value in values:
                self.metrics.log_value((LEARNER_RESULTS, module_id, "loss"), value, window=50)
        runners.sync_weights(
            from_worker_or_learner_group=learner, policies=list(SPECIES), inference_only=True
        )
