"""PPO's sampler on the learner's device (``resources.env_device`` with ``env_runner:
columnar``): ``ColumnarPPO`` then has no EnvRunners. Each iteration it

1. steps ``resources.num_envs_per_env_runner`` worlds of ``envs.torch_core.TorchWorld`` on
   the device, with every slot's observation cut there (``observe_all``);
2. runs each species' module from the learner itself for its logits and values, and samples
   actions there (Gumbel-max, the same distribution as ``Categorical.sample``);
3. computes advantages and value targets with ``gae.dense_gae_torch``, with the masks of the
   columnar EnvRunner (a death is terminal; the step limit and the fragment's end bootstrap
   from the value of the observation after the step; newborns and reset worlds start fresh
   trajectories);
4. hands the learner a ``MultiAgentBatch`` of device tensors (advantages standardised per
   module over real rows, as ``algorithm.train_batch`` does), so ``learner.update`` runs SGD
   on it with no host round trip.

See ``algorithms.shared.device_world`` for what RLlib still does on this path.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from bioflux.algorithms.ppo.gae import dense_gae_torch
from bioflux.algorithms.shared.device_world import DeviceWorldSampler
from bioflux.envs.config import EnvConfig


class DeviceRolloutSampler(DeviceWorldSampler):
    """PPO: ``sample(n)`` returns at least ``n`` agent-steps as a learner-ready
    ``MultiAgentBatch`` (advantages and value targets computed on the device)."""

    def __init__(
        self, env_config: EnvConfig, modules: Any, *, gamma: float, lambda_: float, **kwargs: Any
    ):
        super().__init__(env_config, modules, **kwargs)
        self.gamma, self.lambda_ = gamma, lambda_
        #: keep the last fragment's dense arrays (no observations) in ``last_fragment``
        self.keep_fragment = False
        self.last_fragment: dict[str, torch.Tensor] = {}

    # --------------------------------------------------------------- the policy
    @torch.no_grad()
    def _forward(self, obs: torch.Tensor):
        """Logits ``(B, N, A)`` and values ``(B, N)`` of every slot (each species' module
        once on all its slots)."""
        B, N, D = obs.shape
        logits = values = None
        for species, sl in self._slots.items():
            module = self.modules[species]
            batch = {Columns.OBS: obs[:, sl].reshape(-1, D)}
            out = module.forward_exploration(batch)
            lg = out[Columns.ACTION_DIST_INPUTS].float()
            if logits is None:
                logits = obs.new_zeros((B, N, lg.shape[-1]))
                values = obs.new_zeros((B, N))
            logits[:, sl] = lg.view(B, -1, lg.shape[-1])
            if hasattr(module, "compute_values"):
                values[:, sl] = module.compute_values(batch).float().view(B, -1)
        return logits, values

    def _act(self, logits: torch.Tensor):
        u = torch.rand(logits.shape, generator=self._gen, device=self.device)
        actions = torch.argmax(logits - torch.log(-torch.log(u.clamp(min=1e-20))), dim=-1)
        logp = torch.log_softmax(logits, dim=-1).gather(-1, actions[..., None])[..., 0]
        return actions, logp

    # ----------------------------------------------------------------- sampling
    def sample(self, num_agent_steps: int) -> MultiAgentBatch:
        w = self.world
        B, N = w.alive.shape
        steps: dict[str, list[torch.Tensor]] = {
            k: []
            for k in (
                "obs",
                "actions",
                "logp",
                "logits",
                "values",
                "rewards",
                "active",
                "terminated",
                "continues",
                "bootstrap",
                "truncated",
            )
        }
        env_steps = 0
        sampled = 0
        pending_truncated = None
        while sampled < num_agent_steps:
            obs = self._observe()
            logits, values = self._forward(obs)
            if pending_truncated is not None:  # the final observation of the step before
                steps["bootstrap"][-1] = torch.where(pending_truncated, values, 0.0)
            actions, logp = self._act(logits)
            res, acting, was_done = self._step(actions)
            for k, v in (
                ("obs", obs),
                ("actions", actions),
                ("logp", logp),
                ("logits", logits),
                ("values", values),
                ("rewards", res.rewards),
                ("active", acting),
                ("terminated", res.terminated),
            ):
                steps[k].append(v)
            steps["continues"].append(acting & ~(res.terminated | res.truncated))
            steps["truncated"].append(res.truncated)
            steps["bootstrap"].append(torch.zeros_like(values))
            pending_truncated = res.truncated
            # the one sync per step: agent-steps, and worlds that stepped (RLlib's env steps)
            n, worlds = torch.stack([acting.sum(), acting.any(dim=1).sum()]).tolist()
            sampled += n
            env_steps += worlds
            self._finish(was_done)
        # the fragment ends: running and just-truncated trajectories bootstrap from now
        _, values = self._forward(self._observe())
        last = steps["continues"][-1] | pending_truncated
        steps["bootstrap"][-1] = torch.where(last, values, 0.0)
        steps["continues"][-1] = torch.zeros_like(last)
        dense = {k: torch.stack(v) for k, v in steps.items()}
        if self.keep_fragment:
            self.last_fragment = {k: v for k, v in dense.items() if k != "obs"}
            self.last_fragment["final_values"] = values
        adv, targets = dense_gae_torch(
            dense["rewards"],
            dense["values"],
            dense["active"],
            dense["terminated"],
            dense["continues"],
            dense["bootstrap"],
            self.gamma,
            self.lambda_,
        )
        self._log_counts(dense["active"], dense["rewards"], env_steps)
        batches = {}
        for species in self.train_species:
            sl = self._slots.get(species)
            if sl is None:
                continue
            mask = dense["active"][:, :, sl]
            if not bool(mask.any()):
                continue
            a = adv[:, :, sl][mask]
            batches[species] = SampleBatch(
                {
                    Columns.OBS: dense["obs"][:, :, sl][mask],
                    Columns.ACTIONS: dense["actions"][:, :, sl][mask],
                    Columns.ACTION_LOGP: dense["logp"][:, :, sl][mask],
                    Columns.ACTION_DIST_INPUTS: dense["logits"][:, :, sl][mask],
                    Columns.VF_PREDS: dense["values"][:, :, sl][mask],
                    Postprocessing.ADVANTAGES: (a - a.mean())
                    / torch.clamp(a.std(unbiased=False), min=1e-4),
                    Postprocessing.VALUE_TARGETS: targets[:, :, sl][mask],
                }
            )
        env = max((len(b) for b in batches.values()), default=0)
        return MultiAgentBatch(batches, env_steps=env)
