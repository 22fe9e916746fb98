"""MADDPG-style centralised-critic algorithm (Lowe et al. 2017) on RLlib's new API stack.

Run: ``bioflux train --config configs/maddpg.yaml`` (or ``configs/maddpg_coop.yaml``, where two
predators must be within reach of a prey at once).

Decentralised actors (one ``GumbelActorModule`` per species, acting on the agent's own
observation only) and centralised critics (one ``CentralCriticModule`` per species, seeing the
agent's own observation, the global state, every agent's action, the alive mask and which slot
the agent is) learn off-policy from a replay of joint transitions; discrete actions go through
the Gumbel-softmax relaxation; targets follow by soft updates. Checkpoints hold actor modules
that load like any other policy (inference needs only the actor). See ``modules``, ``learner``,
``replay``, ``env_runner`` and ``algorithm``; the hyper-parameters are ``params.Params``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bioflux.algorithms.common import RLlibPlugin
from bioflux.algorithms.maddpg.params import MODEL_KEYS, Params, critic_state_mode
from bioflux.envs.config import N_ACTIONS, SPECIES

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    from bioflux.config import Experiment


def build_config(exp: Experiment) -> AlgorithmConfig:
    import gymnasium
    import numpy as np
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from bioflux.algorithms.common import training_args, with_env_and_resources
    from bioflux.algorithms.maddpg.algorithm import MADDPGConfig
    from bioflux.algorithms.maddpg.env_runner import JointTransitionEnvRunner
    from bioflux.algorithms.maddpg.learner import critic_id
    from bioflux.algorithms.maddpg.modules import (
        CentralCriticModule,
        GumbelActorModule,
        critic_input_dim,
    )
    from bioflux.envs.core import OBS_CHANNELS
    from bioflux.envs.rllib_env import species_of

    p: Params = exp.params  # type: ignore[assignment]
    r = exp.resources
    env = exp.env_config
    if r.env_runner != "batched":
        raise ValueError(
            "resources.env_runner: maddpg samples joint transitions from the "
            "batched core; use 'batched'"
        )
    if r.num_learners > 1:
        raise ValueError(
            "resources.num_learners: maddpg trains on one learner (the driver with 0, a Ray "
            "actor with 1); its joint-transition update is not data-parallel"
        )
    obs_dim = env.obs_size**2 * len(OBS_CHANNELS)
    obs_space = gymnasium.spaces.Box(0.0, np.inf, (obs_dim,), np.float32)
    act_space = gymnasium.spaces.Discrete(N_ACTIONS)
    state_size = env.height * env.width * 3
    critic_dim = critic_input_dim(obs_dim, state_size, env.n_agents_max)
    critic_model: dict = {"hidden": p.critic_hidden}
    if critic_state_mode(p, state_size) == "pooled":
        critic_model.update(
            obs_dim=obs_dim,
            state_shape=[env.height, env.width],
            state_grid=p.critic_state_grid,
        )
    critic_space = gymnasium.spaces.Box(-np.inf, np.inf, (critic_dim,), np.float32)
    specs = {}
    for s in SPECIES:
        specs[s] = RLModuleSpec(
            module_class=GumbelActorModule,
            observation_space=obs_space,
            action_space=act_space,
            model_config={"hidden": p.actor_hidden},
        )
        specs[critic_id(s)] = RLModuleSpec(
            module_class=CentralCriticModule,
            observation_space=critic_space,
            action_space=act_space,
            learner_only=True,
            model_config=critic_model,
        )
    return (
        with_env_and_resources(MADDPGConfig(), exp, JointTransitionEnvRunner)
        .multi_agent(
            policies=list(specs), policy_mapping_fn=species_of, policies_to_train=list(specs)
        )
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs=specs))
        .training(**training_args(p, skip=MODEL_KEYS))
    )


PLUGIN = RLlibPlugin(Params=Params, build_config=build_config)

__all__ = ["PLUGIN", "Params", "build_config"]
