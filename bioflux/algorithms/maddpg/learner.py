"""MADDPG's TorchLearner: critic and actor losses on joint transitions, soft target updates.

For species ``k`` (actor π_k, critic Q_k, targets π'_k, Q'_k) and each agent ``i`` of ``k``
alive in a replayed transition:

- critic: ``y_i = r_i + γ (1 − terminated_i) Q'_k(o'_i, s', a', m', e_i)`` with
  ``a'_j = onehot(argmax π'_{k(j)}(o'_j))`` for the agents alive in ``s'``; loss
  ``mean (Q_k(o_i, s, a, m, e_i) − y_i)²``;
- actor: ``a`` with agent ``i``'s action replaced by ``gumbel_softmax(π_k(o_i), τ_g, hard=True)``
  (straight-through: gradients reach the actor); loss ``−mean Q_k(...)`` plus a small logit
  penalty. Critic weights are frozen while the actor loss is built, so each optimizer only
  sees its own loss;
- then ``θ' ← τ θ + (1 − τ) θ'`` for every target network.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ray.rllib.core.learner.torch.torch_learner import TorchLearner

from bioflux.algorithms.maddpg.modules import critic_q, soft_update
from bioflux.envs.config import N_ACTIONS, SPECIES, EnvConfig


def critic_id(species: str) -> str:
    return f"{species}_critic"


class MADDPGTorchLearner(TorchLearner):
    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        module = self.module[module_id]
        if module_id.endswith("_critic"):
            params, lr = list(module.q.parameters()), config.critic_lr
        else:
            params, lr = list(module.pi.parameters()), config.actor_lr
        self.register_optimizer(
            module_id=module_id,
            optimizer=torch.optim.Adam(params),
            params=params,
            lr_or_lr_schedule=lr,
        )

    def compute_loss_for_module(self, **kwargs: Any):
        raise NotImplementedError("MADDPG updates through update_joint(batch)")

    def _species_slots(self, n_slots: int) -> dict[str, torch.Tensor]:
        P = EnvConfig.from_kwargs(dict(self.config.env_config)).max_predators
        return {"predator": torch.arange(0, P), "prey": torch.arange(P, n_slots)}

    def losses(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.config
        T, N = b["actions"].shape
        slots = self._species_slots(N)
        onehot = F.one_hot(b["actions"].long(), N_ACTIONS).float()  # (T, N, N_ACTIONS)
        alive, next_alive = b["alive"].float(), b["next_alive"].float()
        with torch.no_grad():
            next_onehot = torch.zeros_like(onehot)
            for species, idx in slots.items():
                actor = self.module[species]
                logits = actor.pi_target(b["next_obs"][:, idx])
                next_onehot[:, idx] = F.one_hot(logits.argmax(-1), N_ACTIONS).float()
        losses = {}
        for species, idx in slots.items():
            critic = self.module[critic_id(species)]
            K = len(idx)
            # critic
            q = critic_q(
                critic.q,
                b["state"],
                onehot[:, None].expand(T, K, N, N_ACTIONS),
                alive,
                idx,
                b["obs"][:, idx],
            )  # (T, K)
            with torch.no_grad():
                q_next = critic_q(
                    critic.q_target,
                    b["next_state"],
                    next_onehot[:, None].expand(T, K, N, N_ACTIONS),
                    next_alive,
                    idx,
                    b["next_obs"][:, idx],
                )
                y = (
                    b["rewards"][:, idx]
                    + cfg.gamma * (1 - b["terminated"][:, idx].float()) * q_next
                )
            mask = alive[:, idx]
            denom = mask.sum().clamp(min=1)
            losses[critic_id(species)] = (((q - y) ** 2) * mask).sum() / denom
            # actor (critic frozen so its weights only get the critic loss)
            actor = self.module[species]
            logits = actor.pi(b["obs"][:, idx])  # (T, K, N_ACTIONS)
            soft = F.gumbel_softmax(logits, tau=cfg.gumbel_temperature, hard=True)
            eye = torch.eye(N)[idx][None, :, :, None]  # (1, K, N, 1)
            joint = onehot[:, None] * (1 - eye) + eye * soft[:, :, None, :]
            critic.q.requires_grad_(False)
            q_pi = critic_q(critic.q, b["state"], joint, alive, idx, b["obs"][:, idx])
            critic.q.requires_grad_(True)
            reg = cfg.logit_penalty * (logits**2).mean(-1)
            losses[species] = ((-q_pi + reg) * mask).sum() / denom
        return losses

    def update_joint(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        """One gradient step for every actor and critic, then soft target updates."""
        b = {
            k: torch.as_tensor(
                np.asarray(v, dtype=np.float32 if v.dtype == np.float16 else v.dtype)
            )
            for k, v in batch.items()
        }
        losses = self.losses(b)
        for optim in self._named_optimizers.values():
            optim.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        for optim in self._named_optimizers.values():
            params = [p for g in optim.param_groups for p in g["params"]]
            if self.config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
            optim.step()
        self.soft_update(self.config.tau)
        return {k: float(v.detach()) for k, v in losses.items()}

    def soft_update(self, tau: float) -> None:
        for species in SPECIES:
            soft_update(self.module[species].pi_target, self.module[species].pi, tau)
            critic = self.module[critic_id(species)]
            soft_update(critic.q_target, critic.q, tau)
