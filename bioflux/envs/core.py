"""Batched, dict-free predator–prey world: ``B`` worlds stepped together as numpy arrays.

This is the engine. The PettingZoo env (``predator_prey_v0``) is a thin dict view over a
``BatchedWorld`` with ``num_worlds=1``; fast sampling and ecology simulations drive it directly.

Agents live in fixed slots: slots ``0 … max_predators-1`` are predators, the rest are prey.
A slot is *used* once an agent has occupied it; a dead agent's slot is never reused, so a
newborn always takes a fresh slot (PettingZoo forbids reviving an agent) — unless
``recycle_slots`` is set (simulations that only count agents), when a newborn may take any
slot that is not alive. Several agents may
share a cell. Positions are ``(row, col)``; "up" decreases the row.

Every step is vectorised over all worlds and agents: move → capture → rewards → energy and
starvation → births → episode end. The padded count grid that observations are cut from is
updated sparsely (only the cells agents left or entered), so a step costs O(agents), not O(cells).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bioflux.envs.config import EnvConfig

#: Row/col displacement of each action: stay, up, down, left, right.
ACTION_DELTAS = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int32)
#: Observation channels, in order (last axis of an observation).
OBS_CHANNELS: tuple[str, ...] = ("obstacle", "predators", "prey", "own_energy")
#: Global-state channels, in order (last axis of ``state``).
STATE_CHANNELS: tuple[str, ...] = ("obstacle", "predators", "prey")

_OBSTACLE, _PREDATORS, _PREY, _ENERGY = range(4)


def flatten_observation(obs: np.ndarray) -> np.ndarray:
    """``(..., S, S, C)`` egocentric windows → ``(..., S*S*C)`` float32 policy inputs.

    The one place that flattens observations, in ``(row, col, channel)`` order: the RLlib
    adapter, the EnvRunners, evaluation and serving all feed modules through it."""
    obs = np.asarray(obs, dtype=np.float32)
    return obs.reshape(*obs.shape[:-3], -1)


@dataclass
class StepResult:
    """What one ``BatchedWorld.step`` produced; arrays are ``(B, N)`` unless noted."""

    rewards: np.ndarray  # float32; agents not alive at the start of the step get 0
    terminated: np.ndarray  # bool; died this step (captured, starved) or the episode ended
    truncated: np.ndarray  # bool; alive when the step limit was reached
    acted: np.ndarray  # bool; alive at the start of the step
    born: np.ndarray  # bool; slots that came alive this step
    caught: np.ndarray  # bool; prey captured this step
    starved: np.ndarray  # bool; predators that starved this step (ecology mode)
    captured: np.ndarray  # (B,) int; prey captured this step
    done: np.ndarray  # (B,) bool; the world's episode has ended


class BatchedWorld:
    """``num_worlds`` independent predator–prey grids sharing one config and one RNG."""

    def __init__(self, config: EnvConfig, num_worlds: int = 1, seed: int | None = None):
        if num_worlds < 1:
            raise ValueError(f"num_worlds={num_worlds} is out of range; allowed: >= 1")
        self.config = c = config
        self.num_worlds = B = num_worlds
        self.n_agents = N = c.n_agents_max
        self.n_pred_slots = c.max_predators
        self.is_predator = np.arange(N) < c.max_predators
        self.pad = max(c.obs_radius, c.capture_radius, 1)  # >= 1: off-grid moves hit padding
        hp, wp = c.height + 2 * self.pad, c.width + 2 * self.pad
        self.rng = np.random.default_rng(seed)

        self.walls = np.zeros((B, c.height, c.width), dtype=bool)
        self.pos = np.zeros((B, N, 2), dtype=np.int32)
        self.alive = np.zeros((B, N), dtype=bool)
        self.used = np.zeros((B, N), dtype=bool)
        self.energy = np.zeros((B, N), dtype=np.float32)
        self.t = np.zeros(B, dtype=np.int32)
        self.done = np.ones(B, dtype=bool)
        # Padded grid the observation windows are cut from: obstacle, predator and prey counts
        # (channel 3 is filled per observer with its own energy).
        self._grid = np.zeros((B, hp, wp, len(OBS_CHANNELS)), dtype=np.float32)
        self._credit = np.zeros((B, hp, wp), dtype=np.float32)
        self._flat = self._grid.reshape(-1, len(OBS_CHANNELS))
        self._credit = self._credit.reshape(-1)
        self._wp, self._world_cells = wp, hp * wp
        self._flat_deltas = ACTION_DELTAS[:, 0] * wp + ACTION_DELTAS[:, 1]
        r = np.arange(-c.capture_radius, c.capture_radius + 1)
        self._flat_capture = (r[:, None] * wp + r[None, :]).ravel()
        w = np.arange(-c.obs_radius, c.obs_radius + 1)
        self._flat_window = w[:, None] * wp + w[None, :]
        self._species_channel = np.where(self.is_predator, _PREDATORS, _PREY)

    # ------------------------------------------------------------------ reset
    def reset(
        self,
        seed: int | None = None,
        worlds: np.ndarray | list[int] | None = None,
        layout: dict[str, Any] | None = None,
    ) -> None:
        """Start new episodes in ``worlds`` (default: all).

        ``layout`` places things by hand (for tests and scenarios), the same in every reset
        world: ``walls`` (an ``(H, W)`` bool array or a list of ``(row, col)``), ``predators``
        and ``prey`` (lists of ``(row, col)``; they replace ``n_predators``/``n_prey``), and
        ``energy`` (one value per listed predator).
        """
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        worlds = np.arange(self.num_worlds) if worlds is None else np.asarray(worlds, dtype=int)
        for b in worlds:  # per-world loop: reset is not the hot path
            self._reset_world(int(b), layout or {})

    def _reset_world(self, b: int, layout: dict[str, Any]) -> None:
        c, P = self.config, self.n_pred_slots
        self.walls[b] = self._make_walls(layout.get("walls"))
        self.alive[b] = self.used[b] = False
        self.energy[b] = 0.0
        self.pos[b] = 0
        if "predators" in layout or "prey" in layout:
            pred = _as_positions(layout.get("predators", []), "predators")
            prey = _as_positions(layout.get("prey", []), "prey")
            if len(pred) > P or len(prey) > self.n_agents - P:
                raise ValueError("layout has more agents than max_predators/max_prey slots")
            for name, pts in (("predators", pred), ("prey", prey)):
                if len(pts) and not self._valid(pts[:, 0], pts[:, 1], b).all():
                    raise ValueError(f"layout {name} must lie on free in-grid cells")
        else:
            free = np.flatnonzero(~self.walls[b].ravel())
            cells = self.rng.choice(free, size=c.n_predators + c.n_prey, replace=False)
            rc = np.stack(np.divmod(cells, c.width), -1).astype(np.int32)
            pred, prey = rc[: c.n_predators], rc[c.n_predators :]
        self.pos[b, : len(pred)] = pred
        self.pos[b, P : P + len(prey)] = prey
        self.alive[b, : len(pred)] = True
        self.alive[b, P : P + len(prey)] = True
        self.used[b] = self.alive[b]
        energy = layout.get("energy")
        self.energy[b, : len(pred)] = c.energy_init if energy is None else energy
        self.t[b] = 0
        self.done[b] = False
        self._rebuild_grid(b)

    def _make_walls(self, walls: Any) -> np.ndarray:
        c = self.config
        if walls is None:
            grid = np.zeros(c.height * c.width, dtype=bool)
            n = int(round(c.wall_density * c.height * c.width))
            grid[self.rng.choice(grid.size, size=n, replace=False)] = True
            return grid.reshape(c.height, c.width)
        walls = np.asarray(walls)
        if walls.dtype == bool:
            if walls.shape != (c.height, c.width):
                raise ValueError(f"layout walls must have shape {(c.height, c.width)}")
            return walls.copy()
        grid = np.zeros((c.height, c.width), dtype=bool)
        pts = _as_positions(walls, "walls")
        grid[pts[:, 0], pts[:, 1]] = True
        return grid

    def _rebuild_grid(self, b: int) -> None:
        p, c = self.pad, self.config
        g = self._grid[b]
        g[:] = 0.0
        g[..., _OBSTACLE] = 1.0
        g[p : p + c.height, p : p + c.width, _OBSTACLE] = self.walls[b]
        idx = np.flatnonzero(self.alive[b])
        np.add.at(
            g, (self.pos[b, idx, 0] + p, self.pos[b, idx, 1] + p, self._species_channel[idx]), 1.0
        )

    def _valid(self, rows: np.ndarray, cols: np.ndarray, b: np.ndarray | int = 0) -> np.ndarray:
        c = self.config
        inside = (rows >= 0) & (rows < c.height) & (cols >= 0) & (cols < c.width)
        return (
            inside & ~self.walls[b, np.clip(rows, 0, c.height - 1), np.clip(cols, 0, c.width - 1)]
        )

    # ------------------------------------------------------------------- step
    def _cells(self, worlds: np.ndarray, rc: np.ndarray) -> np.ndarray:
        """Flat index into ``self._flat`` (padded-grid rows) of cells ``rc`` in ``worlds``."""
        return worlds * self._world_cells + (rc[:, 0] + self.pad) * self._wp + rc[:, 1] + self.pad

    def step(self, actions: np.ndarray) -> StepResult:
        """Advance every world by one step. ``actions``: ``(B, N)`` ints in ``[0, 5)``.

        Actions of slots that are not alive are ignored. Worlds whose episode is done are
        left untouched (reset them with ``reset(worlds=...)``).
        """
        c, P = self.config, self.n_pred_slots
        actions = np.asarray(actions)
        if actions.shape != self.alive.shape:
            raise ValueError(f"actions must have shape {self.alive.shape}, got {actions.shape}")
        active = ~self.done
        acted = self.alive & active[:, None]
        bi, ai = np.nonzero(acted)
        act = actions[bi, ai]
        if len(act) and (act.min() < 0 or act.max() >= len(ACTION_DELTAS)):
            bad = act[(act < 0) | (act >= len(ACTION_DELTAS))][0]
            raise ValueError(
                f"action {bad!r} is out of range; allowed: 0..{len(ACTION_DELTAS) - 1}"
            )
        B, N = self.alive.shape
        G = self._flat  # (B*Hp*Wp, 4) view of the padded grid
        old = self.pos[bi, ai]
        old_cell = self._cells(bi, old)
        G[old_cell, _PREDATORS] = 0.0
        G[old_cell, _PREY] = 0.0

        # 1. move (into walls or off the grid, where the padding is an obstacle: stay)
        new_cell = old_cell + self._flat_deltas[act]
        ok = G[new_cell, _OBSTACLE] == 0.0
        cell = np.where(ok, new_cell, old_cell)
        self.pos[bi, ai] = old + ACTION_DELTAS[act] * ok[:, None]

        # 2. capture: count predators within the Chebyshev radius of each live prey
        rewards = np.zeros((B, N), dtype=np.float32)
        is_pred = ai < P
        pb, pa, p_cell = bi[is_pred], ai[is_pred], cell[is_pred]
        qb, qa, q_cell = bi[~is_pred], ai[~is_pred], cell[~is_pred]
        pred_count = G[:, _PREDATORS]
        np.add.at(pred_count, p_cell, 1.0)
        threat = pred_count[q_cell[:, None] + self._flat_capture].sum(axis=1)
        caught = threat >= c.capture_predators
        # each capture's credit is split equally among the predators within the radius
        c_cell = q_cell[caught]
        np.add.at(self._credit, c_cell, 1.0 / threat[caught])
        share = self._credit[p_cell[:, None] + self._flat_capture].sum(axis=1)
        self._credit[c_cell] = 0.0
        pred_count[p_cell] = 0.0
        captured = np.bincount(qb[caught], minlength=B)

        rewards[pb, pa] = c.reward_predator_step + c.reward_capture * share
        rewards[qb, qa] = np.where(caught, c.reward_caught, c.reward_prey_alive)
        terminated = np.zeros((B, N), dtype=bool)
        terminated[qb[caught], qa[caught]] = True
        self.alive[qb[caught], qa[caught]] = False
        caught_mask = terminated.copy()

        born = np.zeros((B, N), dtype=bool)
        starved = np.zeros((B, N), dtype=bool)
        if c.ecology:
            self._ecology_step(pb, pa, share, rewards, starved, born, active)
            terminated |= starved
            nb, na = np.nonzero(self.alive & active[:, None])
            now_cell = self._cells(nb, self.pos[nb, na])
            np.add.at(G, (now_cell, self._species_channel[na]), 1.0)
        else:  # nobody was born or starved: survivors are the movers minus caught prey
            keep = np.ones(len(ai), dtype=bool)
            keep[np.flatnonzero(~is_pred)[caught]] = False
            np.add.at(G, (cell[keep], self._species_channel[ai[keep]]), 1.0)

        # 3. episode end
        self.t += active
        n_pred = self.alive[:, :P].sum(axis=1)
        n_prey = self.alive[:, P:].sum(axis=1)
        ended = active & ((n_pred == 0) | (n_prey == 0))
        timeout = active & ~ended & (self.t >= c.max_steps)
        terminated |= self.alive & ended[:, None]
        truncated = self.alive & timeout[:, None]
        # A finished world keeps its last state (final observations, populations) until reset.
        self.done |= ended | timeout
        return StepResult(
            rewards,
            terminated,
            truncated,
            acted,
            born,
            caught_mask,
            starved,
            captured,
            ended | timeout,
        )

    def _ecology_step(self, pb, pa, share, rewards, starved, born, active) -> None:
        c, P = self.config, self.n_pred_slots
        e = self.energy
        if c.predator_crowding is None:
            e[pb, pa] += c.energy_gain * share - c.energy_decay
        else:  # float64 loss per world, as the torch core computes it
            n_pred = self.alive[:, :P].sum(axis=1)
            loss = c.energy_decay * (1.0 + n_pred / c.predator_crowding)
            e[pb, pa] += c.energy_gain * share - loss[pb]
        hungry = e[pb, pa] <= 0.0
        sb, sa = pb[hungry], pa[hungry]
        rewards[sb, sa] += c.reward_starved
        starved[sb, sa] = True
        self.alive[sb, sa] = False
        # births: predators above the energy threshold, prey with probability prey_birth_prob
        # (times the logistic crowding factor 1 - n_prey / K when prey_capacity is set)
        fertile = np.zeros_like(self.alive)
        fertile[:, :P] = self.alive[:, :P] & (e[:, :P] >= c.reproduce_energy)
        birth_prob = np.full((self.num_worlds, 1), c.prey_birth_prob)
        if c.prey_capacity is not None:
            n_prey = self.alive[:, P:].sum(axis=1, keepdims=True)
            birth_prob *= np.clip(1.0 - n_prey / c.prey_capacity, 0.0, 1.0)
        fertile[:, P:] = self.alive[:, P:] & (self.rng.random(self.alive[:, P:].shape) < birth_prob)
        fertile &= active[:, None]
        for lo, hi in ((0, P), (P, self.n_agents)):
            b, parent, child = self._give_birth(fertile, lo, hi)
            born[b, child] = True
            if lo == 0:
                e[b, parent] *= 0.5
                e[b, child] = e[b, parent]

    def _give_birth(self, fertile: np.ndarray, lo: int, hi: int):
        """Match fertile parents in slots ``[lo, hi)`` to free slots, world by world: never-used
        slots, or (``recycle_slots``) any slot not alive now, counting this step's dead."""
        cand = fertile[:, lo:hi]
        free = ~(self.alive if self.config.recycle_slots else self.used)[:, lo:hi]
        free_first = np.argsort(~free, axis=1, kind="stable")
        rank = np.cumsum(cand, axis=1) - 1
        ok = cand & (rank < free.sum(axis=1, keepdims=True))
        b, p = np.nonzero(ok)
        child = free_first[b, rank[b, p]] + lo
        parent = p + lo
        home = self.pos[b, parent]
        radius = self.config.birth_radius
        if radius is None:  # global dispersal: any cell of the grid
            spot = np.stack(
                [
                    self.rng.integers(self.config.height, size=len(b)),
                    self.rng.integers(self.config.width, size=len(b)),
                ],
                axis=1,
            ).astype(np.int32)
        else:
            spot = home + self.rng.integers(-radius, radius + 1, size=(len(b), 2)).astype(np.int32)
        spot = np.where(self._valid(spot[:, 0], spot[:, 1], b)[:, None], spot, home)
        self.pos[b, child] = spot
        self.alive[b, child] = True
        self.used[b, child] = True
        return b, parent, child

    # ------------------------------------------------------------ observation
    def observe(self, worlds: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Egocentric windows ``(M, S, S, 4)`` float32 for agents ``(worlds[i], slots[i])``.

        Channels: obstacle (wall or outside the grid, 1/0), predator count, prey count, own
        energy (predators: ``min(energy / reproduce_energy, 1)`` in ecology mode, else 1;
        prey: 0). The observer itself is counted in its species' channel at the centre.
        """
        centre = self._cells(worlds, self.pos[worlds, slots])
        obs = self._flat.take(centre[:, None, None] + self._flat_window, axis=0)
        obs[..., _ENERGY] = self.own_energy(worlds, slots)[:, None, None]
        return obs

    def own_energy(self, worlds: np.ndarray, slots: np.ndarray) -> np.ndarray:
        c = self.config
        if not c.ecology:
            return (slots < self.n_pred_slots).astype(np.float32)
        level = np.clip(self.energy[worlds, slots] / c.reproduce_energy, 0.0, 1.0)
        return np.where(slots < self.n_pred_slots, level, 0.0).astype(np.float32)

    def state(self, world: int = 0) -> np.ndarray:
        """Global state ``(H, W, 3)`` float32: obstacle, predator count, prey count."""
        return self.states(np.array([world]))[0]

    def states(self, worlds: np.ndarray | None = None) -> np.ndarray:
        """Global states ``(len(worlds), H, W, 3)`` float32 of ``worlds`` (default: all)."""
        p, c = self.pad, self.config
        grid = self._grid if worlds is None else self._grid[worlds]
        return grid[:, p : p + c.height, p : p + c.width, : len(STATE_CHANNELS)].copy()

    def populations(self) -> np.ndarray:
        """Live ``(predators, prey)`` per world, shape ``(B, 2)``."""
        P = self.n_pred_slots
        return np.stack([self.alive[:, :P].sum(1), self.alive[:, P:].sum(1)], axis=1)


def _as_positions(points: Any, name: str) -> np.ndarray:
    pts = (
        np.asarray(points, dtype=np.int32).reshape(-1, 2)
        if len(points)
        else np.zeros((0, 2), np.int32)
    )
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"layout {name} must be a list of (row, col) pairs")
    return pts
