"""``PPOConfig`` whose ``minibatch_size`` counts agent rows even when batches count env steps."""

from __future__ import annotations

from ray.rllib.algorithms.ppo import PPOConfig


class AgentRowMinibatchPPOConfig(PPOConfig):
    """PPO config for multi-agent batches counted in env steps (``count_steps_by="env_steps"``).

    RLlib's Learner slices each module's batch into ``minibatch_size`` *agent rows*, but PPO's
    validator compares ``minibatch_size`` with the train batch in the counting unit; with env
    steps (one env step = up to N agent rows) that check would force minibatches N times
    smaller than the experiment asks for, and the stock MultiAgentEnvRunner path would do
    N times more, smaller SGD steps than the batched path with the same config.
    """

    def validate(self) -> None:
        if self.count_steps_by != "env_steps":
            return super().validate()
        minibatch_size, self.minibatch_size = self.minibatch_size, None
        try:
            super().validate()
        finally:
            self.minibatch_size = minibatch_size
