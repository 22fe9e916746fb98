"""Hand-built scenarios: moves, walls, capture, rewards, starvation, births, episode end."""

import numpy as np
import pytest

from bioflux.envs import predator_prey_v0

STAY, UP, DOWN, LEFT, RIGHT = range(5)


def make(layout, **kwargs):
    kwargs.setdefault("height", 10)
    kwargs.setdefault("width", 10)
    kwargs.setdefault("n_predators", len(layout.get("predators", [])))
    kwargs.setdefault("n_prey", len(layout.get("prey", [])))
    env = predator_prey_v0.parallel_env(wall_density=0.0, **kwargs)
    obs, _ = env.reset(seed=0, options={"layout": layout})
    return env, obs


def pos(env, agent):
    return tuple(env.world.pos[0, env._slot[agent]].tolist())


def test_moves_in_documented_order():
    env, _ = make({"predators": [(5, 5)], "prey": [(0, 0)]})
    for action, expected in [
        (UP, (4, 5)),
        (DOWN, (5, 5)),
        (LEFT, (5, 4)),
        (RIGHT, (5, 5)),
        (STAY, (5, 5)),
    ]:
        env.step({"predator_0": action, "prey_0": STAY})
        assert pos(env, "predator_0") == expected


def test_walls_and_grid_edge_block_moves():
    env, _ = make({"walls": [(4, 5)], "predators": [(5, 5)], "prey": [(0, 0)]})
    env.step({"predator_0": UP, "prey_0": UP})
    assert pos(env, "predator_0") == (5, 5)  # wall above
    assert pos(env, "prey_0") == (0, 0)  # off-grid
    env.step({"predator_0": DOWN, "prey_0": LEFT})
    assert pos(env, "predator_0") == (6, 5) and pos(env, "prey_0") == (0, 0)


def test_capture_by_radius_and_rewards():
    env, _ = make(
        {"predators": [(5, 5)], "prey": [(5, 7), (0, 0)]},
        reward_capture=2.0,
        reward_predator_step=-0.1,
        reward_caught=-3.0,
        reward_prey_alive=0.5,
    )
    _, rew, term, trunc, _ = env.step({"predator_0": STAY, "prey_0": STAY, "prey_1": STAY})
    assert not term["prey_0"], "distance 2 > capture_radius 1"
    _, rew, term, trunc, _ = env.step({"predator_0": RIGHT, "prey_0": STAY, "prey_1": STAY})
    assert term["prey_0"] and not trunc["prey_0"]
    assert rew["prey_0"] == -3.0 and rew["prey_1"] == 0.5
    assert rew["predator_0"] == pytest.approx(2.0 - 0.1)
    assert "prey_0" not in env.agents and "prey_1" in env.agents


def test_larger_capture_radius():
    env, _ = make({"predators": [(5, 5)], "prey": [(5, 7), (0, 0)]}, capture_radius=2)
    _, _, term, _, _ = env.step({"predator_0": STAY, "prey_0": STAY, "prey_1": STAY})
    assert term["prey_0"] and not term["prey_1"]


def test_cooperative_capture_needs_k_predators_and_shares_reward():
    layout = {"predators": [(5, 4), (0, 9)], "prey": [(5, 5), (9, 0)]}
    env, _ = make(layout, capture_predators=2, reward_predator_step=0.0)
    _, rew, term, _, _ = env.step(
        {"predator_0": STAY, "predator_1": STAY, "prey_0": STAY, "prey_1": STAY}
    )
    assert not term["prey_0"], "one predator is not enough"
    env, _ = make(
        {"predators": [(5, 4), (5, 6)], "prey": [(5, 5), (9, 0)]},
        capture_predators=2,
        reward_predator_step=0.0,
    )
    _, rew, term, _, _ = env.step(
        {"predator_0": STAY, "predator_1": STAY, "prey_0": STAY, "prey_1": STAY}
    )
    assert term["prey_0"]
    assert rew["predator_0"] == pytest.approx(0.5) and rew["predator_1"] == pytest.approx(0.5)


def test_all_prey_captured_terminates_everyone():
    env, _ = make({"predators": [(5, 5), (0, 0)], "prey": [(5, 6)]})
    _, _, term, trunc, _ = env.step({"predator_0": STAY, "predator_1": STAY, "prey_0": STAY})
    assert term == {"predator_0": True, "predator_1": True, "prey_0": True}
    assert not any(trunc.values()) and env.agents == []


def test_step_limit_truncates():
    env, _ = make({"predators": [(0, 0)], "prey": [(9, 9)]}, max_steps=3)
    for _ in range(2):
        _, _, term, trunc, _ = env.step({"predator_0": STAY, "prey_0": STAY})
        assert not any(trunc.values())
    _, _, term, trunc, _ = env.step({"predator_0": STAY, "prey_0": STAY})
    assert trunc == {"predator_0": True, "prey_0": True} and not any(term.values())
    assert env.agents == []


def test_starvation_in_ecology_mode():
    env, _ = make(
        {"predators": [(0, 0), (9, 9)], "prey": [(5, 5)], "energy": [2.0, 50.0]},
        ecology=True,
        energy_decay=1.0,
        prey_birth_prob=0.0,
        reward_starved=-5.0,
        reproduce_energy=100.0,
    )
    acts = {"predator_0": STAY, "predator_1": STAY, "prey_0": STAY}
    _, _, term, _, _ = env.step(acts)
    assert not term["predator_0"]
    _, rew, term, _, _ = env.step(acts)
    assert term["predator_0"] and not term["predator_1"]
    assert rew["predator_0"] == pytest.approx(-5.0 - 0.01)
    assert "predator_0" not in env.agents


def test_births_take_unused_ids_from_the_pool():
    env, _ = make(
        {"predators": [(5, 5)], "prey": [(0, 0)], "energy": [50.0]},
        ecology=True,
        max_predators=2,
        max_prey=3,
        reproduce_energy=40.0,
        prey_birth_prob=1.0,
    )
    obs, rew, term, _, _ = env.step({"predator_0": STAY, "prey_0": STAY})
    assert "predator_1" in env.agents and "prey_1" in env.agents
    assert "predator_1" in obs and rew["predator_1"] == 0.0 and term["predator_1"] is False
    e = env.world.energy[0]
    assert e[0] == pytest.approx((50.0 - 1.0) / 2) and e[1] == e[0]
    child = np.array(pos(env, "predator_1"))
    assert np.abs(child - np.array(pos(env, "predator_0"))).max() <= 1
    env.step({a: STAY for a in env.agents})
    # the pool is exhausted: 2 predator slots, 3 prey slots
    assert env.populations() == {"predator": 2, "prey": 3}
    assert env.population_history[-1][1:] == (2, 3)


def test_dead_agents_never_come_back():
    env, _ = make(
        {"predators": [(5, 5)], "prey": [(5, 6), (0, 0)]},
        ecology=True,
        max_prey=3,
        prey_birth_prob=1.0,
    )
    env.step({"predator_0": STAY, "prey_0": STAY, "prey_1": STAY})
    assert "prey_0" not in env.agents and "prey_2" in env.agents
    for _ in range(3):
        env.step({a: STAY for a in env.agents})
        assert "prey_0" not in env.agents


def test_observation_window_contents():
    env, obs = make({"walls": [(5, 6)], "predators": [(5, 5)], "prey": [(3, 5)]}, obs_radius=2)
    o = obs["predator_0"]
    assert o.shape == (5, 5, 4)
    assert o[2, 2, 1] == 1.0  # itself, at the centre
    assert o[0, 2, 2] == 1.0  # the prey two rows up
    assert o[2, 3, 0] == 1.0  # wall to the right
    assert o[2, 2, 3] == 1.0 and obs["prey_0"][..., 3].max() == 0.0
    corner = make({"predators": [(0, 0)], "prey": [(9, 9)]}, obs_radius=2)[1]["predator_0"]
    assert corner[:2, :, 0].all() and corner[:, :2, 0].all()  # outside the grid is obstacle


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"height": -1}, "height"),
        ({"n_prey": 10_000}, "n_predators + n_prey"),
        ({"wall_density": 1.5}, "wall_density"),
        ({"capture_predators": 0}, "capture_predators"),
        ({"bogus": 1}, "bogus"),
        ({"n_prey": 2.5}, "n_prey"),
        ({"render_mode": "video"}, "render_mode"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name.replace("+", r"\+")):
        predator_prey_v0.parallel_env(**kwargs)


def test_bad_actions_raise():
    env, _ = make({"predators": [(5, 5)], "prey": [(0, 0)]})
    with pytest.raises(ValueError, match="out of range"):
        env.step({"predator_0": 7, "prey_0": 0})
    with pytest.raises(ValueError, match="unknown agent"):
        env.step({"wolf_0": 1})
