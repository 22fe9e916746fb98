"""MADDPG hyper-parameters: the one home of their defaults and meaning."""

from __future__ import annotations

from typing import Literal

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
    critic_state: Literal["auto", "flat", "pooled"] = Field(
        "auto",
        description=(
            "how the critics read the global state (H×W×3): 'flat' feeds every cell to the "
            "first layer, whose width then grows with the grid (30,000 inputs on 100×100); "
            "'pooled' sums each channel over a critic_state_grid × critic_state_grid partition "
            "of the world, a fixed width whatever its size; "
            "'auto': flat up to 4,096 state values (about 36×36), pooled above"
        ),
    )
    critic_state_grid: int = Field(16, ge=1, description="pooled state: regions per side")


#: ``Params`` fields that configure the module specs rather than the ``AlgorithmConfig``.
MODEL_KEYS: frozenset[str] = frozenset(
    {"actor_hidden", "critic_hidden", "critic_state", "critic_state_grid"}
)

#: ``critic_state: auto`` pools the state above this many values (3 per cell).
AUTO_POOLED_ABOVE = 4096


def critic_state_mode(params: Params, state_size: int) -> str:
    """``flat`` or ``pooled``: ``params.critic_state`` with ``auto`` resolved for the world."""
    if params.critic_state != "auto":
        return params.critic_state
    return "pooled" if state_size > AUTO_POOLED_ABOVE else "flat"
