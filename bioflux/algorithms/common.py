"""The plug-in contract, and the part of an RLlib config that every BioFlux algorithm shares.

An algorithm package (``bioflux/algorithms/<name>/``) hands the registry one ``PLUGIN``, an
instance of one of two kinds:

- ``RLlibPlugin``: trains through RLlib. ``build_config(experiment)`` returns the
  ``AlgorithmConfig``; training builds the ``Algorithm`` from it and runs, checkpoints and exports
  it (``bioflux.training``). PPO, epsilon-greedy and MADDPG.
- ``SelfTrainingPlugin``: trains itself. ``train(experiment, ...)`` runs the whole run (its own
  search, checkpoints and export) and returns the run's summary. The Lotka–Volterra coefficient
  search.

Both carry ``Params``: the pydantic model of the algorithm's hyper-parameters (the ``training``
section of an experiment file), each documented once, in its ``Field`` description.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    from bioflux.config import Experiment


@dataclass(frozen=True)
class Plugin:
    """What ``bioflux.algorithms.get_algorithm(name)`` returns (see the module docstring)."""

    Params: type[BaseModel]
    #: True: training builds an RLlib ``Algorithm`` from ``build_config``; False: ``train``.
    trains_through_rllib: ClassVar[bool]


@dataclass(frozen=True)
class RLlibPlugin(Plugin):
    """An algorithm that trains through RLlib: ``build_config(experiment) -> AlgorithmConfig``."""

    build_config: Callable[[Experiment], AlgorithmConfig]
    trains_through_rllib: ClassVar[bool] = True


@dataclass(frozen=True)
class SelfTrainingPlugin(Plugin):
    """An algorithm that runs its own training: ``train(experiment, *, output, models, resume,
    address, log) -> summary`` (the arguments of ``bioflux.training.train``)."""

    train: Callable[..., dict[str, Any]]
    trains_through_rllib: ClassVar[bool] = False


def training_args(
    params: BaseModel, *, skip: Collection[str] = (), rename: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The hyper-parameters that ``AlgorithmConfig.training`` takes as they are: every field of
    ``params`` but ``skip``, under its RLlib name (``rename``: field → RLlib keyword)."""
    rename = rename or {}
    return {
        rename.get(name, name): getattr(params, name)
        for name in type(params).model_fields
        if name not in skip
    }


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
    from bioflux.algorithms.shared.callbacks import EpisodeStatsCallback
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
