"""PettingZoo API compliance, seeding and determinism of predator_prey_v0."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from pettingzoo.test import (
    api_test,
    max_cycles_test,
    parallel_api_test,
    parallel_seed_test,
    render_test,
)

from bioflux.envs import predator_prey_v0


@pytest.fixture(autouse=True)
def _quiet_pool_warning():
    # Ecology pools keep unused IDs when the episode ends; PettingZoo's test warns about that.
    warnings.filterwarnings("ignore", message="No agents present but not all possible_agents")


def test_metadata_and_spaces():
    env = predator_prey_v0.parallel_env()
    assert env.metadata["name"] == "predator_prey_v0"
    assert len(env.possible_agents) == 120
    assert env.possible_agents[0] == "predator_0" and env.possible_agents[20] == "prey_0"
    assert env.observation_space("prey_3").shape == (11, 11, 4)
    assert env.observation_space("prey_3").dtype == np.float32
    assert env.action_space("predator_0").n == 5
    obs, infos = env.reset(seed=1)
    assert set(obs) == set(env.agents) == set(env.possible_agents)
    assert all(env.observation_space(a).contains(o) for a, o in obs.items())
    assert env.state().shape == env.state_space.shape == (100, 100, 3)
    assert env.state_space.contains(env.state())


def test_parallel_api_default():
    parallel_api_test(predator_prey_v0.parallel_env(), num_cycles=350)


def test_parallel_api_ecology():
    env = predator_prey_v0.parallel_env(
        ecology=True, height=30, width=30, n_predators=6, n_prey=30, max_steps=400
    )
    parallel_api_test(env, num_cycles=450)


def test_parallel_seed_test():
    parallel_seed_test(
        lambda: predator_prey_v0.parallel_env(height=20, width=20, n_predators=3, n_prey=6)
    )


def _trajectory(seed: int, steps: int = 60, **kwargs) -> list:
    env = predator_prey_v0.parallel_env(height=30, width=30, n_predators=5, n_prey=20, **kwargs)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    out = [sorted((a, o.sum()) for a, o in obs.items())]
    for _ in range(steps):
        if not env.agents:
            break
        actions = {a: int(rng.integers(5)) for a in env.agents}
        obs, rew, term, trunc, _ = env.step(actions)
        out.append((sorted(rew.items()), sorted(term.items()), sorted(trunc.items())))
    return out


@pytest.mark.parametrize("ecology", [False, True])
def test_same_seed_same_trajectory_different_seed_differs(ecology):
    assert _trajectory(7, ecology=ecology) == _trajectory(7, ecology=ecology)
    assert _trajectory(7, ecology=ecology) != _trajectory(8, ecology=ecology)


def test_aec_view_runs():
    env = predator_prey_v0.env(height=15, width=15, n_predators=2, n_prey=4, max_steps=5)
    env.reset(seed=0)
    for _agent in env.agent_iter():
        _, _, term, trunc, _ = env.last()
        env.step(None if term or trunc else 0)
    assert env.agents == []


def test_aec_api():
    # the AEC view (``env()``, through ``parallel_to_aec``) passes PettingZoo's AEC API test
    api_test(predator_prey_v0.env(), num_cycles=350)


def test_aec_api_ecology_with_starving_predators():
    # starving predators' last observations must stay within the observation space
    env = predator_prey_v0.env(
        ecology=True, height=30, width=30, n_predators=6, n_prey=30, max_steps=400
    )
    api_test(env, num_cycles=500)


def test_max_cycles():
    max_cycles_test(predator_prey_v0)


def test_max_cycles_and_its_alias_max_steps():
    assert predator_prey_v0.parallel_env(max_cycles=7).config.max_steps == 7
    assert predator_prey_v0.parallel_env(max_steps=7).max_cycles == 7
    assert predator_prey_v0.parallel_env(max_cycles=7, max_steps=7).max_cycles == 7
    assert predator_prey_v0.parallel_env().max_cycles == 300
    with pytest.raises(ValueError, match="max_cycles=4 and max_steps=5 disagree"):
        predator_prey_v0.parallel_env(max_cycles=4, max_steps=5)
    with pytest.raises(ValueError, match=r"max_cycles=0 is out of range; allowed: >= 1"):
        predator_prey_v0.parallel_env(max_cycles=0)


def test_render_modes_with_a_non_interactive_backend():
    import matplotlib

    matplotlib.use("Agg")  # "human" draws to an off-screen figure, without blocking
    render_test(predator_prey_v0.env)
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # close() closed the window


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a display-less Linux check")
def test_human_without_a_display_says_so():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("MPLBACKEND", None)
    code = (
        "from bioflux.envs import predator_prey_v0\n"
        "from bioflux.envs.rendering import HumanRenderError\n"
        "try:\n"
        "    predator_prey_v0.parallel_env(render_mode='human')\n"
        "except HumanRenderError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "render_mode='human' needs a display" in out.stdout
    assert "rgb_array" in out.stdout and "MPLBACKEND=Agg" in out.stdout
