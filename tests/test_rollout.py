"""The one rollout step and the one capture-rate definition (``bioflux.rollout``)."""

from __future__ import annotations

import numpy as np
import pytest

from bioflux.envs.config import N_ACTIONS, EnvConfig
from bioflux.envs.core import BatchedWorld
from bioflux.rollout import EpisodeRecord, EpisodeStats, capture_rate, play_step


class Always:
    """Always the same action."""

    def __init__(self, action: int):
        self.name = f"always{action}"
        self.action = action

    def probabilities(self, obs: np.ndarray) -> np.ndarray:
        p = np.zeros((len(obs), N_ACTIONS))
        p[:, self.action] = 1.0
        return p


def test_capture_rate_counts_newborn_prey_in_the_denominator():
    # 2 prey at the start, 2 born, 3 captured: 3/4, never 3/2
    record = EpisodeRecord(10, 3, 4, 2, (1.0,), (0.0, -1.0, -1.0, -1.0))
    assert record.capture_rate == pytest.approx(0.75)
    assert capture_rate(0, 0) == 0.0
    assert record.mean_return("prey") == pytest.approx(-0.75)
    assert record.total_return("prey") == pytest.approx(-3.0)


def test_episode_stats_record_newborns_and_returns():
    cfg = EnvConfig(
        height=8,
        width=8,
        n_predators=1,
        n_prey=2,
        max_prey=6,
        ecology=True,
        prey_birth_prob=1.0,
        wall_density=0.0,
        max_steps=5,
    )
    world = BatchedWorld(cfg, num_worlds=1, seed=0)
    world.reset(layout={"predators": [(0, 0)], "prey": [(5, 5), (5, 6)]})
    stats = EpisodeStats(world)
    res = world.step(np.zeros(world.alive.shape, dtype=np.int64))
    stats.update(res)
    record = stats.record(0)
    born_prey = int(res.born[0, world.n_pred_slots :].sum())
    assert born_prey > 0
    assert record.prey_total == 2 + born_prey
    assert len(record.prey_returns) == record.prey_total
    assert record.predator_returns == pytest.approx((cfg.reward_predator_step,))
    stats.reset([0])
    assert stats.captures[0] == 0 and not stats.agent_returns.any()


def test_play_step_gives_each_species_its_own_policy():
    cfg = EnvConfig(height=10, width=10, n_predators=1, n_prey=1, wall_density=0.0, max_steps=5)
    world = BatchedWorld(cfg, num_worlds=1, seed=0)
    world.reset(layout={"predators": [(5, 2)], "prey": [(5, 7)]})
    before = world.pos[0].copy()
    play_step(world, {"predator": Always(4), "prey": Always(1)}, np.random.default_rng(0))
    P = world.n_pred_slots
    assert tuple(world.pos[0, 0]) == (before[0, 0], before[0, 1] + 1)  # predator went right
    assert tuple(world.pos[0, P]) == (before[P, 0] - 1, before[P, 1])  # prey went up
