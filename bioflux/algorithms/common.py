"""The part of an RLlib config that every BioFlux algorithm shares."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    from bioflux.config import Experiment


def with_env_and_resources(
    config: AlgorithmConfig,
    exp: Experiment,
    env_runner_cls: type | None = None,
    **env_runner_kwargs: Any,
) -> AlgorithmConfig:
    """Env (the registered adapter), EnvRunners, fault tolerance, episode metrics and seed."""
    from bioflux.algorithms.callbacks import EpisodeStatsCallback
    from bioflux.envs.rllib_env import register

    r = exp.resources
    return (
        config
        # RLlib's env pre-check rejects final observations of agents that just left (which
        # RLlib itself needs); the env passes PettingZoo's API tests instead.
        .environment(register(), env_config=exp.env, disable_env_checking=True)
        .env_runners(
            env_runner_cls=env_runner_cls,
            num_env_runners=r.num_env_runners,
            num_envs_per_env_runner=r.num_envs_per_env_runner,
            num_cpus_per_env_runner=r.num_cpus_per_env_runner,
            **env_runner_kwargs,
        )
        .fault_tolerance(
            restart_failed_env_runners=r.restart_failed_env_runners,
            max_num_env_runner_restarts=r.max_num_env_runner_restarts,
        )
        .callbacks(EpisodeStatsCallback)
        .debugging(seed=exp.seed)
    )
