"""Ecology-mode knobs on the batched core: prey carrying capacity, natal dispersal, slot reuse."""

import numpy as np
import pytest

from bioflux.envs import predator_prey_v0
from bioflux.envs.config import EnvConfig
from bioflux.envs.core import BatchedWorld

STAY = 0


def world(layout: dict, num_worlds: int = 1, seed: int = 0, **kwargs) -> BatchedWorld:
    cfg = dict(height=20, width=20, n_predators=1, n_prey=1, wall_density=0.0, ecology=True)
    w = BatchedWorld(EnvConfig(**{**cfg, **kwargs}), num_worlds=num_worlds, seed=seed)
    w.reset(layout=layout)
    return w


def stay(w: BatchedWorld):
    return w.step(np.full(w.alive.shape, STAY))


def test_prey_capacity_scales_births_logistically():
    # 10 prey, K = 20: each gives birth with probability 0.8 * (1 - 10/20) = 0.4
    prey = [(r, c) for r in range(0, 20, 4) for c in (0, 10)]
    w = world(
        {"predators": [(19, 19)], "prey": prey, "energy": [1e6]},
        num_worlds=400,
        energy_decay=0.0,
        reproduce_energy=1e9,
        prey_birth_prob=0.8,
        prey_capacity=20,
        max_prey=40,
    )
    res = stay(w)
    rate = res.born[:, w.n_pred_slots :].sum() / (400 * len(prey))
    assert rate == pytest.approx(0.4, abs=0.03)


def test_no_prey_births_at_or_above_capacity():
    prey = [(r, 0) for r in range(10)]
    w = world(
        {"predators": [(19, 19)], "prey": prey, "energy": [1e6]},
        energy_decay=0.0,
        reproduce_energy=1e9,
        prey_birth_prob=1.0,
        prey_capacity=10,
        max_prey=30,
    )
    for _ in range(5):
        assert not stay(w).born.any()
    assert w.populations()[0, 1] == 10


def test_predator_crowding_raises_the_energy_loss_with_the_predators_density():
    # 4 predators, crowding 8: each loses 0.5 * (1 + 4/8) = 0.75 per step
    preds = [(0, 0), (0, 10), (10, 0), (10, 10)]
    w = world(
        {"predators": preds, "prey": [(19, 19)], "energy": [5.0] * 4},
        n_predators=4,
        energy_decay=0.5,
        predator_crowding=8.0,
        reproduce_energy=100.0,
        prey_birth_prob=0.0,
    )
    stay(w)
    np.testing.assert_allclose(w.energy[0, :4], 5.0 - 0.75, rtol=1e-6)
    # one predator alone loses 0.5 * (1 + 1/8)
    w1 = world(
        {"predators": [(0, 0)], "prey": [(19, 19)], "energy": [5.0]},
        energy_decay=0.5,
        predator_crowding=8.0,
        reproduce_energy=100.0,
        prey_birth_prob=0.0,
    )
    stay(w1)
    assert w1.energy[0, 0] == pytest.approx(5.0 - 0.5 * 1.125, rel=1e-6)
    with pytest.raises(ValueError, match="predator_crowding"):
        EnvConfig(predator_crowding=0.0)


def test_birth_radius_bounds_the_newborns_distance():
    w = world(
        {"predators": [(10, 10)], "prey": [(10, 10)], "energy": [1e6]},
        num_worlds=200,
        energy_decay=0.0,
        reproduce_energy=1e9,
        prey_birth_prob=1.0,
        birth_radius=3,
        capture_radius=0,
        capture_predators=2,
    )
    res = stay(w)
    b, child = np.nonzero(res.born)
    dist = np.abs(w.pos[b, child] - np.array([10, 10])).max(axis=1)
    assert dist.max() == 3 and set(np.unique(dist)) == {0, 1, 2, 3}


def test_global_dispersal_spreads_newborns_over_the_grid():
    w = world(
        {"predators": [(0, 0)], "prey": [(0, 0)], "energy": [1e6]},
        num_worlds=300,
        energy_decay=0.0,
        reproduce_energy=1e9,
        prey_birth_prob=1.0,
        birth_radius=None,
        capture_radius=0,
        capture_predators=2,
    )
    res = stay(w)
    b, child = np.nonzero(res.born)
    rows, cols = w.pos[b, child].T
    assert rows.max() >= 15 and cols.max() >= 15  # far beyond any neighbourhood
    assert abs(rows.mean() - 9.5) < 1.5 and abs(cols.mean() - 9.5) < 1.5


def test_recycled_slots_cap_the_live_population_not_the_births():
    w = world(
        {"predators": [(0, 0)], "prey": [(10, 10), (10, 12)], "energy": [1e6]},
        energy_decay=0.0,
        reproduce_energy=1e9,
        prey_birth_prob=1.0,
        max_prey=3,
        recycle_slots=True,
        capture_radius=0,
    )
    born = 0
    for _ in range(6):
        res = stay(w)
        born += int(res.born.sum())
        # kill one prey by hand each step: its slot must be reused by a later birth
        P = w.n_pred_slots
        live = np.flatnonzero(w.alive[0, P:])
        w.alive[0, P + live[0]] = False
        w._rebuild_grid(0)
        assert w.alive[0, P:].sum() <= 3
    assert born > 3  # more births than prey slots: slots were reused


def test_without_recycling_dead_slots_stay_dead():
    w = world(
        {"predators": [(0, 0)], "prey": [(10, 10)], "energy": [1e6]},
        energy_decay=0.0,
        reproduce_energy=1e9,
        prey_birth_prob=1.0,
        max_prey=2,
        capture_radius=0,
    )
    stay(w)
    P = w.n_pred_slots
    w.alive[0, P] = False
    w._rebuild_grid(0)
    assert not stay(w).born.any()


def test_agent_identity_users_reject_recycled_slots():
    with pytest.raises(ValueError, match="recycle_slots"):
        predator_prey_v0.parallel_env(ecology=True, recycle_slots=True)
    with pytest.raises(ValueError, match="prey_capacity"):
        EnvConfig(prey_capacity=0)
    with pytest.raises(ValueError, match="birth_radius"):
        EnvConfig(birth_radius=-1)
