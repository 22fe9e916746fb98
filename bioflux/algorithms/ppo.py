"""Multi-agent PPO: one policy per species, parameters shared by all agents of a species.

Run: ``bioflux train --config configs/demo.yaml`` (a few minutes on 2 cores; predators learn to
chase, their capture rate against random prey rises well above random predators').

Each species (``predator``, ``prey``) gets its own RLlib default PPO module (MLP policy and value
networks over the flattened egocentric window); ``species_of`` maps every agent to its species'
module, so each agent keeps its own trajectory, rewards and termination while sharing weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from bioflux.envs.config import SPECIES

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    from bioflux.config import Experiment


class Params(BaseModel):
    """PPO hyper-parameters (the ``training`` section of a PPO experiment file)."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(3e-4, gt=0, description="Adam learning rate")
    gamma: float = Field(0.99, gt=0, le=1, description="discount factor")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    clip_param: float = Field(0.2, gt=0, description="PPO ratio clip")
    vf_clip_param: float = Field(10.0, gt=0, description="value-loss clip")
    entropy_coeff: float = Field(0.01, ge=0, description="entropy bonus weight")
    vf_loss_coeff: float = Field(0.5, ge=0, description="value-loss weight")
    kl_coeff: float = Field(0.0, ge=0, description="initial KL penalty weight (0: off)")
    num_epochs: int = Field(
        5, ge=1, description="SGD passes of each species' module over its own rows per batch"
    )
    train_batch_size: int = Field(
        20000, ge=1, description="agent-steps per training iteration (all agents' steps count)"
    )
    minibatch_size: int = Field(
        512,
        ge=1,
        description="agent rows of the largest species per SGD minibatch (other species: "
        "in proportion to their rows; see ppo_learner)",
    )
    hidden: list[int] = Field([128, 128], description="MLP layer sizes (policy and value nets)")
    activation: str = Field("tanh", description="MLP activation")
    grad_clip: float | None = Field(0.5, description="global gradient-norm clip")
    learner_precision: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="dtype of the learner's forward pass: 'bfloat16' autocasts the networks "
        "(float32 weights, optimizer and loss; faster on CPUs with AVX512-BF16/AMX, slightly "
        "noisier gradients)",
    )
    learner_cuda_graph: bool = Field(
        False,
        description="GPU learner: capture each SGD step (forward, loss, backward, clip, Adam) "
        "in a CUDA graph and replay it, so a step costs one launch instead of hundreds (same "
        "arithmetic; minibatches padded to minibatch_size rows; see captured_sgd_step)",
    )
    sample_ahead: bool = Field(
        False,
        description="env_runner columnar with remote EnvRunners: sample the next batch while "
        "the learner trains on this one (each batch is one update old: not synchronous PPO; "
        "see columnar_ppo)",
    )
    train_species: list[str] = Field(list(SPECIES), description="species whose module learns")
    fixed_modules: dict[str, str] = Field(
        {},
        description="species → non-learned module ('lotka_volterra'), e.g. {prey: "
        "lotka_volterra} trains predators against Lotka–Volterra prey",
    )


def build_config(exp: Experiment) -> AlgorithmConfig:
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from bioflux.algorithms.agent_row_ppo_config import AgentRowMinibatchPPOConfig
    from bioflux.algorithms.batched_env_runner import BatchedCoreEnvRunner
    from bioflux.algorithms.bf16_learner import BF16PPOTorchLearner
    from bioflux.algorithms.columnar_env_runner import ColumnarEnvRunner
    from bioflux.algorithms.columnar_ppo import ColumnarPPOConfig
    from bioflux.algorithms.common import with_env_and_resources
    from bioflux.algorithms.lotka_volterra import DEFAULTS as LV_DEFAULTS
    from bioflux.algorithms.lotka_volterra import LotkaVolterraModule
    from bioflux.algorithms.ppo_learner import PerModuleEpochsPPOTorchLearner
    from bioflux.envs.rllib_env import species_of

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
        from bioflux.algorithms.device_sampler import check_env_device

        check_env_device(r)
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
            lr=p.lr,
            gamma=p.gamma,
            lambda_=p.gae_lambda,
            clip_param=p.clip_param,
            vf_clip_param=p.vf_clip_param,
            entropy_coeff=p.entropy_coeff,
            vf_loss_coeff=p.vf_loss_coeff,
            kl_coeff=p.kl_coeff,
            use_kl_loss=p.kl_coeff > 0,
            num_epochs=p.num_epochs,
            train_batch_size_per_learner=batch_size,
            minibatch_size=minibatch_size,
            grad_clip=p.grad_clip,
        )
        .learners(
            learner_class=BF16PPOTorchLearner
            if p.learner_precision == "bfloat16"
            else PerModuleEpochsPPOTorchLearner,
            learner_config_dict={"cuda_graph": p.learner_cuda_graph},
        )
    )
