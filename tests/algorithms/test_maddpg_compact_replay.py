"""MADDPG's compact replay: the views the learner re-encodes from stored world states equal
the dense views the runner used to store (observations, final observations, global states),
so the critic targets are the same; and a transition takes a few KB, not hundreds."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from bioflux import config
from bioflux.algorithms import get_algorithm
from bioflux.algorithms.maddpg.replay import FIELDS
from tests.conftest import TINY


def _config(**env) -> dict:
    cfg = copy.deepcopy(TINY)
    cfg["algorithm"] = "maddpg"
    cfg["env"].update(max_steps=9, wall_density=0.1, **env)  # walls: their bits round-trip
    cfg["training"] = {
        "learning_starts": 40,
        "batch_size": 16,
        "updates_per_iteration": 1,
        "env_steps_per_iteration": 20,
        "actor_hidden": [16],
        "critic_hidden": [16],
    }
    cfg["resources"] = {"num_env_runners": 0, "num_envs_per_env_runner": 3}
    return cfg


@pytest.mark.parametrize(
    "env",
    [{}, {"ecology": True, "energy_init": 4.0, "reproduce_energy": 5.0, "prey_birth_prob": 0.2}],
    ids=["default", "ecology"],
)
def test_re_encoded_views_equal_the_dense_views(ray_session, env):
    algo = get_algorithm("maddpg").build_config(config.validate(_config(**env))).build_algo()
    try:
        runner = algo.env_runner_group.local_env_runner
        learner = algo.learner_group._learner
        w = runner._world
        dense: dict[str, list] = {k: [] for k in ("obs", "state", "next_obs", "next_state")}
        step, observe_after = w.step, runner._observe_after
        births = []

        def logged_step(actions):
            live = np.flatnonzero((w.alive & ~w.done[:, None]).any(axis=1))
            b, a = np.nonzero(w.alive[live] & ~w.done[live][:, None])
            obs = np.zeros((len(live), w.n_agents, w.config.obs_size**2 * 4), np.float16)
            obs[b, a] = w.observe(live[b], a).reshape(len(b), -1)
            dense["obs"].append(obs)
            dense["state"].append(w.states(live).reshape(len(live), -1).astype(np.float16))
            logged_step.live = live
            res = step(actions)
            births.append(int(res.born.sum()))
            return res

        def logged_observe_after(res):
            ob, oa, nxt, dead = observe_after(res)
            live = logged_step.live
            at = {int(v): i for i, v in enumerate(live)}
            nobs = np.zeros((len(live), w.n_agents, nxt.shape[1]), np.float16)
            keep = np.isin(ob, live)
            nobs[[at[int(v)] for v in ob[keep]], oa[keep]] = nxt[keep]
            dense["next_obs"].append(nobs)
            dense["next_state"].append(w.states(live).reshape(len(live), -1).astype(np.float16))
            return ob, oa, nxt, dead

        w.step, runner._observe_after = logged_step, logged_observe_after
        out = runner.sample_joint(30)
        assert set(out) == set(FIELDS)
        views = learner._on_device(out)
        for key, parts in dense.items():
            expected = torch.as_tensor(np.concatenate(parts)).float()
            got = views[key].half().float()  # the dense replay kept float16
            torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=key)
        if env:
            assert sum(births) > 0
        # the same critic targets and losses from either
        torch.manual_seed(0)
        from_compact = learner.losses(views)
        dense_batch = {k: v for k, v in views.items()}
        dense_batch.update(
            {k: torch.as_tensor(np.concatenate(v)).float() for k, v in dense.items()}
        )
        torch.manual_seed(0)
        from_dense = learner.losses(dense_batch)
        for k in from_compact:
            if not env:  # float16 rounds the ecology's energy channel in the dense views
                torch.testing.assert_close(from_compact[k], from_dense[k], msg=k)
    finally:
        algo.stop()


def test_a_reference_world_transition_is_a_few_kilobytes(ray_session):
    """Bytes per stored transition on the reference world (100×100, 120 slots)."""
    from bioflux.algorithms.maddpg.replay import JointReplayBuffer

    cfg = _config()
    cfg["env"] = {}  # the reference world
    cfg["resources"]["num_envs_per_env_runner"] = 1
    algo = get_algorithm("maddpg").build_config(config.validate(cfg)).build_algo()
    try:
        out = algo.env_runner_group.local_env_runner.sample_joint(3)
        buffer = JointReplayBuffer(10)
        buffer.add(out)
        per_transition = sum(v.nbytes for v in buffer.data.values()) / buffer.capacity
        assert per_transition < 5_000, per_transition  # dense float16 views: ~352,000
    finally:
        algo.stop()
