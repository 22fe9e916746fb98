"""Multi-agent PPO: one policy per species, parameters shared by all agents of a species.

Run: ``bioflux train --config configs/demo.yaml`` (a few minutes on 2 cores; predators learn to
chase, their capture rate against random prey rises well above random predators').

Each species (``predator``, ``prey``) gets its own RLlib default PPO module (MLP policy and value
networks over the flattened egocentric window); ``species_of`` maps every agent to its species'
module, so each agent keeps its own trajectory, rewards and termination while sharing weights.

Three samplers (``resources.env_runner``): ``batched`` (``shared.BatchedCoreEnvRunner``: the
batched core, one episode object per agent trajectory), ``columnar`` (``env_runner``: the same
core, per-species columns with advantages computed on the EnvRunners, trained by
``algorithm.ColumnarPPO``) and ``multi_agent`` (RLlib's ``MultiAgentEnvRunner``). Every path
trains with the same learner (``learner``: per-species epochs; ``loss``: the PPO loss;
``captured_sgd_step``: the SGD step as a CUDA graph; ``bf16_learner``). The hyper-parameters are
``params.Params``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bioflux.algorithms.common import RLlibPlugin
from bioflux.algorithms.ppo.params import Params
from bioflux.envs.config import SPECIES

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    from bioflux.config import Experiment


#: ``resources.env_runner`` values PPO samples with (see the module docstring).
SAMPLERS = ("batched", "columnar", "multi_agent")
#: ``Params`` fields that ``AlgorithmConfig.training`` does not take as they are.
NOT_RLLIB_TRAINING = frozenset(
    {
        "train_batch_size",
        "minibatch_size",
        "hidden",
        "activation",
        "learner_precision",
        "learner_cuda_graph",
        "sample_ahead",
        "train_species",
        "fixed_modules",
    }
)


def build_config(exp: Experiment) -> AlgorithmConfig:
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from bioflux.algorithms.common import training_args, with_env_and_resources
    from bioflux.algorithms.ppo.algorithm import AgentRowMinibatchPPOConfig, ColumnarPPOConfig
    from bioflux.algorithms.ppo.bf16_learner import BF16PPOTorchLearner
    from bioflux.algorithms.ppo.env_runner import ColumnarEnvRunner
    from bioflux.algorithms.ppo.learner import PerModuleEpochsPPOTorchLearner
    from bioflux.algorithms.shared.batched_env_runner import BatchedCoreEnvRunner
    from bioflux.envs.rllib_env import species_of
    from bioflux.policy_modules.lotka_volterra import DEFAULTS as LV_DEFAULTS
    from bioflux.policy_modules.lotka_volterra import LotkaVolterraModule

    p: Params = exp.params  # type: ignore[assignment]
    r = exp.resources
    unknown = (set(p.train_species) | set(p.fixed_modules)) - set(SPECIES)
    if unknown:
        raise ValueError(f"training: unknown species {sorted(unknown)}; allowed {SPECIES}")
    specs = {}
    for s in SPECIES:
        kind = p.fixed_modules.get(s)
        if kind is None:
            specs[s] = RLModuleSpec()
        elif kind == "lotka_volterra":
            specs[s] = RLModuleSpec(
                module_class=LotkaVolterraModule, model_config={**LV_DEFAULTS, "species": s}
            )
        else:
            raise ValueError(f"training.fixed_modules.{s}={kind!r}; allowed: 'lotka_volterra'")
    to_train = [s for s in p.train_species if s not in p.fixed_modules]
    if r.env_runner not in SAMPLERS:
        raise ValueError(
            f"resources.env_runner: ppo samples with {sorted(SAMPLERS)}, not {r.env_runner!r}"
        )
    if p.sample_ahead and (r.env_runner != "columnar" or r.num_env_runners < 1):
        raise ValueError(
            "training.sample_ahead needs resources.env_runner: columnar and "
            "resources.num_env_runners >= 1 (it overlaps remote sampling with learning)"
        )
    if p.learner_cuda_graph and (
        r.num_gpus_per_learner <= 0 or r.num_learners > 1 or p.learner_precision != "float32"
    ):
        raise ValueError(
            "training.learner_cuda_graph needs one GPU learner: resources.num_gpus_per_learner "
            ">= 1, resources.num_learners <= 1 and training.learner_precision: float32"
        )
    if r.env_runner in ("batched", "columnar"):
        count_steps_by, batch_size = "agent_steps", p.train_batch_size
    else:
        # RLlib's MultiAgentEnvRunner reports NaN agent-step counts once agents leave (caught
        # prey), which breaks agent-step counting: count env steps at the initial population.
        env = exp.env_config
        count_steps_by = "env_steps"
        batch_size = max(1, -(-p.train_batch_size // max(1, env.n_predators + env.n_prey)))
    # Minibatches are agent rows per module in every path (RLlib's Learner slices each
    # module's batch into minibatch_size rows), never more rows than one iteration samples.
    minibatch_size = min(p.minibatch_size, p.train_batch_size)
    algo_config = (
        ColumnarPPOConfig() if r.env_runner == "columnar" else AgentRowMinibatchPPOConfig()
    )
    if p.sample_ahead:
        algo_config.sample_ahead = True
    if r.env_device:
        from bioflux.algorithms.shared.device_world import check_env_device

        check_env_device(r, ("columnar",))
        algo_config.env_device = r.env_device
    return (
        with_env_and_resources(
            algo_config,
            exp,
            {"batched": BatchedCoreEnvRunner, "columnar": ColumnarEnvRunner}.get(r.env_runner),
        )
        .multi_agent(
            policies=list(SPECIES),
            policy_mapping_fn=species_of,
            policies_to_train=to_train,
            count_steps_by=count_steps_by,
        )
        .rl_module(
            rl_module_spec=MultiRLModuleSpec(rl_module_specs=specs),
            model_config=DefaultModelConfig(
                fcnet_hiddens=list(p.hidden), fcnet_activation=p.activation, vf_share_layers=False
            ),
        )
        .training(
            **training_args(p, skip=NOT_RLLIB_TRAINING, rename={"gae_lambda": "lambda_"}),
            use_kl_loss=p.kl_coeff > 0,
            train_batch_size_per_learner=batch_size,
            minibatch_size=minibatch_size,
        )
        .learners(
            learner_class=BF16PPOTorchLearner
            if p.learner_precision == "bfloat16"
            else PerModuleEpochsPPOTorchLearner,
            learner_config_dict={"cuda_graph": p.learner_cuda_graph},
        )
    )


PLUGIN = RLlibPlugin(Params=Params, build_config=build_config)

__all__ = ["PLUGIN", "Params", "build_config"]
