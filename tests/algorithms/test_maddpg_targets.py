"""MADDPG's critic targets on hand-built joint transitions, and the runner's terminal flags.

``y_i = r_i + γ (1 − terminated_i) Q'_k(o'_i, s', a', m', e_i)``, ``a'_j`` the target actors'
greedy actions for the agents alive in ``s'``; the critic loss is the mean of
``(Q_k(o_i, s, a, m, e_i) − y_i)²`` over the agents alive in ``s``. The expected loss here is
computed independently, on the concatenated ``critic_input`` (not the learner's split first
layer), with target networks made to differ clearly from the online ones, and transitions
that mix terminal agents, truncated (bootstrapped) agents and dead slots.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bioflux import config
from bioflux.algorithms import get_algorithm
from bioflux.algorithms.maddpg.learner import critic_id
from bioflux.algorithms.maddpg.modules import critic_input
from bioflux.envs.config import N_ACTIONS
from tests.conftest import TINY

P, N, GAMMA = 2, 6, 0.9  # TINY: 2 predator slots, 4 prey slots


@pytest.fixture(scope="module")
def algo(ray_session):
    cfg = copy.deepcopy(TINY)
    cfg["algorithm"] = "maddpg"
    cfg["env"].update(capture_predators=1, max_steps=6)  # captures and the step limit
    cfg["training"] = {
        "learning_starts": 10_000,
        "batch_size": 8,
        "env_steps_per_iteration": 20,
        "actor_hidden": [16],
        "critic_hidden": [16],
        "gamma": GAMMA,
    }
    cfg["resources"] = {"num_env_runners": 0, "num_envs_per_env_runner": 3}
    algo = get_algorithm("maddpg").build_config(config.validate(cfg)).build_algo()
    yield algo
    algo.stop()


def _hand_built(obs_dim: int, state_dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """T=5 joint transitions: slot 1 (a predator) and slot 5 (a prey) are dead at the start
    of some; some agents are terminal (captured: not alive after), the rest are truncated or
    running on (bootstrapped)."""
    g = torch.Generator().manual_seed(seed)
    T = 5
    alive = torch.ones(T, N, dtype=torch.bool)
    alive[[0, 2, 3], 1] = False
    alive[[1, 3], 5] = False
    terminated = torch.zeros(T, N, dtype=torch.bool)
    terminated[0, 2] = terminated[1, 3] = terminated[2, 0] = terminated[3, 4] = True
    terminated[4, [2, 3]] = True
    terminated &= alive
    next_alive = alive & ~terminated  # the others are truncated or go on: alive in s'
    obs = torch.randn(T, N, obs_dim, generator=g) * alive[..., None]
    next_obs = torch.randn(T, N, obs_dim, generator=g) * alive[..., None]  # final obs too
    return {
        "state": torch.randn(T, state_dim, generator=g),
        "obs": obs,
        "actions": torch.randint(0, N_ACTIONS, (T, N), generator=g),
        "rewards": torch.randn(T, N, generator=g) * alive,
        "alive": alive,
        "terminated": terminated,
        "next_state": torch.randn(T, state_dim, generator=g),
        "next_obs": next_obs,
        "next_alive": next_alive,
    }


def _expected_critic_losses(learner, b: dict[str, torch.Tensor]) -> dict[str, float]:
    """The critic losses, from the definitions (concatenated critic input, target actors)."""
    slots = {"predator": torch.arange(0, P), "prey": torch.arange(P, N)}
    next_actions = torch.zeros(b["actions"].shape, dtype=torch.long)
    for species, idx in slots.items():
        logits = learner.module[species].pi_target(b["next_obs"][:, idx])
        next_actions[:, idx] = logits.argmax(-1)
    onehot = F.one_hot(b["actions"], N_ACTIONS).float()
    next_onehot = F.one_hot(next_actions, N_ACTIONS).float()
    out = {}
    for species, idx in slots.items():
        critic = learner.module[critic_id(species)]
        T, K = b["actions"].shape[0], len(idx)
        q = critic.q(
            critic_input(
                b["state"],
                onehot[:, None].expand(T, K, N, N_ACTIONS),
                b["alive"].float(),
                idx,
                b["obs"][:, idx],
            )
        ).squeeze(-1)
        q_next = critic.q_target(
            critic_input(
                b["next_state"],
                next_onehot[:, None].expand(T, K, N, N_ACTIONS),
                b["next_alive"].float(),
                idx,
                b["next_obs"][:, idx],
            )
        ).squeeze(-1)
        y = b["rewards"][:, idx] + GAMMA * torch.where(b["terminated"][:, idx], 0.0, q_next)
        live = b["alive"][:, idx]
        out[critic_id(species)] = float(((q - y) ** 2)[live].mean())
    return out


def test_the_critic_targets_use_target_actors_and_stop_only_at_terminal_agents(algo):
    def check(learner):
        torch.manual_seed(0)
        with torch.no_grad():  # targets clearly apart from the online networks
            for species in ("predator", "prey"):
                for p in learner.module[species].pi_target.parameters():
                    p.add_(torch.randn_like(p))
                for p in learner.module[critic_id(species)].q_target.parameters():
                    p.add_(0.5 * torch.randn_like(p))
        module = learner.module["predator"]
        obs_dim = module.pi[0].in_features
        state_dim = (
            learner.module[critic_id("predator")].q[0].in_features - obs_dim - N * N_ACTIONS - 2 * N
        )
        b = _hand_built(obs_dim, state_dim)
        with torch.no_grad():
            ours = {k: float(v) for k, v in learner.losses(b).items()}
            expected = _expected_critic_losses(learner, b)
            # power: the target actors act differently from the online ones on s'
            differ = sum(
                int(
                    (
                        learner.module[s].pi_target(b["next_obs"]).argmax(-1)
                        != learner.module[s].pi(b["next_obs"]).argmax(-1)
                    )[b["next_alive"]].sum()
                )
                for s in ("predator", "prey")
            )
        return ours, expected, differ

    ours, expected, differ = next(iter(algo.learner_group.foreach_learner(check))).get()
    assert differ > 3
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_the_runner_marks_deaths_terminal_and_the_step_limit_not(algo):
    runner = algo.env_runner_group.local_env_runner
    world, results = runner._world, []
    step = world.step

    def logged(actions):
        res = step(actions)
        results.append(copy.deepcopy(res))
        return res

    world.step = logged
    try:
        out = runner.sample_joint(40)
    finally:
        del world.step
    live = [r.acted.any(axis=1) for r in results]  # one joint transition per stepping world
    terminated = np.concatenate([r.terminated[w] for r, w in zip(results, live)])
    truncated = np.concatenate([r.truncated[w] for r, w in zip(results, live)])
    assert truncated.any() and (terminated & ~truncated).any()  # both happened
    np.testing.assert_array_equal(out["terminated"], terminated & ~truncated)
    assert not (out["terminated"] & out["next_alive"]).any()
    assert (out["alive"] & ~out["terminated"])[truncated].all()  # truncated: bootstrapped
