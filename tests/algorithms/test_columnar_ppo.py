"""The columnar PPO path: GAE on the EnvRunners equals RLlib's, batches go straight to SGD."""

from __future__ import annotations

import numpy as np
import pytest
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets

from bioflux import config
from bioflux.algorithms.ppo import build_config
from bioflux.algorithms.ppo.gae import dense_gae

GAMMA, LAMBDA = 0.97, 0.9


def _scenario(seed: int = 0):
    """Trajectories over T=10 steps, 2 worlds, 3 slots: (world, slot, steps, terminated)."""
    trajectories = [
        (0, 0, range(0, 10), False),  # runs past the fragment's end: cut, bootstrapped
        (0, 1, range(0, 5), True),  # captured mid-fragment: terminal
        (0, 2, range(3, 10), False),  # a newborn from step 3
        (1, 0, range(0, 6), False),  # the step limit at 5 truncates world 1 ...
        (1, 1, range(0, 6), False),
        (1, 2, range(0, 6), False),
        (1, 0, range(6, 10), False),  # ... which restarts: new trajectories, same slots
        (1, 1, range(6, 9), True),
    ]
    rng = np.random.default_rng(seed)
    T, B, N = 10, 2, 3
    dense = {
        "rewards": np.zeros((T, B, N), np.float32),
        "values": np.zeros((T, B, N), np.float32),
        "active": np.zeros((T, B, N), bool),
        "terminated": np.zeros((T, B, N), bool),
        "continues": np.zeros((T, B, N), bool),
        "bootstrap": np.zeros((T, B, N), np.float32),
    }
    boot = {}
    for i, (b, n, steps, terminal) in enumerate(trajectories):
        steps = list(steps)
        for t in steps:
            dense["active"][t, b, n] = True
            dense["rewards"][t, b, n] = rng.normal()
            dense["values"][t, b, n] = rng.normal()
            dense["continues"][t, b, n] = t != steps[-1]
        dense["terminated"][steps[-1], b, n] = terminal
        boot[i] = 0.0 if terminal else float(rng.normal())
        dense["bootstrap"][steps[-1], b, n] = boot[i]
    return trajectories, dense, boot


def test_dense_gae_equals_rllibs_value_targets_per_trajectory():
    trajectories, d, boot = _scenario()
    advantages, targets = dense_gae(
        d["rewards"],
        d["values"],
        d["active"],
        d["terminated"],
        d["continues"],
        d["bootstrap"],
        GAMMA,
        LAMBDA,
    )
    for i, (b, n, steps, terminal) in enumerate(trajectories):
        steps = list(steps)
        # RLlib's convention (AddOneTsToEpisodesAndTruncate): one extra timestep holding the
        # final observation's value; the last real step is terminated or truncated
        values = np.append(d["values"][steps, b, n], boot[i])
        rewards = np.append(d["rewards"][steps, b, n], 0.0)
        terminateds = np.zeros(len(steps) + 1)
        truncateds = np.zeros(len(steps) + 1)
        terminateds[len(steps) - 1] = terminal
        truncateds[len(steps) - 1] = not terminal
        truncateds[-1] = 1.0
        expected = compute_value_targets(values, rewards, terminateds, truncateds, GAMMA, LAMBDA)
        np.testing.assert_allclose(targets[steps, b, n], expected[:-1], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            advantages[steps, b, n], expected[:-1] - values[:-1], rtol=1e-5, atol=1e-5
        )
    assert not targets[~d["active"]].any() and not advantages[~d["active"]].any()


@pytest.fixture
def columnar(ray_session, tiny_config):
    tiny_config["resources"]["env_runner"] = "columnar"
    tiny_config["env"].update(ecology=True, max_steps=15)  # deaths, births, the step limit
    tiny_config["training"].update(train_batch_size=300, minibatch_size=64, num_epochs=2)
    algo = build_config(config.validate(tiny_config)).build_algo()
    yield algo
    algo.stop()


def test_the_runner_returns_consistent_training_columns(columnar):
    runner = columnar.env_runner_group.local_env_runner
    out = runner.sample_columnar(300)
    assert set(out) == {"predator", "prey"}
    rows = sum(len(cols[Postprocessing.ADVANTAGES]) for cols in out.values())
    assert rows >= 300
    for cols in out.values():
        n = len(cols["obs"])
        assert all(len(v) == n for v in cols.values())
        np.testing.assert_allclose(
            cols[Postprocessing.ADVANTAGES] + cols["vf_preds"],
            cols[Postprocessing.VALUE_TARGETS],
            atol=1e-5,
        )
        assert np.isfinite(cols[Postprocessing.VALUE_TARGETS]).all()


def test_training_updates_and_syncs_the_value_heads_to_the_runners(columnar):
    runner = columnar.env_runner_group.local_env_runner
    before = {k: v.copy() for k, v in runner.module["prey"].get_state().items()}
    result = columnar.train()
    assert np.isfinite(result["learners"]["prey"]["vf_loss"])
    learner_state = columnar.learner_group._learner.module["prey"].get_state()
    runner_state = runner.module["prey"].get_state()
    vf_keys = [k for k in learner_state if k.startswith("vf") or "critic" in k]
    assert vf_keys  # the value head exists on both sides
    for k in learner_state:
        np.testing.assert_allclose(runner_state[k], learner_state[k], atol=1e-6)
    assert any(not np.allclose(before[k], runner_state[k]) for k in vf_keys)


def _logp(module, state, obs, actions):
    import torch

    current = {k: v.clone() for k, v in module.state_dict().items()}
    module.load_state_dict(state)
    with torch.no_grad():
        logits = module.forward_inference({"obs": obs})["action_dist_inputs"]
    module.load_state_dict(current)
    return torch.log_softmax(logits, -1).gather(-1, actions[:, None])[:, 0]


@pytest.mark.parametrize("ahead", [False, True])
def test_sample_ahead_trains_each_batch_one_update_late(ray_session, tiny_config, ahead):
    tiny_config["resources"].update(env_runner="columnar", num_env_runners=1)
    tiny_config["training"].update(train_batch_size=200, minibatch_size=100, sample_ahead=ahead)
    algo = build_config(config.validate(tiny_config)).build_algo()
    learner = algo.learner_group._learner
    module = learner.module["prey"]
    make_batch, states, batches = learner._make_batch_if_necessary, [], []

    def capture(**kwargs):  # the learner's weights before each update, and what it trains on
        batch = make_batch(**kwargs)
        states.append({k: v.clone() for k, v in module.state_dict().items()})
        prey = batch.policy_batches["prey"]
        batches.append((prey["obs"].clone(), prey["actions"].clone(), prey["action_logp"]))
        return batch

    learner._make_batch_if_necessary = capture
    try:
        for _ in range(3):
            result = algo.train()
            assert result["learners"]["prey"]["num_module_steps_trained"] > 0
        obs, actions, logp = batches[2]
        sampler = states[1] if ahead else states[2]  # the weights the EnvRunner held
        other = states[2] if ahead else states[1]
        assert np.allclose(_logp(module, sampler, obs, actions), logp, atol=1e-5)
        assert not np.allclose(_logp(module, other, obs, actions), logp, atol=1e-5)
    finally:
        algo.stop()


def test_sample_ahead_needs_remote_columnar_runners(tiny_config):
    tiny_config["training"]["sample_ahead"] = True
    with pytest.raises(ValueError, match="sample_ahead"):
        build_config(config.validate(tiny_config))
