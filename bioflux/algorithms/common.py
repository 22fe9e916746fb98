"""The part of an RLlib config that every BioFlux algorithm shares."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    from bioflux.config import Experiment


def require_gpus(needed: float) -> None:
    """Refuse a GPU request that nothing can serve: the Ray cluster (when connected) or this
    machine has fewer GPUs than ``needed``."""
    if needed <= 0:
        return
    import ray

    if ray.is_initialized():
        have, where = ray.cluster_resources().get("GPU", 0.0), "the Ray cluster"
    else:
        import torch

        have, where = float(torch.cuda.device_count()), "this machine"
    if have < needed:
        raise ValueError(
            f"resources: the learners ask for {needed:g} GPU(s) (num_gpus_per_learner x "
            f"max(1, num_learners)) but {where} has {have:g}; set "
            "resources.num_gpus_per_learner=0 to train on CPUs"
        )


def with_env_and_resources(
    config: AlgorithmConfig,
    exp: Experiment,
    env_runner_cls: type | None = None,
    **env_runner_kwargs: Any,
) -> AlgorithmConfig:
    """Env (the registered adapter), EnvRunners, learners (count, GPUs, CPUs), fault
    tolerance, episode metrics and seed."""
    from bioflux.algorithms.callbacks import EpisodeStatsCallback
    from bioflux.envs.rllib_env import register

    r = exp.resources
    require_gpus(r.num_gpus_per_learner * max(1, r.num_learners))
    learners: dict[str, Any] = {
        "num_learners": r.num_learners,
        "num_gpus_per_learner": r.num_gpus_per_learner,
    }
    if r.num_cpus_per_learner is not None:
        learners["num_cpus_per_learner"] = r.num_cpus_per_learner
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
        .learners(**learners)
        .callbacks(EpisodeStatsCallback)
        .debugging(seed=exp.seed)
    )
