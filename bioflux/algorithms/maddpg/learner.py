"""MADDPG's TorchLearner: critic and actor losses on joint transitions, soft target updates.

For species ``k`` (actor π_k, critic Q_k, targets π'_k, Q'_k) and each agent ``i`` of ``k``
alive in a replayed transition:

- critic: ``y_i = r_i + γ (1 − terminated_i) Q'_k(o'_i, s', a', m', e_i)`` with
  ``a'_j = onehot(argmax π'_{k(j)}(o'_j))`` for the agents alive in ``s'``; loss
  ``mean (Q_k(o_i, s, a, m, e_i) − y_i)²``;
- actor: ``a`` with agent ``i``'s action replaced by ``gumbel_softmax(π_k(o_i), τ_g, hard=True)``
  (straight-through: gradients reach the actor); loss ``−mean Q_k(...)`` plus a small logit
  penalty. Critic weights are frozen while the actor loss is built, so each optimizer only
  sees its own loss; the first layer's terms without the action (``critic_context``) are the
  critic loss's, detached;
- then ``θ' ← τ θ + (1 − τ) θ'`` for every target network.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ray.rllib.core.learner.torch.torch_learner import TorchLearner

from bioflux.algorithms.maddpg.modules import (
    critic_context,
    critic_q,
    critic_q_in_context,
    soft_update,
)
from bioflux.algorithms.maddpg.replay import COMPACT_FIELDS
from bioflux.envs.config import N_ACTIONS, SPECIES, EnvConfig
from bioflux.envs.torch_core import ViewEncoder


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
        raise NotImplementedError("MADDPG updates through update_joint(batches)")

    def _species_slots(self, n_slots: int) -> dict[str, slice]:
        """Each species' slots, predators first."""
        P = EnvConfig.from_kwargs(dict(self.config.env_config)).max_predators
        return {"predator": slice(0, P), "prey": slice(P, n_slots)}

    def losses(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.config
        T, N = b["actions"].shape
        slots = self._species_slots(N)
        onehot = F.one_hot(b["actions"].long(), N_ACTIONS).float()  # (T, N, N_ACTIONS)
        alive, next_alive = b["alive"].float(), b["next_alive"].float()
        # each species' observations (T, K, D), contiguous: each is used two or three times
        obs = {s: b["obs"][:, idx].contiguous() for s, idx in slots.items()}
        next_obs = {s: b["next_obs"][:, idx].contiguous() for s, idx in slots.items()}
        with torch.no_grad():
            next_onehot = torch.zeros_like(onehot)
            for species, idx in slots.items():
                logits = self.module[species].pi_target(next_obs[species])
                next_onehot[:, idx] = F.one_hot(logits.argmax(-1), N_ACTIONS).float()
        losses = {}
        for species, idx in slots.items():
            critic = self.module[critic_id(species)]
            # critic
            state = critic.encode_state(b["state"])
            context = critic_context(critic.q, state, alive, idx, obs[species])  # (T,K,H)
            q = critic_q_in_context(critic.q, context, onehot, alive)  # (T, K)
            with torch.no_grad():
                q_next = critic_q(
                    critic.q_target,
                    critic.encode_state(b["next_state"]),
                    next_onehot,
                    next_alive,
                    idx,
                    next_obs[species],
                )
                y = (
                    b["rewards"][:, idx]
                    + cfg.gamma * (1 - b["terminated"][:, idx].float()) * q_next
                )
            mask = alive[:, idx]
            denom = mask.sum().clamp(min=1)
            losses[critic_id(species)] = (((q - y) ** 2) * mask).sum() / denom
            # actor: the critic is frozen (its weights only get the critic loss), and the
            # context, which holds no action, is the critic's own, detached
            actor = self.module[species]
            logits = actor.pi(obs[species])  # (T, K, N_ACTIONS)
            soft = F.gumbel_softmax(logits, tau=cfg.gumbel_temperature, hard=True)
            critic.q.requires_grad_(False)
            q_pi = critic_q_in_context(critic.q, context.detach(), onehot, alive, soft, idx)
            critic.q.requires_grad_(True)
            reg = cfg.logit_penalty * (logits**2).mean(-1)
            losses[species] = ((-q_pi + reg) * mask).sum() / denom
        return losses

    def update_joint(self, batches: list[dict[str, np.ndarray]]) -> dict[str, list[float]]:
        """One gradient step for every actor and critic per replayed batch, each followed by
        the soft target updates. One call for all of an iteration's steps (one round trip to a
        remote learner); each module's loss per step, read back from the device once."""
        per_step = [self._gradient_step(self._on_device(batch)) for batch in batches]
        return {k: torch.stack([s[k] for s in per_step]).tolist() for k in per_step[0]}

    def _on_device(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """The replayed arrays as tensors on the learner's device, with the views re-encoded
        there from the compact world states (``replay``): ``obs``/``next_obs`` of every slot
        (zero where the slot did not act / was not observed after the step, as the runner
        observes) and the flattened global states ``state``/``next_state``."""
        t = {k: torch.as_tensor(v, device=self._device) for k, v in batch.items()}
        if "walls" not in t:  # views already (hand-built batches)
            return {k: v.float() if v.dtype == torch.float16 else v for k, v in t.items()}
        encoder = getattr(self, "_encoder", None)
        if encoder is None:
            env = EnvConfig.from_kwargs(dict(self.config.env_config))
            encoder = self._encoder = ViewEncoder(env, self._device)
        obs, state = encoder.encode(t["walls"], t["pos"], t["alive"], t["energy"])
        next_obs, next_state = encoder.encode(
            t["walls"], t["next_pos"], t["next_alive"], t["next_energy"]
        )
        out = {k: v for k, v in t.items() if k not in COMPACT_FIELDS}
        out.update(
            obs=obs * t["alive"][..., None],
            state=state,
            next_obs=next_obs * t["next_seen"][..., None],
            next_state=next_state,
        )
        return out

    def _gradient_step(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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
        return {k: v.detach() for k, v in losses.items()}

    def soft_update(self, tau: float) -> None:
        for species in SPECIES:
            soft_update(self.module[species].pi_target, self.module[species].pi, tau)
            critic = self.module[critic_id(species)]
            soft_update(critic.q_target, critic.q, tau)
