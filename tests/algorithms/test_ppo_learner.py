"""PPO's learner set-up: minibatches in agent rows on every EnvRunner path; bfloat16 learner."""

import numpy as np
import torch

from bioflux import config
from bioflux.algorithms.bf16_learner import BF16PPOTorchLearner
from bioflux.algorithms.ppo import build_config


def test_multi_agent_runner_keeps_minibatch_in_agent_rows(tiny_config):
    tiny_config["training"].update(train_batch_size=1200, minibatch_size=600)
    tiny_config["resources"]["env_runner"] = "multi_agent"
    cfg = build_config(config.validate(tiny_config))
    assert cfg.count_steps_by == "env_steps"
    assert cfg.train_batch_size_per_learner == 200  # 1200 agent-steps / 6 agents
    assert cfg.minibatch_size == 600  # agent rows, as on the batched path
    cfg.validate()  # RLlib's own check (600 > 200 "env steps") would reject this


def test_minibatch_is_capped_by_the_train_batch(tiny_config):
    tiny_config["training"].update(train_batch_size=300, minibatch_size=5000)
    for runner in ("batched", "multi_agent"):
        tiny_config["resources"]["env_runner"] = runner
        assert build_config(config.validate(tiny_config)).minibatch_size == 300


def test_bfloat16_learner_runs_the_forward_in_bf16_and_keeps_float32_weights(
    ray_session, tiny_config
):
    tiny_config["training"]["learner_precision"] = "bfloat16"
    cfg = build_config(config.validate(tiny_config))
    assert cfg.learner_class is BF16PPOTorchLearner
    algo = cfg.build_algo()
    try:
        module = algo.learner_group._learner.module["predator"]
        before = {k: v.clone() for k, v in module.state_dict().items()}
        dtypes: set[torch.dtype] = set()
        for layer in module.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
        result = algo.train()
        assert torch.bfloat16 in dtypes  # the encoders (float32: GAE's value pass, heads)
        after = module.state_dict()
        assert all(v.dtype == torch.float32 for v in after.values())
        assert any(not torch.equal(before[k], after[k]) for k in before)
        losses = result["learners"]["predator"]
        assert np.isfinite(losses["policy_loss"]) and np.isfinite(losses["vf_loss"])
    finally:
        algo.stop()


def test_float32_is_the_default(tiny_config):
    cfg = build_config(config.validate(tiny_config))
    assert cfg.learner_class is not BF16PPOTorchLearner
