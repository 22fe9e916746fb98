"""MADDPG's RLModules: decentralised Gumbel-softmax actors and centralised critics.

- ``GumbelActorModule`` (one per species, shared by its agents): an MLP from the agent's own
  flattened observation to action logits. Acting samples the categorical (exploration) or
  takes the argmax; the learner differentiates through ``gumbel_softmax(hard=True)``
  (straight-through), as EPyMARL does for discrete MADDPG. Holds its target copy ``pi_target``.
- ``CentralCriticModule`` (one per species, learner-only): Q(o_i, s, a, m, e_i) of agent ``i``
  from its own observation ``o_i`` (the global state counts agents per cell but cannot say
  which one is ``i``, so without ``o_i`` the critic cannot tell where ``i`` stands), the global
  state ``s`` (flattened ``state()``), the joint action ``a`` (one-hot per slot, zero for
  absent agents), the alive mask ``m`` over all slots, and ``i``'s slot one-hot ``e_i``.
  Fixed-size slots plus the mask handle deaths and births. Holds ``q_target``. The state
  enters either flat or through ``StatePooling`` (``Params.critic_state``), which keeps the
  critic's size fixed as the grid grows.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from torch import nn

from bioflux.envs.config import N_ACTIONS


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target ← tau · online + (1 − tau) · target."""
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters()):
            t.mul_(1.0 - tau).add_(o, alpha=tau)


class GumbelActorModule(TorchRLModule):
    """Decentralised actor; ``model_config``: ``hidden`` (list of layer sizes)."""

    def setup(self) -> None:
        hidden = list((self.model_config or {}).get("hidden", [128, 128]))
        obs_dim = int(self.observation_space.shape[0])
        self.pi = mlp([obs_dim, *hidden, int(self.action_space.n)])
        if not self.inference_only:
            self.pi_target = copy.deepcopy(self.pi)
            self.pi_target.requires_grad_(False)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.pi(batch[Columns.OBS])}


class StatePooling(nn.Module):
    """Flattened global states ``(T, H·W·3)`` → ``(T, 3·grid²)``: each channel (walls,
    predators, prey) summed over a ``grid × grid`` partition of the world (adaptive average
    pooling times the mean region's area). Its width does not depend on the world's size, so
    neither does the critic's first layer; the agent's own observation keeps the local detail."""

    def __init__(self, height: int, width: int, grid: int):
        super().__init__()
        self.height, self.width = height, width
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.area = height * width / grid**2
        self.out_dim = 3 * grid * grid

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        x = state.reshape(-1, self.height, self.width, 3).permute(0, 3, 1, 2)
        return self.pool(x).flatten(1) * self.area


class CentralCriticModule(TorchRLModule):
    """Centralised critic. Input (``observation_space``): ``critic_input``'s rows with the
    raw flattened state. ``model_config``: ``hidden``; for a pooled state also ``obs_dim``,
    ``state_shape`` ``[H, W]`` and ``state_grid``."""

    def setup(self) -> None:
        cfg = self.model_config or {}
        hidden = list(cfg.get("hidden", [128, 128]))
        width = int(self.observation_space.shape[0])
        self.state_encoder: StatePooling | None = None
        if cfg.get("state_shape"):
            h, w = cfg["state_shape"]
            self.obs_dim, self.state_size = int(cfg["obs_dim"]), h * w * 3
            self.state_encoder = StatePooling(h, w, int(cfg["state_grid"]))
            width += self.state_encoder.out_dim - self.state_size
        self.q = mlp([width, *hidden, 1])
        self.q_target = copy.deepcopy(self.q)
        self.q_target.requires_grad_(False)

    def encode_state(self, state: torch.Tensor) -> torch.Tensor:
        """The state as the first layer reads it: itself (flat) or pooled."""
        return state if self.state_encoder is None else self.state_encoder(state)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        x = batch[Columns.OBS]
        if self.state_encoder is not None:
            o, s = self.obs_dim, self.state_size
            x = torch.cat([x[:, :o], self.encode_state(x[:, o : o + s]), x[:, o + s :]], -1)
        return {"q": self.q(x).squeeze(-1)}


def critic_input_dim(obs_dim: int, state_dim: int, n_slots: int) -> int:
    """Width of a ``critic_input`` row: ``o_i`` + ``s`` + one-hot joint action + ``m`` + ``e_i``."""
    return obs_dim + state_dim + n_slots * N_ACTIONS + n_slots + n_slots


def critic_input(
    state: torch.Tensor,
    joint_onehot: torch.Tensor,
    alive: torch.Tensor,
    slots: torch.Tensor,
    own_obs: torch.Tensor,
) -> torch.Tensor:
    """Rows ``[o_i, s, a (N*N_ACTIONS), m (N), e_i (N)]`` for each (transition, agent) pair.

    ``state`` (T, S), ``joint_onehot`` (T, K, N, N_ACTIONS) — one joint action per evaluated agent
    (the actor loss swaps in each agent's own differentiable action), ``alive`` (T, N),
    ``slots`` (K,) the evaluated agents' slot indices, ``own_obs`` (T, K, D) their own
    observations. Returns (T, K, critic_input_dim(D, S, N)).
    """
    T, K, N, _ = joint_onehot.shape
    eye = torch.eye(N, device=state.device)[slots]  # (K, N)
    return torch.cat(
        [
            own_obs,
            state[:, None, :].expand(T, K, state.shape[1]),
            (joint_onehot * alive[:, None, :, None]).reshape(T, K, N * N_ACTIONS),
            alive[:, None, :].expand(T, K, N),
            eye[None].expand(T, K, N),
        ],
        dim=-1,
    )


def critic_q(
    q: nn.Sequential,
    state: torch.Tensor,
    joint_onehot: torch.Tensor,
    alive: torch.Tensor,
    slots: torch.Tensor | slice,
    own_obs: torch.Tensor,
) -> torch.Tensor:
    """``q(critic_input(...)).squeeze(-1)``, (T, K), for one joint action per transition
    (``joint_onehot`` (T, N, N_ACTIONS)), without building ``critic_input``.

    The first layer is linear, so it splits by input block: ``W x = W_s s + W_m m + W_a a``
    (the same for every agent of a transition, computed once per transition) ``+ W_o o_i +
    W_e e_i`` (per agent). The state and the joint action are most of the input, so this skips
    repeating them, and their products, for each of the K agents evaluated: ~K× fewer FLOPs in
    the layer that dominates the critic's cost. Same parameters and result as the
    concatenated form.
    """
    context = critic_context(q, state, alive, slots, own_obs)
    return critic_q_in_context(q, context, joint_onehot, alive)


def critic_context(
    q: nn.Sequential,
    state: torch.Tensor,
    alive: torch.Tensor,
    slots: torch.Tensor | slice,
    own_obs: torch.Tensor,
) -> torch.Tensor:
    """The first layer's pre-activation without its joint-action term, (T, K, H):
    ``W_s s + W_m m + b + W_o o_i + W_e e_i``. The critic and actor losses evaluate the same
    agents in the same transitions with different joint actions, so they can share it."""
    first, n = q[0], alive.shape[1]
    sizes = [own_obs.shape[-1], state.shape[-1], n * N_ACTIONS, n, n]  # critic_input's blocks
    w_obs, w_state, _, w_alive, w_slot = torch.split(first.weight, sizes, dim=1)
    shared = F.linear(state, w_state) + F.linear(alive, w_alive, first.bias)  # (T, H)
    per_agent = F.linear(own_obs, w_obs) + w_slot[:, slots].T  # (T, K, H)
    return shared[:, None] + per_agent


def critic_q_in_context(
    q: nn.Sequential,
    context: torch.Tensor,
    joint_onehot: torch.Tensor,
    alive: torch.Tensor,
    own_actions: torch.Tensor | None = None,
    slots: torch.Tensor | slice | None = None,
) -> torch.Tensor:
    """``critic_q`` from its ``critic_context`` and the joint action ``joint_onehot``
    (T, N, N_ACTIONS), (T, K).

    With ``own_actions`` (T, K, N_ACTIONS), agent ``k`` (slot ``slots[k]``) is evaluated with
    its own slot's action replaced by ``own_actions[:, k]`` (the actor loss's differentiable
    action): the joint term is shared, plus ``W_a[slot k] (own_k − a_k)`` per agent."""
    T, N, A = joint_onehot.shape
    w_act = q[0].weight[:, -(N * A + 2 * N) : -2 * N]  # a, before the last blocks m, e_i
    joint = (joint_onehot * alive[..., None]).reshape(T, N * A)
    pre = context + F.linear(joint, w_act)[:, None]
    if own_actions is not None:
        w_own = w_act.reshape(-1, N, A)[:, slots]  # (H, K, A)
        delta = (own_actions - joint_onehot[:, slots]) * alive[:, slots, None]
        pre = pre + torch.einsum("tka,hka->tkh", delta, w_own)
    return q[1:](pre).squeeze(-1)
