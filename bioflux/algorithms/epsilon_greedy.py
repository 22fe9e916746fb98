"""Epsilon-greedy: a Q-network per species trained with RLlib's DQN (double-Q, target network),
acting epsilon-greedily while sampling and greedily otherwise.

Run: ``bioflux train --config configs/epsilon_greedy.yaml`` (the demo world; its predators
capture ~0.57 of random prey after 50k env steps, ~20 s on 2 cores).

Two sampling paths (``resources.env_runner``): ``columnar`` (``TransitionEnvRunner`` +
``ColumnarDQN``: the batched core, flat per-species transitions, a flat replay) and
``multi_agent`` (RLlib's ``MultiAgentEnvRunner`` and multi-agent episode replay).

``EpsilonGreedyQModule`` is RLlib's default DQN module plus two things BioFlux needs
everywhere a policy is used: its inference output carries the Q-values as
``ACTION_DIST_INPUTS`` (so evaluation and serving can report a Boltzmann "confidence" over
actions and the Q-values as reasoning), and it declares itself ``deterministic`` (evaluation
and serving take the argmax: greedy at evaluation). Exploration follows the ``epsilon``
schedule of the config (linear from ``epsilon_start`` to ``epsilon_end`` over
``epsilon_timesteps`` sampled steps).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from ray.rllib.algorithms.dqn.torch.default_dqn_torch_rl_module import (
    DefaultDQNTorchRLModule,
)
from ray.rllib.core.columns import Columns
from ray.rllib.utils.replay_buffers import MultiAgentEpisodeReplayBuffer

from bioflux.envs.config import SPECIES

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    from bioflux.config import Experiment


class EpsilonGreedyQModule(DefaultDQNTorchRLModule):
    """DQN Q-network; greedy in inference, epsilon-greedy in exploration (see module doc)."""

    deterministic = True

    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        q = self.compute_q_values(batch)["qf_preds"]
        return {Columns.ACTIONS: q.argmax(-1), Columns.ACTION_DIST_INPUTS: q}


class SeededMultiAgentEpisodeReplayBuffer(MultiAgentEpisodeReplayBuffer):
    """RLlib's multi-agent episode replay, drawing from a generator seeded with the run's seed.

    RLlib 2.60's episode buffers draw with ``np.random.default_rng(seed=None)``, so two runs of
    one config and seed replayed different transitions from their first update on."""

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rng = np.random.default_rng(seed)


class Params(BaseModel):
    """DQN hyper-parameters (the ``training`` section of an epsilon-greedy experiment)."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(5e-4, gt=0, description="Adam learning rate")
    gamma: float = Field(0.95, gt=0, le=1, description="discount factor")
    epsilon_start: float = Field(1.0, ge=0, le=1, description="exploration epsilon at step 0")
    epsilon_end: float = Field(0.05, ge=0, le=1, description="final exploration epsilon")
    epsilon_timesteps: int = Field(50_000, ge=1, description="env steps to decay epsilon")
    double_q: bool = Field(True, description="double Q-learning targets")
    dueling: bool = Field(False, description="dueling value/advantage heads")
    n_step: int = Field(1, ge=1, description="n-step returns")
    target_network_update_freq: int = Field(2000, ge=1, description="steps between syncs")
    tau: float = Field(1.0, gt=0, le=1, description="target update rate (1: hard copy)")
    replay_capacity: int = Field(100_000, ge=1, description="replay buffer capacity")
    learning_starts: int = Field(2000, ge=0, description="steps sampled before updates")
    train_batch_size: int = Field(64, ge=1, description="replayed transitions per update")
    rollout_fragment_length: int = Field(8, ge=1, description="env steps per sample call")
    steps_per_iteration: int = Field(1000, ge=1, description="min env steps per iteration")
    training_intensity: float | None = Field(None, description="replayed/sampled step ratio")
    hidden: list[int] = Field([128, 128], description="Q-network MLP layer sizes")
    train_species: list[str] = Field(list(SPECIES), description="species whose module learns")


def build_config(exp: Experiment) -> AlgorithmConfig:
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from bioflux.algorithms.columnar_dqn import ColumnarDQNConfig
    from bioflux.algorithms.common import with_env_and_resources
    from bioflux.algorithms.transition_env_runner import TransitionEnvRunner
    from bioflux.envs.rllib_env import species_of

    p: Params = exp.params  # type: ignore[assignment]
    r = exp.resources
    if r.env_runner not in ("columnar", "multi_agent"):
        raise ValueError(
            "resources.env_runner: epsilon_greedy samples with 'columnar' (the batched core, "
            "flat transitions into a flat replay) or 'multi_agent' (RLlib's "
            "MultiAgentEnvRunner and multi-agent episode replay)"
        )
    columnar = r.env_runner == "columnar"
    if r.env_device:
        from bioflux.algorithms.device_sampler import check_env_device

        check_env_device(r)
        if p.n_step != 1:
            raise ValueError(
                f"training.n_step={p.n_step} with resources.env_device: the device sampler "
                "stores one-step transitions; use n_step: 1, or env_device: null"
            )
    specs = {s: RLModuleSpec(module_class=EpsilonGreedyQModule) for s in SPECIES}
    algo_config = ColumnarDQNConfig() if columnar else DQNConfig()
    if r.env_device:
        algo_config.env_device = r.env_device
    return (
        with_env_and_resources(
            algo_config,
            exp,
            TransitionEnvRunner if columnar else None,
            rollout_fragment_length=p.rollout_fragment_length,
        )
        .multi_agent(
            policies=list(SPECIES),
            policy_mapping_fn=species_of,
            policies_to_train=list(p.train_species),
        )
        .rl_module(
            rl_module_spec=MultiRLModuleSpec(rl_module_specs=specs),
            model_config=DefaultModelConfig(fcnet_hiddens=list(p.hidden), fcnet_activation="relu"),
        )
        .training(
            lr=p.lr,
            gamma=p.gamma,
            double_q=p.double_q,
            dueling=p.dueling,
            n_step=p.n_step,
            target_network_update_freq=p.target_network_update_freq,
            tau=p.tau,
            epsilon=[[0, p.epsilon_start], [p.epsilon_timesteps, p.epsilon_end]],
            num_steps_sampled_before_learning_starts=p.learning_starts,
            train_batch_size_per_learner=p.train_batch_size,
            training_intensity=p.training_intensity,
            replay_buffer_config={
                # a dotted path: RLlib looks for "EpisodeReplayBuffer" in the type's name
                "type": f"{__name__}.{SeededMultiAgentEpisodeReplayBuffer.__name__}",
                "capacity": p.replay_capacity,
                "seed": exp.seed,
            },
        )
        .reporting(min_sample_timesteps_per_iteration=p.steps_per_iteration)
    )
