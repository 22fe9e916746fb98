"""The batched core: B worlds in lock-step agree with the single-world env."""

import numpy as np

from bioflux.envs import BatchedWorld, EnvConfig, predator_prey_v0


def test_batched_worlds_match_single_world_env():
    cfg = dict(height=20, width=20, n_predators=4, n_prey=12, max_steps=40, wall_density=0.0)
    layout = {
        "predators": [(1, 1), (5, 5), (10, 10), (15, 3)],
        "prey": [(r, c) for r in (2, 8, 14) for c in (3, 9, 15, 18)],
    }
    world = BatchedWorld(EnvConfig(**cfg), num_worlds=3, seed=0)
    world.reset(layout=layout)
    env = predator_prey_v0.parallel_env(**cfg)
    env.reset(seed=0, options={"layout": layout})
    rng = np.random.default_rng(0)
    for _ in range(40):
        if not env.agents:
            break
        acts = rng.integers(0, 5, world.n_agents)
        res = world.step(np.tile(acts, (3, 1)))
        _, rew, term, _, _ = env.step({a: int(acts[env._slot[a]]) for a in env.agents})
        for b in range(3):
            assert np.array_equal(world.pos[b], env.world.pos[0])
            for a, r in rew.items():
                assert res.rewards[b, env._slot[a]] == np.float32(r)
                assert res.terminated[b, env._slot[a]] == term[a]
    b, a = np.nonzero(world.alive)
    assert world.observe(b, a).shape == (len(a), 11, 11, 4)


def test_done_worlds_are_frozen_and_reset_individually():
    world = BatchedWorld(
        EnvConfig(height=10, width=10, n_predators=1, n_prey=1, max_steps=2), num_worlds=2, seed=1
    )
    world.reset()
    zeros = np.zeros((2, world.n_agents), dtype=int)
    world.step(zeros)
    res = world.step(zeros)
    assert res.done.all() and res.truncated.any()
    before = world.pos.copy()
    res = world.step(zeros)
    assert not res.acted.any() and np.array_equal(world.pos, before)
    world.reset(worlds=[1])
    assert world.done.tolist() == [True, False] and world.t.tolist() == [2, 0]


def test_capture_counts_match_terminations():
    world = BatchedWorld(EnvConfig(height=20, width=20, n_predators=10, n_prey=40), 4, seed=3)
    world.reset()
    rng = np.random.default_rng(0)
    for _ in range(30):
        res = world.step(rng.integers(0, 5, world.alive.shape))
        prey_term = (res.terminated & ~world.is_predator & ~res.done[:, None]).sum(1)
        assert np.array_equal(prey_term[~res.done], res.captured[~res.done])
