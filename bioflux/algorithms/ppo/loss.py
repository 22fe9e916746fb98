"""PPO's loss: the clipped surrogate, the clipped value loss, the entropy bonus and the KL
penalty, per module (RLlib's ``PPOTorchLearner.compute_loss_for_module``, the same arithmetic).

It is written to run inside a CUDA graph (``captured_sgd_step``), so without host syncs: RLlib
builds two constants per call with ``torch.tensor(..., device=...)`` (a blocking copy each),
masks with boolean indexing, and computes the logged statistics on every minibatch. Here masks
multiply, and the statistics are computed only when asked for (``with_stats``: the learner logs
them for the last minibatch of an update, the only one RLlib reports).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from ray.rllib.algorithms.ppo.ppo import (
    LEARNER_RESULTS_KL_KEY,
    LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY,
    LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY,
)
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.numpy import SMALL_NUMBER
from torch.distributions import Categorical

from bioflux.algorithms.ppo.captured_sgd_step import ROW_VALID


def ppo_loss(
    module: Any,
    config: Any,
    batch: dict[str, Any],
    fwd_out: dict[str, Any],
    *,
    entropy_coeff: Any,
    kl_coeff: Any = None,
    with_stats: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """The loss of one module's minibatch, and (``with_stats``) the statistics RLlib logs.

    ``config``: the module's PPO config (``clip_param``, ``use_critic``, ``vf_clip_param``,
    ``vf_loss_coeff``, ``use_kl_loss``); ``entropy_coeff``: the current entropy weight;
    ``kl_coeff``: the current KL weight (read only with ``use_kl_loss``)."""
    if Columns.LOSS_MASK in batch:
        mask = batch[Columns.LOSS_MASK]
        num_valid = torch.sum(mask)

        def mean(x: torch.Tensor) -> torch.Tensor:
            return torch.sum(torch.where(mask, x, 0.0)) / num_valid
    else:
        mean = torch.mean
    curr = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
    logp_ratio = torch.exp(curr.logp(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP])
    entropy = curr.entropy()
    advantages = batch[Postprocessing.ADVANTAGES]
    surrogate = torch.min(
        advantages * logp_ratio,
        advantages * torch.clamp(logp_ratio, 1 - config.clip_param, 1 + config.clip_param),
    )
    per_row = -surrogate - entropy_coeff * entropy
    values = vf_loss = vf_clipped = None
    if config.use_critic:
        values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
        vf_loss = torch.pow(values - batch[Postprocessing.VALUE_TARGETS], 2.0)
        vf_clipped = torch.clamp(vf_loss, 0, config.vf_clip_param)
        per_row = -surrogate + config.vf_loss_coeff * vf_clipped - entropy_coeff * entropy
    total = mean(per_row)
    mean_kl = None
    if config.use_kl_loss:
        prev = module.get_exploration_action_dist_cls().from_logits(
            batch[Columns.ACTION_DIST_INPUTS]
        )
        mean_kl = mean(kl_divergence(prev, curr))
        total = total + kl_coeff * mean_kl
    if not with_stats:
        return total, None
    zero = total.new_zeros(())
    return total, {
        POLICY_LOSS_KEY: -mean(surrogate),
        VF_LOSS_KEY: zero if vf_clipped is None else mean(vf_clipped),
        LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY: zero if vf_loss is None else mean(vf_loss),
        LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY: explained_variance(
            batch[Postprocessing.VALUE_TARGETS],
            zero if values is None else values,
            batch.get(ROW_VALID),
        ),
        ENTROPY_KEY: mean(entropy),
        LEARNER_RESULTS_KL_KEY: zero if mean_kl is None else mean_kl,
    }


def explained_variance(
    y: torch.Tensor, pred: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """RLlib's ``explained_variance`` (``max(-1, 1 - Var[y - pred] / Var[y])``, unbiased
    variances), without its host→device copy, over the ``valid`` rows when given (padding)."""
    y = y.squeeze()
    diff = y - pred.squeeze()
    if valid is None:
        y_var, diff_var = torch.var(y, dim=0), torch.var(diff, dim=0)
    else:
        y_var, diff_var = _masked_var(y, valid), _masked_var(diff, valid)
    return torch.clamp(1 - diff_var / (y_var + SMALL_NUMBER), min=-1.0)


def kl_divergence(prev: Any, curr: Any) -> torch.Tensor:
    """``prev.kl(curr)``; for two categorical distributions torch's formula with ``where``
    instead of its boolean-mask assignments (each a host sync, not capturable)."""
    p, q = getattr(prev, "_dist", None), getattr(curr, "_dist", None)
    if not (isinstance(p, Categorical) and isinstance(q, Categorical)):
        return prev.kl(curr)
    t = p.probs * (p.logits - q.logits)
    t = torch.where((q.probs == 0).expand_as(t), math.inf, t)
    t = torch.where((p.probs == 0).expand_as(t), 0.0, t)
    return t.sum(-1)


def _masked_var(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    n = torch.sum(valid)
    mean = torch.sum(torch.where(valid, x, 0.0)) / n
    return torch.sum(torch.where(valid, (x - mean) ** 2, 0.0)) / (n - 1)
