"""Generalised advantage estimation over a batched rollout, vectorised over worlds and agents.

The rollout is dense: arrays ``(T, B, N)`` over fragment steps, worlds and agent slots.

- ``active[t]``: the slot acted at step ``t`` (alive, world running);
- ``values[t]``: ``V(s_t)`` of the acting agents;
- ``rewards[t]``: the reward of that step;
- ``terminated[t]``: the agent died at ``t`` (capture, starvation): no bootstrap;
- ``continues[t]``: the same trajectory acts again at ``t + 1`` (so ``V(s_{t+1})`` is
  ``values[t + 1]`` and the advantage propagates back from ``t + 1``);
- ``bootstrap[t]``: ``V`` of the observation after step ``t`` where the trajectory stops at
  ``t`` without dying — the step limit, or the fragment's end (``t = T - 1``).

A newborn's or a reset world's first step simply has ``continues`` false on the step before,
so trajectories never leak into each other. This is RLlib's ``compute_value_targets``
convention (the step where a chunk ends is truncated, its bootstrap is the value of the final
observation), computed for every trajectory of the fragment at once.
"""

from __future__ import annotations

import numpy as np
import torch


def dense_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    active: np.ndarray,
    terminated: np.ndarray,
    continues: np.ndarray,
    bootstrap: np.ndarray,
    gamma: float,
    lambda_: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and value targets ``(T, B, N)`` float32 (zero where not ``active``)."""
    T = rewards.shape[0]
    next_values = np.where(continues[:-1], values[1:], bootstrap[:-1]) if T > 1 else bootstrap
    if T > 1:
        next_values = np.concatenate([next_values, bootstrap[-1:]], axis=0)
    next_values = np.where(terminated, 0.0, next_values)
    deltas = rewards + gamma * next_values - values
    advantages = np.zeros(rewards.shape, dtype=np.float32)
    running = np.zeros(rewards.shape[1:], dtype=np.float64)
    for t in range(T - 1, -1, -1):
        carry = np.where(continues[t] & ~terminated[t], running, 0.0)
        running = np.where(active[t], deltas[t] + gamma * lambda_ * carry, 0.0)
        advantages[t] = running
    targets = np.where(active, advantages + values, 0.0).astype(np.float32)
    return advantages, targets


def dense_gae_torch(
    rewards: torch.Tensor,
    values: torch.Tensor,
    active: torch.Tensor,
    terminated: torch.Tensor,
    continues: torch.Tensor,
    bootstrap: torch.Tensor,
    gamma: float,
    lambda_: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``gae.dense_gae`` on torch tensors ``(T, B, N)`` (same masks, same arithmetic)."""
    next_values = torch.cat(
        [torch.where(continues[:-1], values[1:], bootstrap[:-1]), bootstrap[-1:]]
    )
    next_values = torch.where(terminated, 0.0, next_values)
    deltas = (rewards + gamma * next_values - values).double()
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[1:], dtype=torch.float64, device=rewards.device)
    for t in range(rewards.shape[0] - 1, -1, -1):
        carry = torch.where(continues[t] & ~terminated[t], running, 0.0)
        running = torch.where(active[t], deltas[t] + gamma * lambda_ * carry, 0.0)
        advantages[t] = running.float()
    targets = torch.where(active, advantages + values, 0.0)
    return advantages, targets
