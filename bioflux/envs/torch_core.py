"""The batched predator–prey world in torch: the same rules as ``core.BatchedWorld``, on any
torch device, so thousands of worlds step where the policy and the learner are.

The spec is ``predator_prey.py``'s docstring; ``core.BatchedWorld`` (numpy) is the reference
engine and stays the default on CPU and the engine of the PettingZoo view. Given the same
state and the same actions (and the same random draws, see ``NumpyDraws``), the two engines
agree to the bit on positions, flags, rewards, energies and observations
(``tests/envs/test_torch_core.py``).

How it differs inside, not in what it computes:

- **No data-dependent shapes in a step.** Every tensor of ``step`` is ``(B, N)`` or
  ``(B, N, K)``; agents that do not act are masked, not filtered, so a step is a fixed
  sequence of kernels whatever the batch size and never waits on the device (no ``nonzero``,
  no ``.item()``). ``check_actions=True`` (the default) adds one device→host check of the
  action range; samplers that draw actions themselves turn it off.
- **Random draws have fixed shapes** (``TorchDraws``): one uniform per prey slot and one
  birth offset per slot each ecology step, on the device, whether a birth happens or not.
  ``NumpyDraws`` instead replays the numpy core's own calls (variable-sized, in its order)
  from a ``numpy.random.Generator``: that is how the equivalence tests share randomness.
- **Random layouts** (``reset`` without a layout) are drawn on the device with random keys
  and ``topk``: the same distribution as the numpy core's ``choice`` without replacement,
  not the same draws. To compare the engines, ``load`` copies a numpy world's state.
- **Window sums in the numpy order.** A predator's share of a capture is a sum of float32
  credits over its capture window; ``_numpy_sum`` adds them in numpy's pairwise order so
  both engines round the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bioflux.envs.config import EnvConfig
from bioflux.envs.core import ACTION_DELTAS, OBS_CHANNELS, STATE_CHANNELS, BatchedWorld, StepResult

_OBSTACLE, _PREDATORS, _PREY, _ENERGY = range(4)


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``; a CUDA request without CUDA is refused in one line."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"env_device={str(device)!r}: this machine has no CUDA device (torch "
            f"{torch.__version__}, cuda available: False); use env_device: cpu"
        )
    return device


class TorchDraws:
    """Fixed-shape random draws on the world's device (the default source)."""

    def __init__(self, device: torch.device, seed: int | None = None):
        self.generator = torch.Generator(device=device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))

    def uniform(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=device)

    def integers(self, low: int, high: int, mask: torch.Tensor, width: int = 2) -> torch.Tensor:
        """``(*mask.shape, width)`` integers in ``[low, high)``, one row per entry of ``mask``
        (the values where ``mask`` is false are unused)."""
        return torch.randint(
            low, high, (*mask.shape, width), generator=self.generator, device=mask.device
        )

    def keys(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=device)


class NumpyDraws:
    """The numpy core's draws, call for call: ``rng`` must be in the state the numpy world's
    generator is in before the step (``copy.deepcopy(world.rng)``). Variable-sized draws
    (births) are made for the ``True`` entries of a mask in row-major order, as the numpy
    core draws them for ``np.nonzero``'s order. For tests: each call syncs with the host."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def uniform(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return torch.from_numpy(self.rng.random(shape)).to(device)

    def integers(self, low: int, high: int, mask: torch.Tensor, width: int = 2) -> torch.Tensor:
        m = mask.cpu().numpy()
        out = np.zeros((*m.shape, width), dtype=np.int64)
        out[m] = self.rng.integers(low, high, size=(int(m.sum()), width))
        return torch.from_numpy(out).to(mask.device)

    def cells(self, mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
        m = mask.cpu().numpy()
        n = int(m.sum())
        rows = self.rng.integers(height, size=n)
        cols = self.rng.integers(width, size=n)
        out = np.zeros((*m.shape, 2), dtype=np.int64)
        out[m] = np.stack([rows, cols], axis=1)
        return torch.from_numpy(out).to(mask.device)

    def keys(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return torch.from_numpy(self.rng.random(shape)).to(device)


def _gather(source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``source[index]`` along the first axis, shaped ``(*index.shape, *source.shape[1:])``
    (``index_select``: several times faster than advanced indexing on CPU)."""
    out = source.index_select(0, index.reshape(-1))
    return out.view(*index.shape, *source.shape[1:])


def _numpy_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis in the order numpy's float32 ``sum(axis=-1)`` uses (its pairwise
    sum: a plain loop under 8 elements, 8 running partial sums up to 128, halves above), so
    the two engines round alike (checked against numpy in the tests)."""

    def pairwise(cols: list[torch.Tensor]) -> torch.Tensor:
        n = len(cols)
        if n < 8:
            res = cols[0]
            for c in cols[1:]:
                res = res + c
            return res
        if n <= 128:
            r = list(cols[:8])
            i = 8
            while i < n - n % 8:
                r = [r[j] + cols[i + j] for j in range(8)]
                i += 8
            res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
            for c in cols[i:]:
                res = res + c
            return res
        half = n // 2
        half -= half % 8
        return pairwise(cols[:half]) + pairwise(cols[half:])

    return pairwise(list(x.unbind(-1)))


class TorchWorld:
    """``num_worlds`` predator–prey grids as torch tensors on ``device`` (see module doc).

    State (public, like ``BatchedWorld``'s): ``walls (B,H,W)`` bool, ``pos (B,N,2)`` int64,
    ``alive``/``used (B,N)`` bool, ``energy (B,N)`` float32, ``t (B,)`` int32, ``done (B,)``.
    """

    def __init__(
        self,
        config: EnvConfig,
        num_worlds: int = 1,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        draws: TorchDraws | NumpyDraws | None = None,
    ):
        if num_worlds < 1:
            raise ValueError(f"num_worlds={num_worlds} is out of range; allowed: >= 1")
        self.config = c = config
        self.device = dev = resolve_device(device)
        self.num_worlds = B = num_worlds
        self.n_agents = N = c.n_agents_max
        self.n_pred_slots = P = c.max_predators
        self.draws = draws or TorchDraws(dev, seed)
        self.is_predator = torch.arange(N, device=dev) < P
        self.pad = pad = max(c.obs_radius, c.capture_radius, 1)
        self._hp, self._wp = hp, wp = c.height + 2 * pad, c.width + 2 * pad
        self._world_cells = hp * wp

        self.walls = torch.zeros((B, c.height, c.width), dtype=torch.bool, device=dev)
        self.pos = torch.zeros((B, N, 2), dtype=torch.int64, device=dev)
        self.alive = torch.zeros((B, N), dtype=torch.bool, device=dev)
        self.used = torch.zeros((B, N), dtype=torch.bool, device=dev)
        self.energy = torch.zeros((B, N), dtype=torch.float32, device=dev)
        self.t = torch.zeros(B, dtype=torch.int32, device=dev)
        self.done = torch.ones(B, dtype=torch.bool, device=dev)
        self._grid = torch.zeros((B, hp, wp, len(OBS_CHANNELS)), dtype=torch.float32, device=dev)
        self._flat = self._grid.view(-1, len(OBS_CHANNELS))  # one row per padded cell
        self._cells4 = self._grid.view(-1)  # index: cell * 4 + channel
        self._credit = torch.zeros(B * hp * wp, dtype=torch.float32, device=dev)
        S = c.obs_size
        sb, sh, sw, sc = self._grid.stride()
        #: every S × S window of the padded grid, by top-left cell (a view, no copy)
        self._windows = self._grid.as_strided(
            (B, hp - S + 1, wp - S + 1, S, S, len(OBS_CHANNELS)), (sb, sh, sw, sh, sw, sc)
        )
        #: how observations are cut (see ``_cut_windows``)
        self.window_copy = dev.type == "cuda"

        deltas = torch.as_tensor(ACTION_DELTAS, dtype=torch.int64, device=dev)
        self._deltas = deltas
        self._flat_deltas = deltas[:, 0] * wp + deltas[:, 1]
        r = torch.arange(-c.capture_radius, c.capture_radius + 1, device=dev)
        self._flat_capture = (r[:, None] * wp + r[None, :]).reshape(-1)
        w = torch.arange(-c.obs_radius, c.obs_radius + 1, device=dev)
        self._flat_window = w[:, None] * wp + w[None, :]
        self._species_channel = torch.where(self.is_predator, _PREDATORS, _PREY)
        self._world_index = torch.arange(B, device=dev)[:, None]

    # ------------------------------------------------------------------ reset
    def reset(
        self,
        seed: int | None = None,
        worlds: torch.Tensor | np.ndarray | list[int] | None = None,
        layout: dict[str, Any] | None = None,
    ) -> None:
        """Start new episodes in ``worlds`` (default: all), with random layouts drawn on the
        device, or ``layout`` (the numpy core's hand-placed layout dict, the same in every
        reset world; validated by the numpy core)."""
        if seed is not None:
            self.draws = TorchDraws(self.device, seed)
        idx = self._worlds(worlds)
        if layout:
            ref = BatchedWorld(self.config, num_worlds=1)
            ref.reset(layout=layout)
            self._load_arrays(idx, ref, np.zeros(len(idx), dtype=int))
            return
        self._random_layouts(idx)

    def reset_done(self) -> int:
        """Reset every world whose episode has ended (one device→host sync); returns how many."""
        idx = torch.nonzero(self.done).flatten()
        if len(idx):
            self.reset(worlds=idx)
        return len(idx)

    def load(self, world: BatchedWorld, worlds: np.ndarray | list[int] | None = None) -> None:
        """Copy the state of ``world``'s (numpy) worlds ``worlds`` (default: all) into the same
        worlds here, grid included: the way to start both engines from one layout."""
        if world.config != self.config or world.num_worlds != self.num_worlds:
            raise ValueError("load: the numpy world must have the same config and num_worlds")
        src = np.arange(world.num_worlds) if worlds is None else np.asarray(worlds, dtype=int)
        self._load_arrays(torch.as_tensor(src, device=self.device), world, src)

    def _load_arrays(self, idx: torch.Tensor, ref: BatchedWorld, src: np.ndarray) -> None:
        dev = self.device
        self.walls[idx] = torch.as_tensor(ref.walls[src], device=dev)
        self.pos[idx] = torch.as_tensor(ref.pos[src], dtype=torch.int64, device=dev)
        self.alive[idx] = torch.as_tensor(ref.alive[src], device=dev)
        self.used[idx] = torch.as_tensor(ref.used[src], device=dev)
        self.energy[idx] = torch.as_tensor(ref.energy[src], device=dev)
        self.t[idx] = torch.as_tensor(ref.t[src], dtype=torch.int32, device=dev)
        self.done[idx] = torch.as_tensor(ref.done[src], device=dev)
        self._rebuild_grid(idx)

    def _worlds(self, worlds: Any) -> torch.Tensor:
        if worlds is None:
            return torch.arange(self.num_worlds, device=self.device)
        return torch.as_tensor(
            np.asarray(worlds) if isinstance(worlds, list) else worlds,
            dtype=torch.int64,
            device=self.device,
        ).reshape(-1)

    def _random_layouts(self, idx: torch.Tensor) -> None:
        c, P, dev = self.config, self.n_pred_slots, self.device
        R, cells = len(idx), c.height * c.width
        n_walls = int(round(c.wall_density * cells))
        walls = torch.zeros((R, cells), dtype=torch.bool, device=dev)
        if n_walls:
            pick = self.draws.keys((R, cells), dev).topk(n_walls, dim=1).indices
            walls.scatter_(1, pick, True)
        n = c.n_predators + c.n_prey
        keys = self.draws.keys((R, cells), dev).masked_fill(walls, -1.0)
        spots = (
            keys.topk(n, dim=1).indices if n else torch.zeros((R, 0), dtype=torch.int64, device=dev)
        )
        rc = torch.stack([spots // c.width, spots % c.width], dim=-1)
        pos = torch.zeros((R, self.n_agents, 2), dtype=torch.int64, device=dev)
        pos[:, : c.n_predators] = rc[:, : c.n_predators]
        pos[:, P : P + c.n_prey] = rc[:, c.n_predators :]
        alive = torch.zeros((R, self.n_agents), dtype=torch.bool, device=dev)
        alive[:, : c.n_predators] = True
        alive[:, P : P + c.n_prey] = True
        energy = torch.zeros((R, self.n_agents), dtype=torch.float32, device=dev)
        energy[:, : c.n_predators] = c.energy_init
        self.walls[idx] = walls.view(R, c.height, c.width)
        self.pos[idx] = pos
        self.alive[idx] = alive
        self.used[idx] = alive
        self.energy[idx] = energy
        self.t[idx] = 0
        self.done[idx] = False
        self._rebuild_grid(idx)

    def _rebuild_grid(self, idx: torch.Tensor) -> None:
        c, p = self.config, self.pad
        g = self._grid
        g[idx] = 0.0
        g[idx, :, :, _OBSTACLE] = 1.0
        inner = g[:, p : p + c.height, p : p + c.width, _OBSTACLE]
        inner[idx] = self.walls[idx].float()
        self._add_counts(self._cells_of(idx[:, None], self.pos[idx]), self.alive[idx])

    # ------------------------------------------------------------------- step
    def _cells_of(self, worlds: torch.Tensor, rc: torch.Tensor) -> torch.Tensor:
        """Flat padded-grid index of cells ``rc (..., 2)`` in ``worlds`` (broadcast)."""
        return (
            worlds * self._world_cells + (rc[..., 0] + self.pad) * self._wp + rc[..., 1] + self.pad
        )

    def step(self, actions: torch.Tensor, check_actions: bool = True) -> StepResult:
        """Advance every world one step; ``actions`` ``(B, N)`` ints in ``[0, 5)``. Returns a
        ``StepResult`` of tensors on the device (``BatchedWorld.step``'s fields)."""
        c, P, dev = self.config, self.n_pred_slots, self.device
        actions = torch.as_tensor(actions, device=dev)
        if actions.shape != self.alive.shape:
            raise ValueError(
                f"actions must have shape {tuple(self.alive.shape)}, got {tuple(actions.shape)}"
            )
        active = ~self.done
        acted = self.alive & active[:, None]
        if check_actions:
            bad = acted & ((actions < 0) | (actions >= len(ACTION_DELTAS)))
            if bool(bad.any()):
                value = int(actions[bad][0])
                raise ValueError(
                    f"action {value!r} is out of range; allowed: 0..{len(ACTION_DELTAS) - 1}"
                )
        act = actions.long().clamp(0, len(ACTION_DELTAS) - 1)
        G, C, is_pred = self._cells4, len(OBS_CHANNELS), self.is_predator[None, :]
        old_cell = self._cells_of(self._world_index, self.pos)
        # everyone who acts leaves the count grid: the numpy core zeroes their cells, which
        # hold nobody else (the worlds that do not act hold their own cells), so subtracting
        # each mover once gives the same exact integer counts. Every update below adds into
        # an agent's own cell (0 where it does not apply) rather than writing to one shared
        # dummy address, which a GPU would serialise.
        species = self._species_channel.expand_as(acted)
        G.index_add_(0, (old_cell * C + species).reshape(-1), -acted.reshape(-1).float())

        # 1. move (into walls or off the grid, where the padding is an obstacle: stay)
        new_cell = old_cell + self._flat_deltas[act]
        ok = acted & (_gather(G, new_cell * C + _OBSTACLE) == 0.0)
        cell = torch.where(ok, new_cell, old_cell)
        self.pos = self.pos + self._deltas[act] * ok[..., None]

        # 2. capture: predators within the Chebyshev radius of each prey (counts are exact)
        pred_moved = acted & is_pred
        flat_cell = cell.reshape(-1)
        G.index_add_(0, flat_cell * C + _PREDATORS, pred_moved.reshape(-1).float())
        window = cell[..., None] + self._flat_capture  # (B, N, K)
        threat = _numpy_sum(_gather(G, window * C + _PREDATORS))
        caught = acted & ~is_pred & (threat >= c.capture_predators)
        # each capture's credit is split equally among the predators within the radius
        credit = torch.where(caught, 1.0 / threat.clamp(min=1.0), 0.0)
        self._credit.index_add_(0, flat_cell, credit.reshape(-1))
        share = torch.where(pred_moved, _numpy_sum(_gather(self._credit, window)), 0.0)
        self._credit.index_fill_(0, flat_cell, 0.0)  # credit lies only on agents' cells
        G.index_add_(0, flat_cell * C + _PREDATORS, -pred_moved.reshape(-1).float())
        captured = caught.sum(dim=1)

        step_reward = torch.full_like(share, c.reward_predator_step)
        pred_reward = step_reward + c.reward_capture * share
        prey_reward = torch.where(
            caught,
            torch.tensor(c.reward_caught, dtype=torch.float32, device=dev),
            torch.tensor(c.reward_prey_alive, dtype=torch.float32, device=dev),
        )
        rewards = torch.where(acted, torch.where(is_pred, pred_reward, prey_reward), 0.0)
        terminated = caught.clone()
        self.alive = self.alive & ~caught

        born = torch.zeros_like(acted)
        starved = torch.zeros_like(acted)
        if c.ecology:
            rewards, starved, born = self._ecology_step(pred_moved, share, rewards, active)
            terminated = terminated | starved
            self._add_counts(
                self._cells_of(self._world_index, self.pos), self.alive & active[:, None]
            )
        else:
            self._add_counts(cell, acted & ~caught)

        # 3. episode end
        self.t = self.t + active.to(torch.int32)
        n_pred = self.alive[:, :P].sum(dim=1)
        n_prey = self.alive[:, P:].sum(dim=1)
        ended = active & ((n_pred == 0) | (n_prey == 0))
        timeout = active & ~ended & (self.t >= c.max_steps)
        terminated = terminated | (self.alive & ended[:, None])
        truncated = self.alive & timeout[:, None]
        self.done = self.done | ended | timeout
        return StepResult(
            rewards,
            terminated,
            truncated,
            acted,
            born,
            caught,
            starved,
            captured,
            ended | timeout,
        )

    def _add_counts(self, cells: torch.Tensor, who: torch.Tensor) -> None:
        """Count ``who`` (a ``(B, N)`` mask) in its species' channel at ``cells``."""
        index = cells * len(OBS_CHANNELS) + self._species_channel
        self._cells4.index_add_(0, index.reshape(-1), who.reshape(-1).float())

    def _ecology_step(self, pred_moved, share, rewards, active):
        c, P, dev = self.config, self.n_pred_slots, self.device
        if c.predator_crowding is None:
            gain = c.energy_gain * share - c.energy_decay
            self.energy = torch.where(pred_moved, self.energy + gain, self.energy)
        else:  # in float64, as the numpy core (float32 energy plus a float64 loss per world)
            n_pred = self.alive[:, :P].sum(dim=1, keepdim=True).double()
            crowding = torch.full_like(n_pred, c.predator_crowding)
            loss = c.energy_decay * (1.0 + n_pred / crowding)
            total = (self.energy.double() + ((c.energy_gain * share).double() - loss)).float()
            self.energy = torch.where(pred_moved, total, self.energy)
        starved = pred_moved & (self.energy <= 0.0)
        rewards = torch.where(starved, rewards + c.reward_starved, rewards)
        self.alive = self.alive & ~starved
        fertile_pred = self.alive[:, :P] & (self.energy[:, :P] >= c.reproduce_energy)
        prob = torch.full((self.num_worlds, 1), c.prey_birth_prob, dtype=torch.float64, device=dev)
        if c.prey_capacity is not None:
            n_prey = self.alive[:, P:].sum(dim=1, keepdim=True)
            # a tensor divisor: CUDA divides by a scalar as a product with its reciprocal,
            # which rounds differently from numpy's division
            capacity = torch.full_like(n_prey, c.prey_capacity, dtype=torch.float64)
            prob = prob * torch.clamp(1.0 - n_prey.double() / capacity, 0.0, 1.0)
        u = self.draws.uniform(tuple(self.alive[:, P:].shape), dev)
        fertile_prey = self.alive[:, P:] & (u < prob)
        fertile = torch.cat([fertile_pred, fertile_prey], dim=1) & active[:, None]
        born = torch.zeros_like(self.alive)
        for lo, hi in ((0, P), (P, self.n_agents)):
            parent_ok, child = self._give_birth(fertile, lo, hi)
            born = born | self._put(torch.zeros_like(self.alive), parent_ok, child, parent_ok)
            if lo == 0 and hi > lo:
                half = torch.where(parent_ok, self.energy[:, lo:hi] * 0.5, self.energy[:, lo:hi])
                self.energy = torch.cat([half, self.energy[:, hi:]], dim=1)
                self.energy = self._put(self.energy, parent_ok, child, half)
        return rewards, starved, born

    def _give_birth(self, fertile: torch.Tensor, lo: int, hi: int):
        """Match fertile parents in slots ``[lo, hi)`` to free slots (as the numpy core):
        returns which parents gave birth ``(B, hi-lo)`` and their children's slots."""
        B, dev = self.num_worlds, self.device
        if hi == lo:
            empty = torch.zeros((B, 0), dtype=torch.bool, device=dev)
            return empty, empty.long()
        cand = fertile[:, lo:hi]
        free = ~(self.alive if self.config.recycle_slots else self.used)[:, lo:hi]
        free_first = torch.sort((~free).to(torch.int8), dim=1, stable=True).indices
        rank = torch.cumsum(cand.to(torch.int64), dim=1) - 1
        ok = cand & (rank < free.sum(dim=1, keepdim=True))
        child = torch.gather(free_first, 1, rank.clamp(min=0)) + lo
        parent_pos = self.pos[:, lo:hi]
        radius = self.config.birth_radius
        if radius is None:
            if isinstance(self.draws, NumpyDraws):
                spot = self.draws.cells(ok, self.config.height, self.config.width)
            else:
                u = self.draws.uniform((B, hi - lo, 2), dev)
                size = torch.tensor([self.config.height, self.config.width], device=dev)
                spot = (u * size).long().clamp(max=size - 1)
        else:
            spot = parent_pos + self.draws.integers(-radius, radius + 1, ok)
        spot = torch.where(self._valid(spot)[..., None], spot, parent_pos)
        self.pos = self._put(self.pos, ok, child, spot)
        new = self._put(torch.zeros_like(self.alive), ok, child, ok)
        self.alive = self.alive | new
        self.used = self.used | new
        return ok, child

    def _put(self, target, ok, child, values):
        """``target (B, N, ...)`` with ``target[b, child[b, i]] = values[b, i]`` where
        ``ok (B, K)``. Children are distinct slots; the entries that do not write go to
        scratch rows of their own, so no two writes share an address (deterministic, and no
        serialised writes to one dummy address on a GPU)."""
        B, N, K = self.num_worlds, self.n_agents, ok.shape[1]
        rest = tuple(target.shape[2:])
        buf = torch.cat([target.reshape(B * N, *rest), target.new_zeros((B * K, *rest))])
        scratch = B * N + torch.arange(B * K, device=self.device).view(B, K)
        index = torch.where(ok, self._world_index * N + child, scratch)
        buf[index.reshape(-1)] = values.reshape(B * K, *rest).to(target.dtype)
        return buf[: B * N].view(target.shape)

    def _valid(self, rc: torch.Tensor) -> torch.Tensor:
        """In the grid and not a wall, for ``rc (B, K, 2)`` cells of each world."""
        c = self.config
        r, col = rc[..., 0], rc[..., 1]
        inside = (r >= 0) & (r < c.height) & (col >= 0) & (col < c.width)
        flat = r.clamp(0, c.height - 1) * c.width + col.clamp(0, c.width - 1)
        wall = torch.gather(self.walls.view(self.num_worlds, -1), 1, flat)
        return inside & ~wall

    # ------------------------------------------------------------ observation
    def observe(self, worlds: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Egocentric windows ``(M, S, S, 4)`` float32 of agents ``(worlds[i], slots[i])``
        (``BatchedWorld.observe``'s layout and channels)."""
        worlds = torch.as_tensor(worlds, dtype=torch.int64, device=self.device)
        slots = torch.as_tensor(slots, dtype=torch.int64, device=self.device)
        obs = self._cut_windows(worlds, self.pos[worlds, slots])
        obs[..., _ENERGY] = self.own_energy(worlds, slots)[:, None, None]
        return obs

    def observe_all(self) -> torch.Tensor:
        """Windows ``(B, N, S, S, 4)`` of every slot, alive or not (mask with ``alive``)."""
        obs = self._cut_windows(self._world_index.expand_as(self.alive), self.pos)
        obs[..., _ENERGY] = self._own_energy_all()[..., None, None]
        return obs

    def _cut_windows(self, worlds: torch.Tensor, rc: torch.Tensor) -> torch.Tensor:
        """The ``S × S × 4`` windows of the padded grid centred on cells ``rc (..., 2)``.

        Two equal ways (``window_copy``): on a GPU, advanced indexing into a strided view of
        every window (``as_strided``: no copy), so each window is copied as ``S`` runs of
        ``S × 4`` contiguous floats; on a CPU, ``index_select`` of one 4-float cell per
        window element, which is faster there."""
        if self.window_copy:
            p, r = self.pad, self.config.obs_radius
            return self._windows[worlds, rc[..., 0] + (p - r), rc[..., 1] + (p - r)]
        centre = self._cells_of(worlds, rc)
        return _gather(self._flat, centre[..., None, None] + self._flat_window)

    def own_energy(self, worlds: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        return self._own_energy_all()[worlds, slots]

    def _own_energy_all(self) -> torch.Tensor:
        c = self.config
        pred = self.is_predator[None, :].expand_as(self.alive)
        if not c.ecology:
            return pred.float()
        level = torch.clamp(
            self.energy / torch.full_like(self.energy, c.reproduce_energy), 0.0, 1.0
        )  # a tensor divisor, as in _ecology_step
        return torch.where(pred, level, 0.0)

    def states(self, worlds: torch.Tensor | None = None) -> torch.Tensor:
        """Global states ``(len(worlds), H, W, 3)`` (``BatchedWorld.states``)."""
        p, c = self.pad, self.config
        grid = self._grid if worlds is None else self._grid[self._worlds(worlds)]
        return grid[:, p : p + c.height, p : p + c.width, : len(STATE_CHANNELS)].clone()

    def state(self, world: int = 0) -> torch.Tensor:
        return self.states([world])[0]

    def populations(self) -> torch.Tensor:
        """Live ``(predators, prey)`` per world, ``(B, 2)``."""
        P = self.n_pred_slots
        return torch.stack([self.alive[:, :P].sum(1), self.alive[:, P:].sum(1)], dim=1)


class ViewEncoder:
    """Observations and global states re-encoded from compact world states, on a device.

    A replay that keeps compact states (walls as packed bits, positions, alive flags,
    energies: a few hundred bytes per world and step, instead of every agent's window and the
    whole grid) hands them to its learner, which cuts the views it trains on here, with the
    torch core's own encoding (the same windows and channels as ``BatchedWorld.observe`` and
    ``states``)."""

    def __init__(self, config: EnvConfig, device: str | torch.device = "cpu"):
        self.config = config
        self.device = resolve_device(device)
        self._world: TorchWorld | None = None

    def encode(
        self,
        walls: torch.Tensor,
        pos: torch.Tensor,
        alive: torch.Tensor,
        energy: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``walls``: packed bits ``(M, ceil(H·W/8))`` uint8 (``numpy.packbits`` of the
        row-major grid) or ``(M, H, W)`` bool; ``pos (M, N, 2)``, ``alive (M, N)``,
        ``energy (M, N)``. Returns every slot's flattened observation ``(M, N, S·S·4)``
        (mask the slots yourself) and the flattened states ``(M, H·W·3)``."""
        c, M = self.config, len(pos)
        if self._world is None or self._world.num_worlds != M:
            self._world = TorchWorld(c, num_worlds=M, device=self.device)
        w = self._world
        walls = torch.as_tensor(walls, device=self.device)
        if walls.dtype == torch.uint8:
            shifts = torch.arange(7, -1, -1, device=self.device, dtype=torch.uint8)
            bits = (walls[..., None] >> shifts) & 1
            walls = bits.reshape(M, -1)[:, : c.height * c.width].bool()
        w.walls = walls.reshape(M, c.height, c.width).clone()
        w.pos = torch.as_tensor(pos, device=self.device).long()
        w.alive = torch.as_tensor(alive, device=self.device).bool()
        w.energy = torch.as_tensor(energy, device=self.device).float()
        w._rebuild_grid(torch.arange(M, device=self.device))
        return w.observe_all().reshape(M, w.n_agents, -1), w.states().reshape(M, -1)
