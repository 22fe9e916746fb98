"""The torch core follows the numpy core to the bit: same layouts, same actions, same draws."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from bioflux.envs.config import EnvConfig
from bioflux.envs.core import BatchedWorld
from bioflux.envs.torch_core import NumpyDraws, TorchWorld, _numpy_sum, resolve_device

FIELDS = (
    "rewards",
    "terminated",
    "truncated",
    "acted",
    "born",
    "caught",
    "starved",
    "captured",
    "done",
)

SMALL = dict(
    height=16, width=16, n_predators=5, n_prey=24, max_steps=25, obs_radius=3, wall_density=0.06
)
COOPERATIVE = dict(SMALL, n_predators=12, n_prey=30, capture_predators=2, capture_radius=2)
ECOLOGY = dict(
    height=14,
    width=14,
    n_predators=6,
    n_prey=30,
    max_steps=60,
    obs_radius=2,
    wall_density=0.05,
    ecology=True,
    energy_init=6.0,
    energy_decay=1.0,
    energy_gain=7.0,
    reproduce_energy=9.0,
    prey_birth_prob=0.08,
    prey_capacity=60,
    max_predators=40,
    max_prey=140,
)
ECOLOGY_GLOBAL = dict(
    ECOLOGY,
    birth_radius=None,
    recycle_slots=True,
    max_predators=10,
    max_prey=45,
    prey_capacity=None,
    capture_radius=0,
)


def run_both(
    kwargs: dict, worlds: int, steps: int, seed: int, device: str = "cpu", window_copy=None
):
    """Step a numpy and a torch world side by side; assert equality after every step; return
    event counts (so each test can check that it exercised what it claims to)."""
    cfg = EnvConfig(**kwargs)
    nw = BatchedWorld(cfg, num_worlds=worlds, seed=seed)
    nw.reset()
    tw = TorchWorld(cfg, num_worlds=worlds, device=device, draws=NumpyDraws(None))
    tw.load(nw)
    if window_copy is not None:
        tw.window_copy = window_copy
    rng = np.random.default_rng(seed + 1)
    events = dict.fromkeys(
        ("captures", "births", "starved", "truncated", "resets", "shared_credit", "blocked"), 0
    )
    for _ in range(steps):
        if nw.done.any():
            done = np.flatnonzero(nw.done)
            nw.reset(worlds=done)
            tw.load(nw, done)
            events["resets"] += len(done)
        actions = rng.integers(0, 5, size=nw.alive.shape)
        tw.draws.rng = copy.deepcopy(nw.rng)
        before = nw.pos.copy()
        res_t = tw.step(torch.as_tensor(actions, device=device))
        res_n = nw.step(actions)
        for f in FIELDS:
            np.testing.assert_array_equal(
                getattr(res_t, f).cpu().numpy(), getattr(res_n, f), err_msg=f
            )
        for f in ("pos", "alive", "used", "energy", "t", "done", "walls"):
            np.testing.assert_array_equal(getattr(tw, f).cpu().numpy(), getattr(nw, f), err_msg=f)
        b, a = np.nonzero(nw.alive)
        np.testing.assert_array_equal(
            tw.observe(torch.as_tensor(b), torch.as_tensor(a)).cpu().numpy(), nw.observe(b, a)
        )
        np.testing.assert_array_equal(tw.states().cpu().numpy(), nw.states())
        r = res_n.rewards[:, : nw.n_pred_slots][res_n.acted[:, : nw.n_pred_slots]]
        events["shared_credit"] += int(np.sum((r % 1 != 0) & (np.abs(r) > 0.02)))
        events["captures"] += int(res_n.captured.sum())
        events["births"] += int(res_n.born.sum())
        events["starved"] += int(res_n.starved.sum())
        events["truncated"] += int(res_n.truncated.sum())
        moved = (actions > 0) & res_n.acted
        events["blocked"] += int((moved & (nw.pos == before).all(-1)).sum())
    return events


def test_default_mode_matches_numpy_bit_for_bit():
    ev = run_both(SMALL, worlds=6, steps=120, seed=3)
    assert ev["captures"] > 50 and ev["truncated"] > 0 and ev["resets"] > 6
    assert ev["blocked"] > 0  # walls and the grid's edge


def test_cooperative_captures_split_credit_like_numpy():
    ev = run_both(COOPERATIVE, worlds=4, steps=80, seed=5)
    assert ev["captures"] > 20
    assert ev["shared_credit"] > 0  # rewards that are fractions of a capture


def test_ecology_mode_matches_numpy_bit_for_bit():
    ev = run_both(ECOLOGY, worlds=5, steps=150, seed=7)
    assert ev["births"] > 100 and ev["starved"] > 5 and ev["captures"] > 20


def test_ecology_global_dispersal_and_recycled_slots_match_numpy():
    ev = run_both(ECOLOGY_GLOBAL, worlds=4, steps=150, seed=11)
    assert ev["births"] > 50 and ev["starved"] > 0


def test_predator_crowding_matches_numpy_bit_for_bit():
    ev = run_both(dict(ECOLOGY, predator_crowding=7.0), worlds=5, steps=150, seed=7)
    assert ev["births"] > 50 and ev["starved"] > 5


def test_default_world_matches_numpy():
    run_both({}, worlds=2, steps=40, seed=0)


@pytest.mark.parametrize("kwargs", [SMALL, ECOLOGY], ids=["default", "eco"])
def test_both_ways_of_cutting_windows_match_numpy(kwargs):
    """The GPU's way (a strided view of every window) and the CPU's (index_select)."""
    for window_copy in (True, False):
        run_both(kwargs, worlds=3, steps=40, seed=13, window_copy=window_copy)


def test_window_sums_round_like_numpy():
    rng = np.random.default_rng(0)
    for k in (1, 3, 9, 25, 121, 169):
        x = (1.0 / rng.integers(1, 9, (5000, k))).astype(np.float32)
        np.testing.assert_array_equal(_numpy_sum(torch.from_numpy(x)).numpy(), x.sum(axis=1))


def test_random_layouts_on_the_device_are_valid():
    cfg = EnvConfig(**SMALL)
    tw = TorchWorld(cfg, num_worlds=64, seed=0)
    tw.reset()
    n_walls = int(round(cfg.wall_density * cfg.height * cfg.width))
    assert (tw.walls.sum(dim=(1, 2)) == n_walls).all()
    P = cfg.max_predators
    assert (tw.populations() == torch.tensor([cfg.n_predators, cfg.n_prey])).all()
    cells = tw.pos[..., 0] * cfg.width + tw.pos[..., 1]
    for b in range(64):
        live = cells[b][tw.alive[b]]
        assert len(live.unique()) == len(live)  # distinct cells
        assert not tw.walls[b].view(-1)[live].any()  # free cells
    # layouts differ between worlds and reproduce with the seed
    assert not torch.equal(tw.pos[0], tw.pos[1])
    again = TorchWorld(cfg, num_worlds=64, seed=0)
    again.reset()
    assert torch.equal(again.pos, tw.pos) and torch.equal(again.walls, tw.walls)
    assert tw.is_predator[:P].all()


def _grid_from_state(tw: TorchWorld) -> torch.Tensor:
    """The count grid rebuilt from the state alone."""
    ref = TorchWorld(tw.config, num_worlds=tw.num_worlds)
    ref.walls, ref.pos, ref.alive = tw.walls.clone(), tw.pos.clone(), tw.alive.clone()
    ref._rebuild_grid(torch.arange(tw.num_worlds))
    return ref._grid


@pytest.mark.parametrize(
    "kwargs", [SMALL, ECOLOGY, ECOLOGY_GLOBAL], ids=["default", "eco", "eco-global"]
)
def test_device_draws_keep_the_world_consistent(kwargs):
    """With its own fixed-shape draws (no numpy to follow): the sparse count grid always
    equals the one rebuilt from the state, auto-reset works, populations stay in the pools."""
    cfg = EnvConfig(**kwargs)
    tw = TorchWorld(cfg, num_worlds=8, seed=1)
    tw.reset()
    gen = torch.Generator().manual_seed(0)
    births = 0
    for _ in range(100):
        tw.reset_done()
        res = tw.step(
            torch.randint(0, 5, tuple(tw.alive.shape), generator=gen), check_actions=False
        )
        births += int(res.born.sum())
        assert torch.equal(tw._grid, _grid_from_state(tw))
        assert (tw.alive <= tw.used).all()
    if cfg.ecology:
        assert births > 0


def test_invalid_actions_and_shapes_are_refused():
    tw = TorchWorld(EnvConfig(**SMALL), num_worlds=2, seed=0)
    tw.reset()
    bad = torch.zeros(tuple(tw.alive.shape), dtype=torch.int64)
    bad[0, 0] = 7
    with pytest.raises(ValueError, match="action 7 is out of range"):
        tw.step(bad)
    with pytest.raises(ValueError, match="actions must have shape"):
        tw.step(torch.zeros((1, 3), dtype=torch.int64))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_cuda_request_without_cuda_is_refused_in_one_line():
    with pytest.raises(ValueError, match="no CUDA device") as err:
        resolve_device("cuda")
    assert "\n" not in str(err.value)


@pytest.mark.gpu
@pytest.mark.parametrize("kwargs", [SMALL, COOPERATIVE, ECOLOGY], ids=["default", "coop", "eco"])
def test_the_cuda_core_matches_numpy(kwargs):
    for window_copy in (True, False):
        run_both(kwargs, worlds=4, steps=60, seed=2, device="cuda", window_copy=window_copy)
