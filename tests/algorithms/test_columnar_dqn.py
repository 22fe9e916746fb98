"""Epsilon-greedy on the columnar path: the batched core's transitions are the agents' own
(replayed step by step on an independent world), and flat replay feeds RLlib's DQN learner."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from bioflux import config, training
from bioflux.algorithms import get_algorithm
from bioflux.algorithms.shared.ring_replay import RingReplayBuffer
from bioflux.envs import BatchedWorld
from tests.algorithms.test_epsilon_greedy import eg_config


def columnar_config(**env):
    cfg = eg_config("columnar")
    cfg["env"].update(env)
    return cfg


@pytest.fixture(params=[1, 3], ids=["n_step=1", "n_step=3"])
def ecology_algo(ray_session, request):
    # ecology: starvation and captures mid-fragment, newborns of both species (a newborn
    # predator's slot sits between the actors' slots); max_steps 15: the step limit
    cfg = columnar_config(ecology=True, max_steps=15, energy_init=6.0, reproduce_energy=10.0)
    cfg["resources"]["num_envs_per_env_runner"] = 2
    cfg["training"]["n_step"] = request.param
    exp = config.validate(cfg)
    algo = get_algorithm("epsilon_greedy").build_config(exp).build_algo()
    yield exp, algo
    algo.stop()


def _replay_on_a_twin(exp, runner, calls):
    """Replay the runner's recorded resets and actions on an independent world: one row per
    agent-step, in step order, with the agent's trajectory number."""
    world = runner._world
    twin = BatchedWorld(exp.env_config, num_worlds=world.num_worlds, seed=runner._world_seed)
    rows, trajectory, count = [], {}, 0
    seen = {"terminated": 0, "truncated": 0, "born predators": 0, "born prey": 0}
    for kind, arg in calls:
        if kind == "reset":
            twin.reset(worlds=arg)
            continue
        b, a = np.nonzero(twin.alive & ~twin.done[:, None])
        obs = twin.observe(b, a).reshape(len(a), -1)
        res = twin.step(arg)
        nxt = twin.observe(b, a).reshape(len(a), -1)
        seen["terminated"] += int(res.terminated.sum())
        seen["truncated"] += int(res.truncated.sum())
        seen["born predators"] += int((res.born & twin.is_predator).sum())
        seen["born prey"] += int((res.born & ~twin.is_predator).sum())
        for i, (bi, ai) in enumerate(zip(b.tolist(), a.tolist())):
            if (bi, ai) not in trajectory:
                trajectory[(bi, ai)], count = count, count + 1
            row = {
                "trajectory": trajectory[(bi, ai)],
                "species": "predator" if twin.is_predator[ai] else "prey",
                Columns.OBS: obs[i],
                Columns.ACTIONS: arg[bi, ai],
                Columns.REWARDS: float(res.rewards[bi, ai]),
                Columns.NEXT_OBS: nxt[i],
                Columns.TERMINATEDS: bool(res.terminated[bi, ai]),
                Columns.TRUNCATEDS: bool(res.truncated[bi, ai]),
            }
            rows.append(row)
            if row[Columns.TERMINATEDS] or row[Columns.TRUNCATEDS]:
                del trajectory[(bi, ai)]  # the slot's next agent starts a new trajectory
    assert all(seen.values()), f"the scenario must cover every case: {seen}"
    return rows


def test_transitions_replay_exactly_on_an_independent_world(ecology_algo):
    exp, algo = ecology_algo
    runner = algo.env_runner
    calls = []
    world = runner._world
    step, reset = world.step, world.reset

    def recording_step(actions):
        calls.append(("step", actions.copy()))
        return step(actions)

    def recording_reset(worlds=None):
        calls.append(("reset", None if worlds is None else np.array(worlds)))
        return reset(worlds=worlds)

    world.step, world.reset = recording_step, recording_reset
    out = runner.sample_transitions(40)

    rows = _replay_on_a_twin(exp, runner, calls)
    later: dict[int, list[dict]] = {}  # each trajectory's rows, in order
    for row in rows:
        row["position"] = len(later.setdefault(row["trajectory"], []))
        later[row["trajectory"]].append(row)
    n, gamma = exp.params.n_step, exp.params.gamma
    expected = {s: {k: [] for k in out[s]} for s in ("predator", "prey")}
    for row in rows:
        own = later[row["trajectory"]]
        window = own[row["position"] : row["position"] + n]  # the fragment's end cuts it too
        cols = expected[row["species"]]
        cols[Columns.OBS].append(row[Columns.OBS])
        cols[Columns.ACTIONS].append(row[Columns.ACTIONS])
        cols[Columns.REWARDS].append(
            sum(gamma**k * r[Columns.REWARDS] for k, r in enumerate(window))
        )
        for key in (Columns.NEXT_OBS, Columns.TERMINATEDS, Columns.TRUNCATEDS):
            cols[key].append(window[-1][key])
        cols["n_step"].append(len(window))
    assert max(expected["prey"]["n_step"]) == n and min(expected["prey"]["n_step"]) == 1
    for species, cols in expected.items():
        for k, values in cols.items():
            np.testing.assert_allclose(out[species][k], np.array(values), rtol=1e-6, err_msg=k)


def _epsilon_at(exp, t: int) -> float:
    p = exp.params
    fraction = min(1.0, t / p.epsilon_timesteps)
    return p.epsilon_start + fraction * (p.epsilon_end - p.epsilon_start)


def test_epsilon_follows_the_sampled_env_steps_and_survives_a_restore(ray_session, tmp_path):
    exp = config.validate(columnar_config())
    build = get_algorithm("epsilon_greedy").build_config(exp).build_algo
    algo = build()
    try:
        for _ in range(3):
            result = algo.train()
        steps = int(result["env_runners"]["num_env_steps_sampled_lifetime"])
        epsilon = algo.env_runner.module["predator"].epsilon_schedule.get_current_value
        # one world: the last action was chosen at the step before the lifetime count
        assert float(epsilon()) == pytest.approx(_epsilon_at(exp, steps - 1), abs=1e-6)
        algo.save_to_path(str(tmp_path / "ckpt"))
    finally:
        algo.stop()
    algo = build()
    try:
        algo.restore_from_path(str(tmp_path / "ckpt"))
        algo.train()  # 100 more env steps: the schedule continues, it does not restart
        epsilon = algo.env_runner.module["predator"].epsilon_schedule.get_current_value
        assert float(epsilon()) == pytest.approx(_epsilon_at(exp, steps + 99), abs=1e-6)
    finally:
        algo.stop()


def test_greedy_sampling_takes_the_argmax_of_q(ecology_algo):
    _, algo = ecology_algo
    runner = algo.env_runner
    out = runner.sample_transitions(3, explore=False)
    for species, cols in out.items():
        module = runner.module[species]
        with torch.no_grad():
            q = module.forward_inference({Columns.OBS: torch.from_numpy(cols[Columns.OBS])})
        np.testing.assert_array_equal(q[Columns.ACTIONS].numpy(), cols[Columns.ACTIONS])


def test_learning_starts_after_the_configured_env_steps_and_replays_per_species(ray_session):
    cfg = columnar_config()
    cfg["training"].update(learning_starts=250, rollout_fragment_length=10, train_batch_size=16)
    exp = config.validate(cfg)
    algo = get_algorithm("epsilon_greedy").build_config(exp).build_algo()
    try:
        first = algo.train()  # 100 env steps sampled (steps_per_iteration)
        assert "predator" not in first.get("learners", {})
        for _ in range(2):
            result = algo.train()
        assert {"predator", "prey"} <= set(result["learners"])
        # one row per agent-step: 2 worlds x (2 predators + 4 prey) while nobody is caught
        prey_rows, pred_rows = len(algo.replay["prey"]), len(algo.replay["predator"])
        assert pred_rows == result["env_runners"]["num_agent_steps_sampled_lifetime"]["predator"]
        assert 0 < pred_rows < prey_rows <= 2 * pred_rows
    finally:
        algo.stop()


def test_the_same_seed_trains_the_same_q_networks(ray_session):
    def weights(seed):
        cfg = columnar_config()
        cfg["seed"] = seed
        cfg["resources"]["num_env_runners"] = 1
        algo = get_algorithm("epsilon_greedy").build_config(config.validate(cfg)).build_algo()
        try:
            for _ in range(4):
                algo.train()
            state = algo.learner_group.get_weights()
            return np.concatenate([v.ravel() for v in state["predator"].values()])
        finally:
            algo.stop()

    a, b, c = weights(0), weights(0), weights(1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.gpu
def test_a_gpu_learner_trains_on_columnar_transitions(ray_session):
    cfg = columnar_config()
    cfg["resources"]["num_gpus_per_learner"] = 1
    algo = get_algorithm("epsilon_greedy").build_config(config.validate(cfg)).build_algo()
    try:
        before = algo.env_runner.module["predator"].state_dict()
        before = {k: v.clone() for k, v in before.items()}
        for _ in range(3):
            result = algo.train()
        assert training.learner_devices(algo) == ["cuda:0"]
        assert np.isfinite(result["learners"]["predator"]["qf_loss"])
        after = algo.env_runner.module["predator"].state_dict()  # synced back to the CPU runner
        assert any(not torch.equal(before[k], after[k].cpu()) for k in before)
    finally:
        algo.stop()


def test_only_the_trained_species_learn(ray_session):
    cfg = columnar_config()
    cfg["training"]["train_species"] = ["predator"]
    algo = get_algorithm("epsilon_greedy").build_config(config.validate(cfg)).build_algo()
    try:
        before = algo.learner_group.get_weights()
        for _ in range(3):
            algo.train()
        after = algo.learner_group.get_weights()
        assert set(algo.replay["prey"].data) == set() and len(algo.replay["predator"]) > 0
        for k, v in before["prey"].items():
            np.testing.assert_array_equal(v, after["prey"][k])
        assert any(
            not np.array_equal(v, after["predator"][k]) for k, v in before["predator"].items()
        )
    finally:
        algo.stop()


def test_two_cpu_learners_train_with_ddp(ray_session):
    cfg = columnar_config()
    cfg["resources"].update(num_learners=2, num_cpus_per_learner=1)
    algo = get_algorithm("epsilon_greedy").build_config(config.validate(cfg)).build_algo()
    try:
        before = algo.env_runner.module["prey"].get_state()
        for _ in range(2):
            result = algo.train()
        assert training.learner_devices(algo) == ["cpu", "cpu"]
        assert np.isfinite(result["learners"]["prey"]["qf_loss"])
        states = [
            r.get()
            for r in algo.learner_group.foreach_learner(lambda lrn: lrn.module["prey"].get_state())
        ]
        for k, v in states[0].items():  # DDP keeps the replicas identical
            np.testing.assert_allclose(v, states[1][k])
        after = algo.env_runner.module["prey"].get_state()  # synced to the sampler
        assert any(not np.allclose(before[k], after[k]) for k in before)
    finally:
        algo.stop()


def test_the_ring_buffer_overwrites_the_oldest_rows_and_samples_by_its_seed():
    buffer = RingReplayBuffer(5, {"x": np.int64}, seed=7)
    buffer.add({"x": np.arange(3)})
    buffer.add({"x": np.arange(3, 7)})
    assert len(buffer) == 5
    assert sorted(buffer.data["x"].tolist()) == [2, 3, 4, 5, 6]  # 0 and 1 were overwritten
    twin = RingReplayBuffer(5, {"x": np.int64}, seed=7)
    twin.add({"x": np.arange(3)})
    twin.add({"x": np.arange(3, 7)})
    np.testing.assert_array_equal(buffer.sample(64)["x"], twin.sample(64)["x"])
    assert set(buffer.sample(256)["x"].tolist()) == {2, 3, 4, 5, 6}
