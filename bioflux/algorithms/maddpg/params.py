"""MADDPG hyper-parameters: the one home of their defaults and meaning."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Params(BaseModel):
    """MADDPG hyper-parameters (the ``training`` section of a MADDPG experiment)."""

    model_config = ConfigDict(extra="forbid")

    actor_lr: float = Field(1e-3, gt=0, description="actor Adam learning rate")
    critic_lr: float = Field(1e-3, gt=0, description="critic Adam learning rate")
    gamma: float = Field(0.95, gt=0, le=1, description="discount factor")
    tau: float = Field(0.01, gt=0, le=1, description="soft target-update rate")
    gumbel_temperature: float = Field(1.0, gt=0, description="Gumbel-softmax temperature")
    logit_penalty: float = Field(1e-3, ge=0, description="weight of the actor logit L2 term")
    replay_capacity: int = Field(50_000, ge=1, description="joint transitions kept")
    learning_starts: int = Field(1000, ge=1, description="transitions before the first update")
    batch_size: int = Field(256, ge=1, description="joint transitions per gradient step")
    updates_per_iteration: int = Field(20, ge=1, description="gradient steps per iteration")
    env_steps_per_iteration: int = Field(200, ge=1, description="world steps sampled per iter")
    grad_clip: float = Field(10.0, gt=0, description="gradient-norm clip per optimizer")
    actor_hidden: list[int] = Field([128, 128], description="actor MLP layer sizes")
    critic_hidden: list[int] = Field([256, 256], description="critic MLP layer sizes")


#: ``Params`` fields that configure the module specs rather than the ``AlgorithmConfig``.
MODEL_KEYS: frozenset[str] = frozenset({"actor_hidden", "critic_hidden"})
