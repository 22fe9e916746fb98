"""Episodes on a torch device (``bioflux.device_rollout``) against the numpy path
(``bioflux.evaluation.run_episodes``): from one layout and the numpy core's own draws, with
deterministic policies, every episode's record is identical; with sampled actions the device's
own generators give the same statistics."""

import copy

import numpy as np
import pytest
import torch

from bioflux.device_rollout import evaluation_device, run_episodes_on_device
from bioflux.envs.config import EnvConfig
from bioflux.envs.core import BatchedWorld
from bioflux.envs.torch_core import NumpyDraws, TorchWorld
from bioflux.evaluation import run_episodes
from bioflux.policies import load_policy

WORLD = dict(height=14, width=14, n_predators=4, n_prey=12, max_steps=40, obs_radius=2)


def _replayed_world(cfg: EnvConfig, episodes: int, seed: int) -> TorchWorld:
    """A TorchWorld starting from the numpy path's layouts and replaying its draws."""
    ref = BatchedWorld(cfg, num_worlds=episodes, seed=seed)
    ref.reset()
    world = TorchWorld(cfg, num_worlds=episodes, draws=NumpyDraws(copy.deepcopy(ref.rng)))
    world.load(ref)
    return world


@pytest.mark.parametrize("kwargs", [{}, {"ecology": True, "energy_init": 4.0}])
def test_records_equal_the_numpy_paths_with_deterministic_policies(kwargs):
    cfg = EnvConfig(**WORLD, **kwargs)
    predator = load_policy("lotka_volterra", "predator")
    prey = load_policy("lotka_volterra", "prey")
    episodes, seed = 12, 7
    expected = run_episodes(predator, prey, cfg, episodes, seed=seed, greedy=True)
    ours = run_episodes_on_device(
        predator,
        prey,
        cfg,
        episodes,
        seed=seed,
        greedy=True,
        world=_replayed_world(cfg, episodes, seed),
    )
    key = lambda r: (r.length, r.captures, r.prey_total, r.predator_returns, r.prey_returns)  # noqa: E731
    assert sorted(map(key, ours)) == sorted(map(key, expected))
    assert sum(r.captures for r in ours) > 0  # power: the predators catch prey
    assert [r.first_capture_step for r in sorted(ours, key=key)] == [
        r.first_capture_step for r in sorted(expected, key=key)
    ]


def _sampled_against_numpy(device: str, episodes: int):
    """LV predators against random prey, sampled on ``device`` and on the numpy path: the
    mean capture rates agree within 4 standard errors. Returns (device records, policies)."""
    cfg = EnvConfig(**WORLD)
    predator = load_policy("lotka_volterra", "predator")
    prey = load_policy("random", "prey")
    ours = run_episodes_on_device(predator, prey, cfg, episodes, seed=1, device=device)
    theirs = run_episodes(predator, prey, cfg, episodes, seed=1)
    a = np.array([r.capture_rate for r in ours])
    b = np.array([r.capture_rate for r in theirs])
    se = np.sqrt(a.var() / a.size + b.var() / b.size)
    assert abs(a.mean() - b.mean()) < 4 * se, (a.mean(), b.mean(), se)
    return ours, (predator, prey, cfg)


def test_sampled_episodes_match_the_numpy_paths_statistics():
    ours, (predator, prey, cfg) = _sampled_against_numpy("cpu", 300)
    # reproducible from the seed, and the seed matters
    again = run_episodes_on_device(predator, prey, cfg, 300, seed=1, device="cpu")
    assert [r.captures for r in again] == [r.captures for r in ours]
    other = run_episodes_on_device(predator, prey, cfg, 300, seed=2, device="cpu")
    assert [r.captures for r in other] != [r.captures for r in ours]


def test_evaluation_device_choice():
    assert evaluation_device("cpu") is None
    if not torch.cuda.is_available():
        assert evaluation_device("auto") is None
        with pytest.raises(ValueError, match="no CUDA device"):
            evaluation_device("cuda")


@pytest.mark.gpu
def test_cuda_episodes_match_the_numpy_paths_statistics():
    _sampled_against_numpy("cuda", 400)
