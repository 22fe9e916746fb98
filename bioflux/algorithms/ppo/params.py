"""PPO hyper-parameters: the one home of their defaults and meaning."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bioflux.envs.config import SPECIES


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
        "in proportion to their rows; see ppo.learner)",
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
        "arithmetic; minibatches padded to minibatch_size rows; see ppo.captured_sgd_step)",
    )
    sample_ahead: bool = Field(
        False,
        description="env_runner columnar with remote EnvRunners: sample the next batch while "
        "the learner trains on this one (each batch is one update old: not synchronous PPO; "
        "see ppo.algorithm)",
    )
    train_species: list[str] = Field(list(SPECIES), description="species whose module learns")
    fixed_modules: dict[str, str] = Field(
        {},
        description="species → non-learned module ('lotka_volterra'), e.g. {prey: "
        "lotka_volterra} trains predators against Lotka–Volterra prey",
    )
