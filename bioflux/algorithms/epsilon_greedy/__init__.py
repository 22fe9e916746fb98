"""Epsilon-greedy: a Q-network per species trained with RLlib's DQN (double-Q, target network),
acting epsilon-greedily while sampling and greedily otherwise.

Run: ``bioflux train --config configs/epsilon_greedy.yaml`` (the demo world; its predators
capture ~0.57 of random prey after 50k env steps, ~20 s on 2 cores).

Two sampling paths (``resources.env_runner``): ``transitions`` (``env_runner.TransitionEnvRunner``
+ ``algorithm.ColumnarDQN``: the batched core, flat per-species transitions, a flat replay;
``columnar``, its name before, still means it here) and ``multi_agent`` (RLlib's
``MultiAgentEnvRunner`` and its multi-agent episode replay, seeded: ``replay``).

``EpsilonGreedyQModule`` is RLlib's default DQN module plus two things BioFlux needs
everywhere a policy is used: its inference output carries the Q-values as
``ACTION_DIST_INPUTS`` (so evaluation and serving can report a Boltzmann "confidence" over
actions and the Q-values as reasoning), and it declares itself ``deterministic`` (evaluation
and serving take the argmax: greedy at evaluation). Exploration follows the ``epsilon``
schedule of the config (linear from ``epsilon_start`` to ``epsilon_end`` over
``epsilon_timesteps`` sampled steps).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bioflux.algorithms.common import RLlibPlugin
from bioflux.algorithms.epsilon_greedy.modules import EpsilonGreedyQModule
from bioflux.algorithms.epsilon_greedy.params import Params
from bioflux.algorithms.epsilon_greedy.replay import SeededMultiAgentEpisodeReplayBuffer
from bioflux.envs.config import SPECIES

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    from bioflux.config import Experiment


#: ``resources.env_runner`` values epsilon-greedy samples with (see the module docstring), and
#: the old names they still answer to.
SAMPLERS = ("transitions", "multi_agent")
SAMPLER_ALIASES = {"columnar": "transitions"}
#: ``Params`` fields that ``AlgorithmConfig.training`` does not take as they are.
NOT_RLLIB_TRAINING = frozenset(
    {
        "epsilon_start",
        "epsilon_end",
        "epsilon_timesteps",
        "replay_capacity",
        "learning_starts",
        "train_batch_size",
        "rollout_fragment_length",
        "steps_per_iteration",
        "hidden",
        "train_species",
    }
)


def build_config(exp: Experiment) -> AlgorithmConfig:
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from bioflux.algorithms.common import training_args, with_env_and_resources
    from bioflux.algorithms.epsilon_greedy.algorithm import ColumnarDQNConfig
    from bioflux.algorithms.epsilon_greedy.env_runner import TransitionEnvRunner
    from bioflux.envs.rllib_env import species_of

    p: Params = exp.params  # type: ignore[assignment]
    r = exp.resources
    sampler = SAMPLER_ALIASES.get(r.env_runner, r.env_runner)
    if sampler not in SAMPLERS:
        raise ValueError(
            "resources.env_runner: epsilon_greedy samples with 'transitions' (the batched core, "
            "flat transitions into a flat replay; 'columnar' is its old name) or 'multi_agent' "
            "(RLlib's MultiAgentEnvRunner and multi-agent episode replay)"
        )
    flat = sampler == "transitions"
    if r.env_device:
        from bioflux.algorithms.shared.device_world import check_env_device

        check_env_device(r, ("transitions", "columnar"))
        if p.n_step != 1:
            raise ValueError(
                f"training.n_step={p.n_step} with resources.env_device: the device sampler "
                "stores one-step transitions; use n_step: 1, or env_device: null"
            )
    specs = {s: RLModuleSpec(module_class=EpsilonGreedyQModule) for s in SPECIES}
    algo_config = ColumnarDQNConfig() if flat else DQNConfig()
    if r.env_device:
        algo_config.env_device = r.env_device
    return (
        with_env_and_resources(
            algo_config,
            exp,
            TransitionEnvRunner if flat else None,
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
            **training_args(p, skip=NOT_RLLIB_TRAINING),
            epsilon=[[0, p.epsilon_start], [p.epsilon_timesteps, p.epsilon_end]],
            num_steps_sampled_before_learning_starts=p.learning_starts,
            train_batch_size_per_learner=p.train_batch_size,
            replay_buffer_config={
                # a dotted path: RLlib looks for "EpisodeReplayBuffer" in the type's name
                "type": f"{SeededMultiAgentEpisodeReplayBuffer.__module__}."
                f"{SeededMultiAgentEpisodeReplayBuffer.__name__}",
                "capacity": p.replay_capacity,
                "seed": exp.seed,
            },
        )
        .reporting(min_sample_timesteps_per_iteration=p.steps_per_iteration)
    )


PLUGIN = RLlibPlugin(Params=Params, build_config=build_config)

__all__ = [
    "PLUGIN",
    "EpsilonGreedyQModule",
    "Params",
    "SeededMultiAgentEpisodeReplayBuffer",
    "build_config",
]
