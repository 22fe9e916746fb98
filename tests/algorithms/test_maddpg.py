"""MADDPG-style centralised critics on real Ray: joint critic input with dead agents, gradients
through Gumbel-softmax, soft target updates, checkpoint/restore, a training run with EnvRunners."""

import copy

import numpy as np
import pytest
import torch

from bioflux import config, training
from bioflux.algorithms import get_algorithm
from bioflux.algorithms.maddpg.modules import (
    critic_context,
    critic_input,
    critic_input_dim,
    critic_q,
    critic_q_in_context,
    mlp,
)
from bioflux.policies import load_policy
from tests.conftest import TINY


def maddpg_config(**training_overrides):
    cfg = copy.deepcopy(TINY)
    cfg["algorithm"] = "maddpg"
    cfg["env"]["capture_predators"] = 2
    cfg["training"] = {
        "learning_starts": 40,
        "batch_size": 32,
        "updates_per_iteration": 2,
        "env_steps_per_iteration": 40,
        "actor_hidden": [32],
        "critic_hidden": [32],
        "tau": 0.1,
        **training_overrides,
    }
    cfg["resources"] = {"num_env_runners": 0, "num_envs_per_env_runner": 2}
    return cfg


@pytest.fixture(scope="module")
def algo(ray_session):
    exp = config.validate(maddpg_config())
    algo = get_algorithm("maddpg").build_config(exp).build_algo()
    algo.train()  # fills the replay past learning_starts
    algo.train()
    yield algo
    algo.stop()


def on_learner(algo, fn):
    return next(iter(algo.learner_group.foreach_learner(fn))).get()


def test_critic_input_masks_dead_agents():
    T, N, S, D = 3, 6, 10, 8
    state = torch.randn(T, S)
    actions = torch.nn.functional.one_hot(torch.randint(0, 5, (T, N)), 5).float()
    alive = torch.ones(T, N)
    alive[:, 4] = 0.0  # slot 4 is dead
    own = torch.randn(T, 2, D)
    x = critic_input(state, actions[:, None].expand(T, 2, N, 5), alive, torch.tensor([0, 1]), own)
    assert x.shape == (T, 2, D + S + 7 * N)
    assert x.shape[-1] == critic_input_dim(D, S, N)
    assert torch.equal(x[..., :D], own) and torch.equal(x[:, 1, D : D + S], state)
    x = x[..., D:]  # the rest as before: state, joint actions, alive mask, own slot
    joint = x[..., S : S + 5 * N].reshape(T, 2, N, 5)
    assert torch.all(joint[:, :, 4] == 0) and torch.all(joint[:, :, 3].sum(-1) == 1)
    assert torch.all(x[..., S + 5 * N : S + 6 * N] == alive[:, None])
    assert torch.all(x[:, 1, S + 6 * N :] == torch.eye(N)[1])


def test_split_first_layer_critic_equals_the_critic_on_critic_input():
    """critic_q (state and joint-action terms once per transition) = q(critic_input(...)):
    same values, same gradients for the critic's weights; the actor's form (each agent's own
    slot replaced by its differentiable action) equals the concatenated critic on that joint
    action, with the same gradient for the actions and none for the critic."""
    torch.manual_seed(0)
    T, N, S, D, slots = 16, 6, 30, 8, torch.tensor([2, 3, 5])
    K = len(slots)
    q = mlp([critic_input_dim(D, S, N), 32, 32, 1])
    state, own = torch.randn(T, S), torch.randn(T, K, D)
    alive = (torch.rand(T, N) > 0.3).float()
    actions = torch.nn.functional.one_hot(torch.randint(0, 5, (T, N)), 5).float()
    weights = torch.randn(T, K, generator=torch.Generator().manual_seed(1))

    def grads(out, *inputs):
        q.zero_grad()
        for x in inputs:
            x.grad = None
        (out * weights).sum().backward()
        return [p.grad.clone() for p in q.parameters()] + [x.grad.clone() for x in inputs]

    expanded = actions[:, None].expand(T, K, N, 5)
    reference = q(critic_input(state, expanded, alive, slots, own)).squeeze(-1)
    split = critic_q(q, state, actions, alive, slots, own)
    assert split.shape == (T, K)
    torch.testing.assert_close(split, reference, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads(split), grads(reference), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the actor loss's form: soft own actions in their own slots, the critic frozen
    soft = torch.softmax(torch.randn(T, K, 5), -1).requires_grad_(True)
    eye = torch.eye(N)[slots][None, :, :, None]  # (1, K, N, 1)
    swapped = expanded * (1 - eye) + eye * soft[:, :, None, :]
    dense = q(critic_input(state, swapped, alive, slots, own)).squeeze(-1)
    dense_soft_grad = grads(dense, soft)[-1]
    context = critic_context(q, state, alive, slots, own)
    q.requires_grad_(False)
    actor_form = critic_q_in_context(q, context.detach(), actions, alive, soft, slots)
    q.requires_grad_(True)
    torch.testing.assert_close(actor_form, dense, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(actor_form, split)  # the swap reaches the output
    q.zero_grad()
    soft.grad = None
    (actor_form * weights).sum().backward()
    assert all(p.grad is None for p in q.parameters())
    torch.testing.assert_close(soft.grad, dense_soft_grad, rtol=1e-5, atol=1e-6)
    alive[:, 3] = 1 - alive[:, 3]  # the alive mask reaches the shared term: the output moves
    assert not torch.allclose(critic_q(q, state, actions, alive, slots, own), split)


def test_pooled_state_critic_has_the_same_width_on_any_grid_and_counts_per_region():
    from bioflux.algorithms.maddpg.modules import StatePooling
    from bioflux.algorithms.maddpg.params import Params, critic_state_mode

    widths = []
    for side in (40, 100):
        exp = config.validate(
            maddpg_config(critic_state="pooled", critic_state_grid=4)
            | {"env": {**TINY["env"], "height": side, "width": side}}
        )
        spec = get_algorithm("maddpg").build_config(exp).rl_module_spec.rl_module_specs
        critic = spec["predator_critic"].build()
        widths.append(critic.q[0].in_features)
        # its forward on critic_input rows pools the state block
        raw = spec["predator_critic"].observation_space.shape[0]
        x = torch.rand(3, raw)
        o = critic.obs_dim
        pooled = critic.state_encoder(x[:, o : o + side * side * 3])
        rows = torch.cat([x[:, :o], pooled, x[:, o + side * side * 3 :]], -1)
        torch.testing.assert_close(critic({"obs": x})["q"], critic.q(rows).squeeze(-1))
    assert widths[0] == widths[1]
    # region sums: one predator in the top-left region, two prey in the bottom-right one
    state = torch.zeros(1, 8, 8, 3)
    state[0, 1, 1, 1] = 1.0
    state[0, 6, 7, 2] = 2.0
    features = StatePooling(8, 8, 2)(state.reshape(1, -1)).reshape(3, 2, 2)
    assert features[1, 0, 0] == 1.0 and features[2, 1, 1] == 2.0 and features.sum() == 3.0
    assert critic_state_mode(Params(), 24 * 24 * 3) == "flat"
    assert critic_state_mode(Params(), 100 * 100 * 3) == "pooled"
    assert critic_state_mode(Params(critic_state="flat"), 100 * 100 * 3) == "flat"


def test_the_critic_spec_is_as_wide_as_critic_input(algo):
    exp = config.validate(maddpg_config())
    env = exp.env_config
    spec = get_algorithm("maddpg").build_config(exp).rl_module_spec.rl_module_specs
    obs_dim = env.obs_size**2 * 4
    width = spec["predator_critic"].observation_space.shape[0]
    assert width == obs_dim + env.height * env.width * 3 + 7 * env.n_agents_max


def test_defaults_live_in_params():
    from bioflux.algorithms.maddpg.algorithm import MADDPGConfig
    from bioflux.algorithms.maddpg.params import Params

    cfg = MADDPGConfig()
    for key, field in Params.model_fields.items():
        if hasattr(cfg, key):
            assert getattr(cfg, key) == field.default, key


def test_joint_transitions_hold_every_slot(algo):
    n_slots = 2 + 4

    def views(learner):  # the learner re-encodes the stored world states
        return {k: v.cpu().numpy() for k, v in learner._on_device(algo.replay.sample(16)).items()}

    b = on_learner(algo, views)
    assert b["actions"].shape == (16, n_slots) and b["obs"].shape == (16, n_slots, 5 * 5 * 4)
    assert b["state"].shape == (16, 10 * 10 * 3)
    # dead slots carry zero observations; live ones see themselves at the window centre
    assert np.all(b["obs"][~b["alive"]] == 0)
    live = b["obs"][b["alive"]].reshape(-1, 5, 5, 4)
    assert np.all(live[:, 2, 2, 1:3].sum(-1) >= 1)


def test_gradients_reach_the_actors_through_gumbel_softmax(algo):
    def grads(learner):
        losses = learner.losses(learner._on_device(algo.replay.sample(32)))
        for module_id in learner.module.keys():
            learner.module[module_id].zero_grad()
        losses["predator"].backward()
        actor = sum(
            p.grad.abs().sum().item()
            for p in learner.module["predator"].pi.parameters()
            if p.grad is not None
        )
        critic = [p.grad for p in learner.module["predator_critic"].q.parameters()]
        return actor, all(g is None or g.abs().sum().item() == 0 for g in critic)

    actor_grad, critic_untouched = on_learner(algo, grads)
    assert actor_grad > 0
    assert critic_untouched, "the actor loss must not train the critic"


def test_targets_move_by_tau(algo):
    def step(learner):
        critic = learner.module["prey_critic"]
        before = [p.detach().clone() for p in critic.q_target.parameters()]
        losses = learner.update_joint([algo.replay.sample(16)])
        assert set(losses) == set(learner.module.keys()) and all(
            len(v) == 1 for v in losses.values()
        )
        online = [p.detach().clone() for p in critic.q.parameters()]
        after = [p.detach().clone() for p in critic.q_target.parameters()]
        tau = learner.config.tau
        return all(
            torch.allclose(a, (1 - tau) * b + tau * o, atol=1e-6)
            for a, b, o in zip(after, before, online)
        ), any(not torch.equal(a, b) for a, b in zip(after, before))

    exact, moved = on_learner(algo, step)
    assert exact and moved


def test_training_run_with_env_runners_checkpoints_actors(ray_session, tmp_path):
    cfg = maddpg_config()
    cfg["resources"]["num_env_runners"] = 1
    cfg["stop"] = {"iterations": 3}
    exp = config.validate(cfg)
    summary = training.train(
        exp, output=tmp_path / "runs", models=tmp_path / "models", log=lambda _: None
    )
    assert summary["iterations"] == 3 and summary["env_steps"] >= 120
    exported = load_policy(tmp_path / "models" / "maddpg" / "tiny", "predator")
    from_ckpt = load_policy(tmp_path / "runs" / "tiny" / "checkpoints" / "final", "predator")
    assert type(exported.module).__name__ == "GumbelActorModule"
    obs = np.random.default_rng(0).random((16, 5, 5, 4)).astype(np.float32)
    assert np.allclose(exported.probabilities(obs), from_ckpt.probabilities(obs))
    assert np.array_equal(
        exported.probabilities(obs).argmax(1), from_ckpt.probabilities(obs).argmax(1)
    )


def test_one_remote_learner_trains_and_several_are_refused(ray_session):
    """num_learners 1: the learner is a Ray actor, and each iteration's updates reach it in one
    call; more learners are refused (the joint update is not data-parallel)."""
    cfg = maddpg_config()
    cfg["resources"]["num_learners"] = 1
    algo = get_algorithm("maddpg").build_config(config.validate(cfg)).build_algo()
    try:
        before = algo.get_module("predator").pi[0].weight.detach().clone()
        for _ in range(3):
            result = algo.train()
        losses = result["learners"]["predator_critic"]["loss"]
        assert np.isfinite(losses)
        after = algo.get_module("predator").pi[0].weight.detach()
        assert not torch.equal(before, after)  # the remote learner's weights came back
        assert training.learner_devices(algo) == ["cpu"]
    finally:
        algo.stop()
    cfg["resources"]["num_learners"] = 2
    with pytest.raises(ValueError, match="num_learners: maddpg trains on one learner"):
        get_algorithm("maddpg").build_config(config.validate(cfg))


@pytest.mark.gpu
def test_a_gpu_learner_trains_maddpg(ray_session):
    cfg = maddpg_config()
    cfg["resources"]["num_gpus_per_learner"] = 1
    algo = get_algorithm("maddpg").build_config(config.validate(cfg)).build_algo()
    try:
        for _ in range(3):
            result = algo.train()
        assert training.learner_devices(algo) == ["cuda:0"]
        for module_id in ("predator", "prey", "predator_critic", "prey_critic"):
            assert np.isfinite(result["learners"][module_id]["loss"])
    finally:
        algo.stop()


def test_the_same_seed_trains_the_same_actors(ray_session):
    """Replay sampling, Gumbel noise, exploration and initial weights all follow the seed."""

    def actors(seed: int) -> list[torch.Tensor]:
        cfg = maddpg_config()
        cfg["seed"] = seed
        algo = get_algorithm("maddpg").build_config(config.validate(cfg)).build_algo()
        try:
            for _ in range(3):
                algo.train()
            return [
                p.detach().clone()
                for s in ("predator", "prey")
                for p in algo.get_module(s).parameters()
            ]
        finally:
            algo.stop()

    first, again, other = actors(0), actors(0), actors(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
