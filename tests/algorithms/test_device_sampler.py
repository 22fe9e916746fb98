"""PPO on the learner's device (``resources.env_device``): GAE as RLlib computes it per
trajectory, the batch the learner gets, training end to end, and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets

from bioflux import config
from bioflux.algorithms.ppo import build_config
from bioflux.algorithms.ppo.gae import dense_gae, dense_gae_torch

GAMMA, LAMBDA = 0.97, 0.9


def test_dense_gae_torch_equals_the_numpy_gae():
    rng = np.random.default_rng(0)
    T, B, N = 12, 3, 5
    active = rng.random((T, B, N)) < 0.8
    terminated = active & (rng.random((T, B, N)) < 0.1)
    continues = active & ~terminated & (rng.random((T, B, N)) < 0.85)
    continues[-1] = False
    arrays = dict(
        rewards=rng.normal(size=(T, B, N)).astype(np.float32),
        values=rng.normal(size=(T, B, N)).astype(np.float32),
        active=active,
        terminated=terminated,
        continues=continues,
        bootstrap=np.where(active & ~continues & ~terminated, rng.normal(size=(T, B, N)), 0).astype(
            np.float32
        ),
    )
    adv, tgt = dense_gae(*arrays.values(), GAMMA, LAMBDA)
    adv_t, tgt_t = dense_gae_torch(*(torch.as_tensor(a) for a in arrays.values()), GAMMA, LAMBDA)
    np.testing.assert_allclose(adv_t.numpy(), adv, atol=1e-6)
    np.testing.assert_allclose(tgt_t.numpy(), tgt, atol=1e-6)


def _device_config(tiny_config: dict, **env) -> dict:
    tiny_config["resources"].update(
        env_runner="columnar", env_device="cpu", num_env_runners=0, num_envs_per_env_runner=4
    )
    tiny_config["env"].update(env)
    tiny_config["training"].update(
        train_batch_size=300, minibatch_size=64, num_epochs=2, gamma=GAMMA, gae_lambda=LAMBDA
    )
    return tiny_config


@pytest.fixture
def device_algo(ray_session, tiny_config):
    # ecology: deaths and births; a short step limit: truncation and reset worlds
    cfg = _device_config(tiny_config, ecology=True, max_steps=9)
    algo = build_config(config.validate(cfg)).build_algo()
    yield algo
    algo.stop()


def _trajectories(frag: dict[str, np.ndarray]):
    """Every agent trajectory of a fragment, found by walking each slot through time (an
    independent reading of the raw flags): ``(world, slot, steps, terminal, bootstrap)``."""
    T, B, N = frag["active"].shape
    out = []
    for b in range(B):
        for n in range(N):
            steps: list[int] = []
            for t in range(T):
                if not frag["active"][t, b, n]:
                    assert not steps, "an agent stopped acting without terminating or truncating"
                    continue
                steps.append(t)
                if frag["terminated"][t, b, n]:
                    out.append((b, n, steps, True, 0.0))
                    steps = []
                elif frag["truncated"][t, b, n]:
                    # the value of the observation after step t: its world idles at t + 1
                    boot = frag["values"][t + 1, b, n] if t + 1 < T else frag["final_values"][b, n]
                    assert t + 1 >= T or not frag["active"][t + 1, b].any()
                    out.append((b, n, steps, False, float(boot)))
                    steps = []
            if steps:  # still running at the fragment's end: cut, bootstrapped from now
                out.append((b, n, steps, False, float(frag["final_values"][b, n])))
    return out


def test_device_sampler_targets_equal_rllibs_per_trajectory(device_algo):
    algo = device_algo
    algo.train()  # builds the sampler (and a first update, so values are not all ~0)
    sampler = algo._device_sampler
    sampler.keep_fragment = True
    seen = dict.fromkeys(("terminal", "truncated", "cut", "reset"), 0)
    for _ in range(3):
        batch = sampler.sample(300)
        frag = {k: v.cpu().numpy() for k, v in sampler.last_fragment.items()}
        expected = np.zeros_like(frag["values"])
        for b, n, steps, terminal, boot in _trajectories(frag):
            values = np.append(frag["values"][steps, b, n], boot)
            rewards = np.append(frag["rewards"][steps, b, n], 0.0)
            terminateds = np.zeros(len(steps) + 1)
            truncateds = np.zeros(len(steps) + 1)
            terminateds[len(steps) - 1] = terminal
            truncateds[len(steps) - 1] = not terminal
            truncateds[-1] = 1.0
            expected[steps, b, n] = compute_value_targets(
                values, rewards, terminateds, truncateds, GAMMA, LAMBDA
            )[:-1]
            seen["terminal"] += terminal
            seen["truncated"] += not terminal and bool(frag["truncated"][steps[-1], b, n])
            seen["cut"] += steps[-1] == len(frag["active"]) - 1
        seen["reset"] += int((frag["active"][1:] & ~frag["active"][:-1]).any(axis=2).sum())
        P = sampler.world.n_pred_slots
        for species, sl in (("predator", slice(0, P)), ("prey", slice(P, None))):
            mask = frag["active"][:, :, sl]
            cols = batch.policy_batches[species]
            got = cols[Postprocessing.VALUE_TARGETS].numpy()
            np.testing.assert_allclose(got, expected[:, :, sl][mask], atol=2e-5)
            assert len(cols[Columns.OBS]) == mask.sum()
            adv = cols[Postprocessing.ADVANTAGES].numpy()
            assert abs(adv.mean()) < 1e-4 and abs(adv.std() - 1) < 1e-3
    assert seen["terminal"] and seen["truncated"] and seen["cut"] and seen["reset"]


def test_env_device_cpu_trains_and_logs_like_the_envrunner_paths(
    ray_session, tiny_config, tmp_path
):
    from bioflux.training import train

    cfg = _device_config(tiny_config)
    cfg["stop"] = {"iterations": 3}
    summary = train(config.validate(cfg), output=tmp_path / "runs", models=tmp_path / "models")
    rows = [json.loads(line) for line in (tmp_path / "runs" / "tiny" / "metrics.jsonl").open()]
    assert len(rows) == 3 and rows[-1]["capture_rate"] is not None
    assert rows[-1]["env_steps"] > rows[0]["env_steps"] > 0
    assert summary["iterations"] == 3


@pytest.mark.parametrize(
    "resources, message",
    [
        ({"env_runner": "batched"}, "needs env_runner: columnar"),
        ({"num_env_runners": 1}, "num_env_runners: 0"),
        ({"num_gpus_per_learner": 1}, "must be where the learner is"),
    ],
)
def test_env_device_refuses_what_it_cannot_do(tiny_config, resources, message):
    cfg = _device_config(tiny_config)
    cfg["resources"].update(resources)
    with pytest.raises(ValueError, match=message) as err:
        build_config(config.validate(cfg))
    assert "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_env_device_cuda_without_cuda_is_refused(tiny_config):
    cfg = _device_config(tiny_config)
    cfg["resources"].update(env_device="cuda", num_gpus_per_learner=1)
    with pytest.raises(ValueError, match="no CUDA device"):
        build_config(config.validate(cfg))


def _eg_config(tiny_config: dict, **env) -> dict:
    cfg = _device_config(tiny_config, **env)
    cfg["algorithm"] = "epsilon_greedy"
    cfg["training"] = {
        "train_batch_size": 32,
        "rollout_fragment_length": 10,
        "learning_starts": 50,
        "steps_per_iteration": 40,
        "hidden": [32],
        "epsilon_timesteps": 200,
        "replay_capacity": 5000,
    }
    return cfg


STATE = ("walls", "pos", "alive", "used", "energy", "t", "done")


def test_device_transitions_equal_a_replayed_numpy_world(ray_session, tiny_config):
    """Every transition row (obs, action, reward, new_obs, flags) equals what the numpy core
    gives when it replays the sampler's own layouts and actions (default mode: a step draws
    nothing random, so the replay is exact; the engines' ecology draws are compared in
    tests/envs/test_torch_core.py)."""
    from bioflux.algorithms import get_algorithm
    from bioflux.envs.core import BatchedWorld

    cfg = config.validate(_eg_config(tiny_config, max_steps=7))
    algo = get_algorithm("epsilon_greedy").build_config(cfg).build_algo()
    try:
        algo.train()
        sampler = algo._device_sampler
        tw = sampler.world
        nw = BatchedWorld(tw.config, num_worlds=tw.num_worlds)
        log: list = []
        step, reset = tw.step, tw.reset

        def recording_step(actions, check_actions=True):
            log.append(("step", actions.clone()))
            return step(actions, check_actions=check_actions)

        def recording_reset(seed=None, worlds=None, layout=None):
            reset(seed=seed, worlds=worlds, layout=layout)
            state = {k: getattr(tw, k).clone() for k in STATE}  # right after the reset
            log.append(("reset", (torch.as_tensor(worlds).clone(), state)))

        tw.step, tw.reset = recording_step, recording_reset
        snapshot = {k: getattr(tw, k).clone() for k in STATE}
        out = sampler.sample_transitions(12, t=10_000, explore=True)

        def load(worlds, state):
            for k, v in state.items():
                getattr(nw, k)[worlds] = v[worlds].cpu().numpy()
            for b in worlds:
                nw._rebuild_grid(int(b))

        load(np.arange(nw.num_worlds), snapshot)
        expected: dict[str, dict[str, list]] = {"predator": {}, "prey": {}}
        P = nw.n_pred_slots
        seen = {"terminated": 0, "truncated": 0, "reset": 0}
        for kind, value in log:
            if kind == "reset":
                worlds, state = value
                w = worlds.cpu().numpy()
                load(w, state)
                seen["reset"] += len(w)
                continue
            acting = nw.alive & ~nw.done[:, None]
            b, a = np.nonzero(acting)
            D = tw.config.obs_size**2 * 4
            obs = nw.observe(b, a).reshape(len(b), D)
            actions = value.cpu().numpy()
            res = nw.step(actions)
            new_obs = nw.observe(b, a).reshape(len(b), D)
            seen["terminated"] += int(res.terminated[b, a].sum())
            seen["truncated"] += int(res.truncated[b, a].sum())
            for species, sel in (("predator", a < P), ("prey", a >= P)):
                cols = expected[species]
                for key, v in (
                    (Columns.OBS, obs[sel]),
                    (Columns.ACTIONS, actions[b[sel], a[sel]]),
                    (Columns.REWARDS, res.rewards[b[sel], a[sel]]),
                    (Columns.NEXT_OBS, new_obs[sel]),
                    (Columns.TERMINATEDS, res.terminated[b[sel], a[sel]]),
                    (Columns.TRUNCATEDS, res.truncated[b[sel], a[sel]]),
                ):
                    cols.setdefault(key, []).append(v)
        assert seen["terminated"] and seen["truncated"] and seen["reset"]
        for species, cols in expected.items():
            for key, parts in cols.items():
                np.testing.assert_array_equal(
                    out[species][key].cpu().numpy(), np.concatenate(parts), err_msg=key
                )
    finally:
        algo.stop()


def test_env_device_epsilon_greedy_trains_from_a_device_replay(ray_session, tiny_config, tmp_path):
    from bioflux.algorithms import get_algorithm

    cfg = config.validate(_eg_config(tiny_config))
    algo = get_algorithm("epsilon_greedy").build_config(cfg).build_algo()
    try:
        before = {
            k: v.clone() for k, v in algo.learner_group._learner.module["prey"].state_dict().items()
        }
        for _ in range(3):
            result = algo.train()
        assert all(len(r) > 0 for r in algo.replay.values())
        assert all(r.data[Columns.OBS].device == torch.device("cpu") for r in algo.replay.values())
        after = algo.learner_group._learner.module["prey"].state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)
        assert result["env_runners"]["num_env_steps_sampled_lifetime"] > 100
    finally:
        algo.stop()


def test_env_device_epsilon_greedy_refuses_n_step(tiny_config):
    from bioflux.algorithms import get_algorithm

    cfg = _eg_config(tiny_config)
    cfg["training"]["n_step"] = 3
    with pytest.raises(ValueError, match="n_step=3 with resources.env_device"):
        get_algorithm("epsilon_greedy").build_config(config.validate(cfg))
