"""Predator–prey grid world — PettingZoo ``ParallelEnv`` ``predator_prey_v0``.

+--------------------+--------------------------------------------------------------+
| Import             | ``from bioflux.envs import predator_prey_v0``                 |
| Create             | ``predator_prey_v0.parallel_env(**kwargs)``                   |
| Actions            | ``Discrete(5)``                                               |
| Agents             | ``predator_0 … predator_{P-1}, prey_0 … prey_{Q-1}``          |
| Observation shape  | ``(2r+1, 2r+1, 4)`` float32 (r = ``obs_radius``, default 11×11×4) |
| State shape        | ``(height, width, 3)`` float32                                |
| Version            | v0                                                            |
+--------------------+--------------------------------------------------------------+

Predators hunt prey on a ``height × width`` grid (default 100×100) with a few walls. Each step
all live agents move at once; then every live prey with at least ``capture_predators`` live
predators within Chebyshev distance ``capture_radius`` is captured and leaves the episode
(terminated). Several agents may share a cell.

**Actions** (``Discrete(5)``, see ``bioflux.envs.config.ACTION_NAMES``): 0 stay, 1 up (row−1),
2 down (row+1), 3 left (col−1), 4 right (col+1). A move into a wall or off the grid leaves the
agent where it is. An agent missing from the action dict stays; an action outside ``0..4``, or
an action for an agent that is not alive, raises ``ValueError``.

**Observations** (``Box``, float32, layout ``(row, col, channel)``, the agent at the centre,
row 0 = furthest up): channel 0 obstacle (1 for walls and cells outside the grid), 1 predator
count, 2 prey count (the observer counts itself in its own species' channel), 3 own energy
(predators in ecology mode: ``min(energy / reproduce_energy, 1)``; other predators 1; prey 0).

**State** (``state()``, ``state_space``): the whole grid as ``(height, width, 3)`` float32 with
channels obstacle, predator count, prey count — input for centralised critics.

**Rewards** (every term a named argument; defaults in brackets): a capture pays
``reward_capture`` [1.0], split equally among the predators within ``capture_radius`` of the
captured prey; every live predator gets ``reward_predator_step`` [-0.01] each step; a captured
prey gets ``reward_caught`` [-1.0]; every prey alive after a step gets ``reward_prey_alive``
[0.01]; a predator that starves (ecology mode) gets ``reward_starved`` [-1.0].

**Episode end**: when all prey or all predators are gone, every remaining agent is terminated;
after ``max_cycles`` [300] steps every remaining agent is truncated. ``max_cycles`` is
PettingZoo's name for the episode length; ``max_steps`` (the name in experiment configs,
``env.max_steps``) is an alias: give either, or both with the same value (different values
raise ``ValueError``). ``env.max_cycles`` holds the value in use.

**Ecology mode** (``ecology=True``): predators lose ``energy_decay`` energy per step and gain
``energy_gain`` per capture (shared like the reward); at zero energy a predator dies
(terminated). A predator with at least ``reproduce_energy`` gives birth in a neighbouring cell
and splits its energy with the newborn; each prey gives birth with probability
``prey_birth_prob`` per step. Newborns take never-used IDs from the ``possible_agents`` pool
(``max_predators``, ``max_prey``); when the pool is exhausted no more are born. Population
counts per step: ``populations()`` and ``population_history``.

**Infos**: a captured prey's info has ``captured: True``, a starved predator's ``starved: True``;
on the last step every info holds ``episode`` (``episode_stats``): initial populations,
``prey_total`` (initial prey plus newborns, the capture rate's denominator), captures, births,
starvations, ``first_capture_step`` and ``length``.

**Arguments**: see ``bioflux.envs.config.EnvConfig`` (sizes, counts, ``wall_density`` [0.02],
``obs_radius`` [5], capture and reward terms, ecology rates) and ``max_cycles`` above. Invalid or
unknown arguments raise ``ValueError`` naming the argument and its allowed range.

**Rendering** (``render_mode``, ``render()``): ``None`` (``render()`` warns and returns
``None``); ``"rgb_array"`` returns an ``(height·4, width·4, 3)`` uint8 image; ``"ansi"`` returns
text, one line per row (``.`` empty, ``#`` wall, ``o`` prey, ``X`` predator); ``"human"`` shows
the frame in a matplotlib window that opens on the first ``render()`` and is refreshed by each
later one without blocking (``close()`` closes it), and returns ``None``. With a
non-interactive backend chosen explicitly (``MPLBACKEND=Agg`` or ``matplotlib.use("Agg")``)
``"human"`` draws to an off-screen figure. Without a display (and no backend chosen) creating the
env with ``"human"`` raises ``bioflux.envs.rendering.HumanRenderError`` (a ``RuntimeError``) that
says so.

**Hand-built scenarios**: ``reset(options={"layout": {"walls": [...], "predators": [(r, c)],
"prey": [(r, c)], "energy": [...]}})`` places walls and agents by hand.

Changelog: v0 — first release.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv
from pettingzoo.utils import parallel_to_aec

from bioflux.envs.config import N_ACTIONS, EnvConfig
from bioflux.envs.core import OBS_CHANNELS, STATE_CHANNELS, BatchedWorld
from bioflux.envs.rendering import HumanWindow, check_human_rendering, render_ansi, render_rgb


class PredatorPreyEnv(ParallelEnv):
    """Dict view (one world) over ``BatchedWorld``; see the module docstring for the spec."""

    metadata = {
        "name": "predator_prey_v0",
        "render_modes": ["human", "rgb_array", "ansi"],
        "render_fps": 10,
        "is_parallelizable": True,
    }

    def __init__(
        self, render_mode: str | None = None, max_cycles: int | None = None, **kwargs: Any
    ):
        if render_mode not in (None, *self.metadata["render_modes"]):
            allowed = ", ".join(map(repr, (None, *self.metadata["render_modes"])))
            raise ValueError(f"render_mode={render_mode!r} is not supported; allowed: {allowed}")
        self._window: HumanWindow | None = None
        if render_mode == "human":
            check_human_rendering()
            self._window = HumanWindow(self.metadata["name"], self.metadata["render_fps"])
        self.render_mode = render_mode
        self.config = c = _env_config(kwargs, max_cycles)
        self.max_cycles = c.max_steps
        self.world = BatchedWorld(c, num_worlds=1)
        self.possible_agents = [f"predator_{i}" for i in range(c.max_predators)] + [
            f"prey_{i}" for i in range(c.max_prey)
        ]
        self._names = np.array(self.possible_agents, dtype=object)
        self._slot = {name: i for i, name in enumerate(self.possible_agents)}
        s = c.obs_size
        high = np.zeros((s, s, len(OBS_CHANNELS)), dtype=np.float32)
        high[..., :] = [1.0, c.max_predators, c.max_prey, 1.0]
        self._obs_space = gymnasium.spaces.Box(0.0, high, dtype=np.float32)
        self._act_space = gymnasium.spaces.Discrete(N_ACTIONS)
        state_high = np.zeros((c.height, c.width, len(STATE_CHANNELS)), dtype=np.float32)
        state_high[..., :] = [1.0, c.max_predators, c.max_prey]
        self.state_space = gymnasium.spaces.Box(0.0, state_high, dtype=np.float32)
        self.agents: list[str] = []
        self.episode_stats: dict[str, Any] = {}
        self.population_history: list[tuple[int, int, int]] = []

    # PettingZoo requires the same space object on every call.
    @functools.cache
    def observation_space(self, agent: str) -> gymnasium.spaces.Box:
        return self._obs_space

    @functools.cache
    def action_space(self, agent: str) -> gymnasium.spaces.Discrete:
        return self._act_space

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            for i, agent in enumerate(self.possible_agents):
                self.action_space(agent).seed(seed + i)
        self.world.reset(seed=seed, layout=(options or {}).get("layout"))
        idx = np.flatnonzero(self.world.alive[0])
        self.agents = self._names[idx].tolist()
        pred, prey = self.world.populations()[0]
        self.episode_stats = {
            "initial_predators": int(pred),
            "initial_prey": int(prey),
            "prey_total": int(prey),
            "captures": 0,
            "births": 0,
            "starvations": 0,
            "first_capture_step": None,
        }
        self._record_population()
        obs = self._observations(idx)
        return obs, {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]):
        w = self.world
        if not self.agents:
            return {}, {}, {}, {}, {}
        act = np.zeros((1, w.n_agents), dtype=np.int64)
        if actions:
            try:
                slots = np.fromiter(map(self._slot.__getitem__, actions), np.int64, len(actions))
            except KeyError as err:
                raise ValueError(f"unknown agent {err.args[0]!r} in actions") from None
            if not w.alive[0, slots].all():
                dead = self._names[slots[~w.alive[0, slots]]][0]
                raise ValueError(f"action given for agent {dead!r}, which is not alive")
            act[0, slots] = np.fromiter(actions.values(), np.int64, len(actions))
        res = w.step(act)
        # agents that acted, plus newborns (who act from the next step, so none at the end)
        idx = np.flatnonzero(res.acted[0] | (res.born[0] & ~res.done[0]))
        names = self._names[idx].tolist()
        obs = self._observations(idx, names)
        rewards = dict(zip(names, res.rewards[0, idx].tolist()))
        terminated = dict(zip(names, res.terminated[0, idx].tolist()))
        truncated = dict(zip(names, res.truncated[0, idx].tolist()))
        infos = {a: {} for a in names}
        for flag, mask in (("captured", res.caught[0]), ("starved", res.starved[0])):
            for agent in self._names[np.flatnonzero(mask)]:
                infos[agent][flag] = True
        stats = self.episode_stats
        stats["captures"] += int(res.captured[0])
        stats["births"] += int(res.born[0].sum())
        stats["prey_total"] += int(res.born[0, w.n_pred_slots :].sum())
        stats["starvations"] += int(res.starved[0].sum())
        if res.captured[0] and stats["first_capture_step"] is None:
            stats["first_capture_step"] = int(w.t[0])
        if res.done[0]:  # episode summary for loggers, in every final info
            stats["length"] = int(w.t[0])
            for info in infos.values():
                info["episode"] = dict(stats)
            self.agents = []
        else:
            self.agents = self._names[np.flatnonzero(w.alive[0])].tolist()
        self._record_population()
        return obs, rewards, terminated, truncated, infos

    def _observations(self, idx: np.ndarray, names: list[str] | None = None) -> dict:
        obs = self.world.observe(np.zeros(len(idx), dtype=np.int64), idx)
        return dict(zip(self._names[idx].tolist() if names is None else names, obs))

    def _record_population(self) -> None:
        pred, prey = self.world.populations()[0]
        if self.world.t[0] == 0:
            self.population_history = []
        self.population_history.append((int(self.world.t[0]), int(pred), int(prey)))

    def populations(self) -> dict[str, int]:
        """Live agents per species now."""
        pred, prey = self.world.populations()[0]
        return {"predator": int(pred), "prey": int(prey)}

    def state(self) -> np.ndarray:
        return self.world.state(0)

    def render(self):
        if self.render_mode == "rgb_array":
            return render_rgb(self.world, 0)
        if self.render_mode == "ansi":
            return render_ansi(self.world, 0)
        if self.render_mode == "human":
            self._window.show(render_rgb(self.world, 0))
            return None
        gymnasium.logger.warn("render() called without a render_mode; pass render_mode=...")
        return None

    def close(self) -> None:
        if self._window is not None:
            self._window.close()


def _env_config(kwargs: dict[str, Any], max_cycles: int | None) -> EnvConfig:
    """``EnvConfig`` from the env's keyword arguments, ``max_cycles`` being ``max_steps``."""
    if max_cycles is not None:
        if "max_steps" in kwargs and kwargs["max_steps"] != max_cycles:
            raise ValueError(
                f"max_cycles={max_cycles!r} and max_steps={kwargs['max_steps']!r} disagree; "
                "allowed: one of them (max_steps is an alias of max_cycles), or equal values"
            )
        kwargs = {**kwargs, "max_steps": max_cycles}
    try:
        config = EnvConfig.from_kwargs(kwargs)
    except ValueError as err:
        if max_cycles is not None and str(err).startswith("max_steps="):
            raise ValueError("max_cycles=" + str(err).removeprefix("max_steps=")) from None
        raise
    return config.require_agent_identity("predator_prey_v0")


def parallel_env(**kwargs: Any) -> PredatorPreyEnv:
    """Create the parallel env (PettingZoo naming)."""
    return PredatorPreyEnv(**kwargs)


raw_env = parallel_env


def env(**kwargs: Any):
    """The same env through PettingZoo's AEC interface."""
    return parallel_to_aec(parallel_env(**kwargs))
