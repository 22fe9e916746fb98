"""Training metrics at every scale: windowed episode means and dense per-step rates."""

from __future__ import annotations

import pytest

from bioflux import config, training
from bioflux.artifacts import RunFolder


def test_windowed_mean_weights_iterations_by_their_episodes():
    rows = [
        {"episodes_iter": 0, "capture_rate_iter": None},
        {"episodes_iter": 2, "capture_rate_iter": 0.5},
        {"episodes_iter": 0, "capture_rate_iter": None},
        {"episodes_iter": 6, "capture_rate_iter": 0.1},
    ]
    assert training.windowed(rows[:1], "capture_rate") is None  # nothing ended yet
    assert training.windowed(rows[:3], "capture_rate") == pytest.approx(0.5)
    assert training.windowed(rows, "capture_rate") == pytest.approx((2 * 0.5 + 6 * 0.1) / 8)
    # a window of 5 episodes stops at the last row, which already holds 6
    assert training.windowed(rows, "capture_rate", episodes=5) == pytest.approx(0.1)


def test_every_iteration_has_values_when_episodes_outlast_iterations(
    ray_session, tiny_config, tmp_path
):
    # 100-step episodes, ~40 env steps per iteration: most iterations end no episode
    tiny_config["env"]["max_steps"] = 100
    tiny_config["training"]["train_batch_size"] = 240
    tiny_config["stop"] = {"iterations": 8}
    tiny_config["checkpoint"] = {"frequency": 100, "keep": 1}
    exp = config.validate(tiny_config)
    training.train(exp, output=tmp_path / "runs", models=tmp_path / "models", log=lambda _: None)
    rows = RunFolder(tmp_path / "runs" / exp.name).read_metrics()
    assert len(rows) == 8
    assert any(r["episodes_iter"] == 0 for r in rows)  # the case being tested happened
    for r in rows:  # dense rates exist from the first iteration
        assert r["predator_reward_per_step"] is not None
        assert r["prey_reward_per_step"] is not None
        assert r["captures_per_1k_agent_steps"] is not None
    first = next(i for i, r in enumerate(rows) if r["episodes_iter"] > 0)
    for r in rows[first:]:  # windowed means never drop out once an episode has ended
        assert r["predator_return"] is not None and r["capture_rate"] is not None
    assert set(rows[0]) == set(training.ITERATION_KEYS)
