"""Epsilon-greedy Q-networks trained by RLlib's DQN: epsilon decays, greedy evaluation,
checkpoint/restore gives identical actions."""

import copy

import numpy as np
import pytest

from bioflux import config, evaluation, training
from bioflux.algorithms import get_algorithm
from bioflux.policies import load_policy
from tests.conftest import TINY


def eg_config(env_runner: str = "multi_agent"):
    cfg = copy.deepcopy(TINY)
    cfg["algorithm"] = "epsilon_greedy"
    cfg["training"] = {
        "epsilon_timesteps": 1000,
        "steps_per_iteration": 100,
        "epsilon_end": 0.1,
        "learning_starts": 50,
        "train_batch_size": 32,
        "rollout_fragment_length": 10,
        "target_network_update_freq": 50,
        "hidden": [32],
    }
    cfg["resources"] = {
        "env_runner": env_runner,
        "num_env_runners": 0,
        "num_envs_per_env_runner": 1,
    }
    cfg["stop"] = {"iterations": 30}
    return cfg


RUNNERS = pytest.mark.parametrize("env_runner", ["multi_agent", "columnar"])


@RUNNERS
def test_epsilon_decays_and_learning_runs(ray_session, env_runner):
    exp = config.validate(eg_config(env_runner))
    algo = get_algorithm("epsilon_greedy").build_config(exp).build_algo()
    try:
        module = algo.env_runner.module["predator"]
        values = []
        for _ in range(6):
            result = algo.train()
            values.append(float(module.epsilon_schedule.get_current_value()))
        assert all(a > b for a, b in zip(values, values[1:])), values
        assert 1.0 > values[0] and values[-1] >= 0.1
        assert algo.env_runner.module["prey"].epsilon_schedule.get_current_value() < 1.0
        learner = result["learners"]["predator"]
        assert "qf_loss" in learner or any("loss" in k for k in learner)
    finally:
        algo.stop()


def test_bad_runner_choice_is_rejected():
    cfg = eg_config()
    cfg["resources"]["env_runner"] = "batched"
    with pytest.raises(ValueError, match="multi_agent"):
        get_algorithm("epsilon_greedy").build_config(config.validate(cfg))


@RUNNERS
def test_checkpoint_restores_identical_greedy_actions(ray_session, tmp_path, env_runner):
    cfg = eg_config(env_runner)
    cfg["stop"] = {"iterations": 5}
    exp = config.validate(cfg)
    training.train(exp, output=tmp_path / "runs", models=tmp_path / "models", log=lambda _: None)
    a = load_policy(tmp_path / "models" / "epsilon_greedy" / "tiny", "prey")
    b = load_policy(tmp_path / "runs" / "tiny" / "checkpoints" / "final", "prey")
    assert a.deterministic and type(a.module).__name__ == "EpsilonGreedyQModule"
    obs = np.random.default_rng(0).random((64, 5, 5, 4)).astype(np.float32)
    assert np.array_equal(a.probabilities(obs).argmax(1), b.probabilities(obs).argmax(1))
    # greedy at evaluation: the same seed gives the same result, whatever sampling would do
    r1 = evaluation.evaluate(
        tmp_path / "models" / "epsilon_greedy" / "tiny",
        "random",
        exp.env_config,
        episodes=4,
        seed=3,
    )
    r2 = evaluation.evaluate(
        tmp_path / "models" / "epsilon_greedy" / "tiny",
        "random",
        exp.env_config,
        episodes=4,
        seed=3,
    )
    assert r1["metrics"] == r2["metrics"]
