"""The epsilon-greedy Q-network module (see the package docstring)."""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.dqn.torch.default_dqn_torch_rl_module import (
    DefaultDQNTorchRLModule,
)
from ray.rllib.core.columns import Columns


class EpsilonGreedyQModule(DefaultDQNTorchRLModule):
    """DQN Q-network; greedy in inference, epsilon-greedy in exploration (see module doc)."""

    deterministic = True

    def _forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        q = self.compute_q_values(batch)["qf_preds"]
        return {Columns.ACTIONS: q.argmax(-1), Columns.ACTION_DIST_INPUTS: q}
