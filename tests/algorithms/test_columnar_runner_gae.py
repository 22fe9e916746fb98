"""The columnar EnvRunner's GAE inputs, checked against an independent replay.

``ColumnarEnvRunner.sample_columnar`` builds the ``terminated`` / ``continues`` / ``bootstrap``
masks that ``dense_gae`` consumes. ``test_columnar_ppo`` checks ``dense_gae`` on hand-built
masks; this test checks the masks the runner itself builds. It records the runner's world
calls (resets, actions) and its value predictions, replays those calls on a second
``BatchedWorld`` with the same seed, cuts the replay into per-agent trajectories with its own
bookkeeping (a death ends one with no bootstrap, the step limit ends it with the value of its
final observation, the fragment's end cuts it with the value of its current observation, a
newborn or a reset world starts a new one), and computes every trajectory's advantages and
value targets with RLlib's ``compute_value_targets``. The runner's columns must equal them.

Two fragments of an ecology world with a short step limit cover deaths (captures,
starvation), truncation, fragment ends mid-episode, births and reset worlds; the test checks
that each of these occurred.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets

from bioflux import config
from bioflux.algorithms.ppo import build_config
from bioflux.envs.config import EnvConfig
from bioflux.envs.core import BatchedWorld
from tests.conftest import TINY

GAMMA, LAMBDA = 0.9, 0.8


@pytest.fixture(scope="module")
def runner(ray_session):
    cfg = copy.deepcopy(TINY)
    cfg["resources"].update(env_runner="columnar", num_envs_per_env_runner=3)
    cfg["env"].update(ecology=True, max_steps=12)  # deaths, births, the step limit
    cfg["training"].update(gamma=GAMMA, gae_lambda=LAMBDA, train_batch_size=300)
    algo = build_config(config.validate(cfg)).build_algo()
    yield algo.env_runner_group.local_env_runner
    algo.stop()


def _record(runner) -> list[tuple]:
    """Log the runner's world resets and steps and its action/value calls, in order."""
    log: list[tuple] = []
    world = runner._world
    reset, step, act = world.reset, world.step, runner._act_and_value

    def logged_reset(*args, **kwargs):
        log.append(("reset", args, copy.deepcopy(kwargs)))
        return reset(*args, **kwargs)

    def logged_step(actions):
        log.append(("step", actions.copy()))
        return step(actions)

    def logged_act(obs, is_pred, explore):
        out = act(obs, is_pred, explore)
        log.append(("act", obs.copy(), out[3].copy()))
        return out

    world.reset, world.step, runner._act_and_value = logged_reset, logged_step, logged_act
    return log


def _values(runner, world: BatchedWorld, b: np.ndarray, a: np.ndarray) -> np.ndarray:
    """V of the agents' current observations in ``world``, by their species' module."""
    obs = world.observe(b, a).reshape(len(a), -1)
    out = np.zeros(len(a), dtype=np.float32)
    for species, mask in (("predator", world.is_predator[a]), ("prey", ~world.is_predator[a])):
        if mask.any():
            with torch.no_grad():
                out[mask] = (
                    runner.module[species]
                    .compute_values({Columns.OBS: torch.from_numpy(obs[mask])})
                    .numpy()
                )
    return out


class _Replay:
    """The independent side: a world driven by the logged calls, cut into trajectories."""

    def __init__(self, runner) -> None:
        env = EnvConfig.from_kwargs(dict(runner.config.env_config))
        self.world = BatchedWorld(
            env.require_agent_identity("training"),
            num_worlds=runner.config.num_envs_per_env_runner,
            seed=runner._world_seed,
        )
        self.runner = runner
        self.open: dict[tuple[int, int], list[tuple[int, float, float]]] = {}
        self.seen = dict(terminal=0, truncated=0, cut=0, born=0, resets=0, continued=0)

    def fragment(self, log: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Replay one fragment's calls; returns per flat row (the runner's order: every step's
        actors, row-major): the expected advantages and value targets, and whether the row is
        a predator's."""
        w, rows, done, is_pred = self.world, 0, [], []
        for i, event in enumerate(log):
            if event[0] == "reset":
                w.reset(*event[1], **event[2])
                self.seen["resets"] += 1
                worlds = event[2].get("worlds", range(w.num_worlds))
                assert not [k for k in self.open if k[0] in set(np.asarray(worlds).tolist())]
            elif event[0] == "act":
                obs, values = event[1], event[2]
                b, a = np.nonzero(w.alive & ~w.done[:, None])  # who acts, row-major
                assert np.array_equal(obs, w.observe(b, a).reshape(len(a), -1))  # in sync
                assert log[i + 1][0] == "step"
                res = w.step(log[i + 1][1])
                self.seen["born"] += int(res.born.sum())
                for j, (bj, aj) in enumerate(zip(b.tolist(), a.tolist())):
                    traj = self.open.setdefault((bj, aj), [])
                    self.seen["continued"] += bool(traj)
                    traj.append((rows + j, float(values[j]), float(res.rewards[bj, aj])))
                ended = (res.terminated | res.truncated)[b, a]
                assert ended[res.done[b]].all()  # an ended episode ends every trajectory
                if (res.truncated[b, a] & ~res.terminated[b, a]).any():
                    cut = res.truncated[b, a] & ~res.terminated[b, a]
                    boots = _values(self.runner, w, b[cut], a[cut])  # final observations
                    for bj, aj, v in zip(b[cut].tolist(), a[cut].tolist(), boots.tolist()):
                        done.append((self.open.pop((bj, aj)), False, v))
                        self.seen["truncated"] += 1
                died = res.terminated[b, a]
                for bj, aj in zip(b[died].tolist(), a[died].tolist()):
                    done.append((self.open.pop((bj, aj)), True, 0.0))
                    self.seen["terminal"] += 1
                rows += len(a)
                is_pred.append(w.is_predator[a])
        # the fragment ends: what is still running is cut, bootstrapped from its current obs
        keys = sorted(self.open)
        if keys:
            b, a = np.array([k[0] for k in keys]), np.array([k[1] for k in keys])
            for key, v in zip(keys, _values(self.runner, w, b, a).tolist()):
                done.append((self.open.pop(key), False, v))
                self.seen["cut"] += 1
        advantages, targets = np.full(rows, np.nan), np.full(rows, np.nan)
        for traj, terminal, boot in done:
            n = len(traj)
            values = np.array([v for _, v, _ in traj] + [boot])
            rewards = np.array([r for _, _, r in traj] + [0.0])
            terminateds, truncateds = np.zeros(n + 1), np.zeros(n + 1)
            terminateds[n - 1], truncateds[n - 1], truncateds[n] = terminal, not terminal, 1
            expected = compute_value_targets(
                values, rewards, terminateds, truncateds, GAMMA, LAMBDA
            )
            index = [r for r, _, _ in traj]
            targets[index] = expected[:-1]
            advantages[index] = expected[:-1] - values[:-1]
        assert not np.isnan(targets).any()  # every row belongs to exactly one trajectory
        return advantages, targets, np.concatenate(is_pred)


def test_the_runners_advantages_and_targets_equal_rllibs_on_a_replayed_world(runner):
    assert runner._cur is None  # the first sample resets every world: logged
    log = _record(runner)
    replay = _Replay(runner)
    for _ in range(3):  # fragments: the later ones start mid-episode
        start = len(log)
        out = runner.sample_columnar(300)
        advantages, targets, is_pred = replay.fragment(log[start:])
        for species, mask in (("predator", is_pred), ("prey", ~is_pred)):
            cols = out[species]
            np.testing.assert_allclose(
                cols[Postprocessing.ADVANTAGES], advantages[mask], rtol=1e-4, atol=1e-4
            )
            np.testing.assert_allclose(
                cols[Postprocessing.VALUE_TARGETS], targets[mask], rtol=1e-4, atol=1e-4
            )
    seen = replay.seen
    assert seen["terminal"] and seen["truncated"] and seen["cut"] and seen["born"], seen
    assert seen["resets"] > 1 and seen["continued"], seen  # worlds restarted mid-fragment
