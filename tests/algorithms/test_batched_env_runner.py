"""BatchedCoreEnvRunner keeps per-agent semantics: replaying its actions reproduces its data."""

import numpy as np
import pytest

from bioflux import config
from bioflux.algorithms import get_algorithm
from bioflux.envs import BatchedWorld


@pytest.fixture(scope="module")
def local_runner(ray_session):
    exp = config.validate(
        {
            "name": "runner",
            "algorithm": "ppo",
            "seed": 3,
            "env": {
                "height": 10,
                "width": 10,
                "n_predators": 3,
                "n_prey": 6,
                "max_steps": 25,
                "obs_radius": 2,
                "wall_density": 0.05,
                "reward_caught": -2.0,
            },
            "training": {
                "train_batch_size": 300,
                "minibatch_size": 100,
                "num_epochs": 1,
                "hidden": [16],
            },
            "resources": {"num_env_runners": 0, "num_envs_per_env_runner": 1},
            "stop": {"iterations": 1},
        }
    )
    algo = get_algorithm("ppo").build_config(exp).build_algo()
    yield exp, algo.env_runner
    algo.stop()


def test_one_episode_replays_exactly(local_runner):
    exp, runner = local_runner
    episodes = runner.sample(num_episodes=1)
    world = BatchedWorld(exp.env_config, num_worlds=1, seed=runner._world_seed)
    world.reset()
    by_agent = {ep.agent_id: ep for ep in episodes}
    assert set(by_agent) == {f"predator_{i}" for i in range(3)} | {f"prey_{i}" for i in range(6)}
    slots = {name: i for i, name in enumerate(runner._agent_names)}
    length = max(len(ep) for ep in episodes)
    for t in range(length):
        acts = np.zeros(world.alive.shape, dtype=np.int64)
        for name, ep in by_agent.items():
            if t < len(ep):
                acts[0, slots[name]] = ep.get_actions(t)
                obs = world.observe(np.array([0]), np.array([slots[name]])).reshape(-1)
                assert np.array_equal(ep.get_observations(t), obs), (name, t)
        res = world.step(acts)
        for name, ep in by_agent.items():
            if t < len(ep):
                assert ep.get_rewards(t) == pytest.approx(res.rewards[0, slots[name]])
                if t == len(ep) - 1:  # the agent's last step: its own end flags
                    s = slots[name]
                    assert ep.is_terminated == bool(res.terminated[0, s])
                    assert ep.is_truncated == bool(res.truncated[0, s])
    assert world.done[0]


def test_trajectories_are_well_formed(local_runner):
    _, runner = local_runner
    episodes = runner.sample(num_timesteps=400)
    assert sum(len(ep) for ep in episodes) >= 400
    for ep in episodes:
        assert ep.module_id == ep.agent_id.rsplit("_", 1)[0]
        assert len(ep.get_observations()) == len(ep) + 1
        logits = ep.get_extra_model_outputs("action_dist_inputs")
        logp = ep.get_extra_model_outputs("action_logp")
        log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        assert np.allclose(logp, log_softmax[np.arange(len(ep)), ep.get_actions()], atol=1e-5)
        if ep.module_id == "prey" and ep.is_terminated:
            # without ecology a prey's trajectory only terminates when it is captured
            assert ep.get_rewards(-1) == -2.0
        if ep.module_id == "prey":
            assert (ep.get_rewards()[:-1] != -2.0).all()
    assert any(ep.is_terminated for ep in episodes) and any(not ep.is_done for ep in episodes), (
        "expected captures and open trajectories"
    )
