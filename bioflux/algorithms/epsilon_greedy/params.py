"""Epsilon-greedy (DQN) hyper-parameters: the one home of their defaults and meaning."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from bioflux.envs.config import SPECIES


class Params(BaseModel):
    """DQN hyper-parameters (the ``training`` section of an epsilon-greedy experiment)."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(5e-4, gt=0, description="Adam learning rate")
    gamma: float = Field(0.95, gt=0, le=1, description="discount factor")
    epsilon_start: float = Field(1.0, ge=0, le=1, description="exploration epsilon at step 0")
    epsilon_end: float = Field(0.05, ge=0, le=1, description="final exploration epsilon")
    epsilon_timesteps: int = Field(50_000, ge=1, description="env steps to decay epsilon")
    double_q: bool = Field(True, description="double Q-learning targets")
    dueling: bool = Field(False, description="dueling value/advantage heads")
    n_step: int = Field(1, ge=1, description="n-step returns")
    target_network_update_freq: int = Field(2000, ge=1, description="steps between syncs")
    tau: float = Field(1.0, gt=0, le=1, description="target update rate (1: hard copy)")
    replay_capacity: int = Field(100_000, ge=1, description="replay buffer capacity")
    learning_starts: int = Field(2000, ge=0, description="steps sampled before updates")
    train_batch_size: int = Field(64, ge=1, description="replayed transitions per update")
    rollout_fragment_length: int = Field(8, ge=1, description="env steps per sample call")
    steps_per_iteration: int = Field(1000, ge=1, description="min env steps per iteration")
    training_intensity: float | None = Field(None, description="replayed/sampled step ratio")
    hidden: list[int] = Field([128, 128], description="Q-network MLP layer sizes")
    train_species: list[str] = Field(list(SPECIES), description="species whose module learns")
