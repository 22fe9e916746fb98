"""Live sessions: one small world per open page, stepped with ``play_step`` and sent as frames.

``LiveSessions`` (no web code here: ``bioflux.serve.live_routes`` streams it) holds a
``BatchedWorld`` of one world per session, built from a packaged config's world (``demo``,
``ppo``, ``ecology``; ``settings.LIVE_WORLDS``) with optional ``height``, ``width``,
``n_predators``, ``n_prey``, and a predator and a prey policy named as ``/v1/predict`` names them
(``ppo/predator``, ``random/prey``, ``lotka_volterra/predator``), loaded through the same
``ModelInference`` cache as the predictions.

    live = LiveSessions(ModelInference("models"))
    s = live.create({"world": "demo", "predator": "lotka_volterra/predator", "seed": 3})
    s.reset_frame()          # the world's size and walls, then the first frame
    s.step()                 # one frame: positions, populations, captures and births
    live.inspect(s.id, slot) # that agent's probabilities, confidence, reasoning (as /v1/predict)

A frame is compact: positions are flat ``[row, col, row, col, ...]`` lists of the live agents of
each species (with their slots, for ``inspect``); walls are sent once, in the reset frame, as
flat cell indices ``row * width + col``. Bad parameters raise ``LiveError`` with a message for
the page; sessions are capped (``settings.LIVE_MAX_SESSIONS``) and closed when idle
(``settings.LIVE_IDLE_TIMEOUT_S``).
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bioflux.envs.config import SPECIES, EnvConfig
from bioflux.envs.core import BatchedWorld, StepResult
from bioflux.policies import Policy
from bioflux.rollout import play_step
from bioflux.serve import settings
from bioflux.serve.inference import ModelInference, observation_window
from bioflux.serve.registry import shown

#: Session parameters and whether each is an integer world override.
WORLD_OVERRIDES = ("height", "width", "n_predators", "n_prey")
PARAMS = ("world", "predator", "prey", "seed", "speed", *WORLD_OVERRIDES)
#: Largest seed accepted (numpy takes any non-negative int; this keeps it JSON-safe).
MAX_SEED = 2**32 - 1


class LiveError(ValueError):
    """Bad live-view parameters or a request the session cannot serve (shown on the page)."""


def _int_param(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise LiveError(f"{name} must be an integer, got {shown(value)}")
    try:
        number = float(value) if isinstance(value, str) else value
        if not isinstance(number, (int, float, np.integer, np.floating)):
            raise TypeError
        if not (math.isfinite(float(number)) and float(number).is_integer()):
            raise ValueError
        v = int(number)
    except (TypeError, ValueError, OverflowError):
        raise LiveError(f"{name} must be an integer, got {shown(value)}") from None
    if not lo <= v <= hi:
        raise LiveError(f"{name}={v} is out of range; allowed: [{lo}, {hi}]")
    return v


def parse_speed(value: Any) -> float:
    """Steps per second in ``(0, settings.LIVE_MAX_SPEED]``."""
    top = settings.LIVE_MAX_SPEED
    try:
        speed = float(value)
    except (TypeError, ValueError, OverflowError):
        raise LiveError(f"speed must be a number of steps per second, got {shown(value)}") from None
    if isinstance(value, bool) or not (math.isfinite(speed) and 0 < speed <= top):
        raise LiveError(f"speed={shown(value)} is out of range; allowed: (0, {top:g}] steps/s")
    return speed


def parse_seed(value: Any) -> int:
    return _int_param(value, "seed", 0, MAX_SEED)


def world_config(name: str, overrides: dict[str, Any] | None = None) -> EnvConfig:
    """The env of packaged config ``name`` (one of ``settings.LIVE_WORLDS``) with ``overrides``
    (``height``, ``width``, ``n_predators``, ``n_prey``), within the live-view limits."""
    from bioflux import config

    if name not in settings.LIVE_WORLDS:
        raise LiveError(f"world {shown(name)} is unknown; allowed: {list(settings.LIVE_WORLDS)}")
    env = dict(config.load(name).env)
    for key, value in (overrides or {}).items():
        if key not in WORLD_OVERRIDES:
            raise LiveError(f"unknown world parameter {shown(key)}; allowed: {WORLD_OVERRIDES}")
        if value is None or value == "":
            continue
        env[key] = _int_param(value, key, 0 if key.startswith("n_") else 1, 100_000)
        if key.startswith("n_"):  # room for the new count (and for births in ecology mode)
            env.pop(f"max_{key[2:]}", None)
    try:
        cfg = EnvConfig.from_kwargs(env)
    except (TypeError, ValueError) as err:
        raise LiveError(f"world {name!r}: {err}") from None
    if cfg.height * cfg.width > settings.LIVE_MAX_CELLS:
        raise LiveError(
            f"world {name!r} has {cfg.height}x{cfg.width} = {cfg.height * cfg.width} cells; the "
            f"live view takes at most {settings.LIVE_MAX_CELLS} (settings.LIVE_MAX_CELLS)"
        )
    if cfg.n_agents_max > settings.LIVE_MAX_AGENTS:
        raise LiveError(
            f"world {name!r} has {cfg.n_agents_max} agent slots; the live view takes at most "
            f"{settings.LIVE_MAX_AGENTS} (settings.LIVE_MAX_AGENTS)"
        )
    return cfg


def _indices(mask: np.ndarray, offset: int = 0) -> np.ndarray:
    return np.flatnonzero(mask) + offset


@dataclass(eq=False)
class LiveSession:
    """One world and its policies. Use it from one task at a time (``lock`` guards it)."""

    id: str
    world_name: str
    config: EnvConfig
    policy_names: dict[str, str]  # species → full registry name
    policies: dict[str, Policy]
    seed: int
    speed: float
    inference: ModelInference
    world: BatchedWorld = field(init=False)
    rng: np.random.Generator = field(init=False)
    paused: bool = False
    closed: bool = False
    touched: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.world = BatchedWorld(self.config, num_worlds=1)
        self.reset(self.seed)

    # ------------------------------------------------------------------ controls
    def touch(self) -> None:
        self.touched = time.monotonic()

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """A new episode (with ``seed``, else the session's seed again); the reset frame."""
        with self.lock:
            if seed is not None:
                self.seed = parse_seed(seed)
            self.world.reset(seed=self.seed)
            self.rng = np.random.default_rng(self.seed)
            self.touch()
            return self._reset_frame()

    def reset_frame(self) -> dict[str, Any]:
        with self.lock:
            return self._reset_frame()

    def step(self) -> dict[str, Any]:
        """One step of every live agent (``play_step``); the frame after it. A finished
        episode stays as it is (its frame says ``done``) until ``reset``."""
        with self.lock:
            self.touch()
            if self.world.done[0]:
                return self._frame(None)
            return self._frame(play_step(self.world, self.policies, self.rng))

    @property
    def done(self) -> bool:
        return bool(self.world.done[0])

    # ------------------------------------------------------------------ frames
    def _frame(self, res: StepResult | None) -> dict[str, Any]:
        w, P = self.world, self.world.n_pred_slots
        alive = w.alive[0]
        pred, prey = _indices(alive[:P]), _indices(alive[P:], P)
        n_pred, n_prey = (int(n) for n in w.populations()[0])
        return {
            "type": "frame",
            "session": self.id,
            "step": int(w.t[0]),
            "predators": w.pos[0, pred].ravel().tolist(),
            "predator_slots": pred.tolist(),
            "prey": w.pos[0, prey].ravel().tolist(),
            "prey_slots": prey.tolist(),
            "populations": {"predator": n_pred, "prey": n_prey},
            "captures": int(res.captured[0]) if res is not None else 0,
            "births": int(res.born[0].sum()) if res is not None else 0,
            "starved": int(res.starved[0].sum()) if res is not None else 0,
            "done": bool(w.done[0]),
        }

    def _reset_frame(self) -> dict[str, Any]:
        c = self.config
        return {
            "type": "reset",
            "session": self.id,
            "world": self.world_name,
            "height": c.height,
            "width": c.width,
            "walls": np.flatnonzero(self.world.walls[0]).tolist(),
            "ecology": c.ecology,
            "max_steps": c.max_steps,
            "obs_radius": c.obs_radius,
            "policies": dict(self.policy_names),
            "seed": self.seed,
            "speed": self.speed,
            "paused": self.paused,
            "frame": self._frame(None),
        }

    # ------------------------------------------------------------------ inspect
    def inspect(self, slot: Any) -> dict[str, Any]:
        """What agent ``slot`` would do now: the policy's action probabilities (sum 1),
        confidence and reasoning, exactly as ``/v1/predict`` answers for its observation."""
        with self.lock:
            self.touch()
            w = self.world
            i = _int_param(slot, "slot", 0, w.n_agents - 1)
            if not w.alive[0, i]:
                raise LiveError(f"agent slot {i} is not alive (step {int(w.t[0])})")
            species = "predator" if w.is_predator[i] else "prey"
            obs = w.observe(np.array([0]), np.array([i]))[0]
            row, col = (int(v) for v in w.pos[0, i])
            name = self.policy_names[species]
        result = self.inference.predict_many([(name, obs)], return_exceptions=True)[0]
        if isinstance(result, Exception):
            raise LiveError(f"policy {name!r} cannot answer for slot {i}: {result}")
        return {
            "type": "inspect",
            "slot": i,
            "species": species,
            "position": [row, col],
            "step": int(w.t[0]),
            **result,
        }


class LiveSessions:
    """The live sessions of one process, capped and closed when idle (thread-safe)."""

    def __init__(
        self,
        inference: ModelInference,
        max_sessions: int = settings.LIVE_MAX_SESSIONS,
        idle_timeout_s: float = settings.LIVE_IDLE_TIMEOUT_S,
    ):
        self.inference = inference
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self.sessions: dict[str, LiveSession] = {}
        self._lock = threading.Lock()

    def options(self) -> dict[str, Any]:
        """What a page may choose: servable policies per species, worlds, limits, defaults."""
        models = self.inference.list_models()
        policies: dict[str, list[str]] = {s: [] for s in SPECIES}
        windows: dict[str, int | None] = {}
        lineage: dict[str, str] = {}
        for m in models:
            if m["error"]:
                continue
            names = [*m["aliases"], m["name"]] if not m["builtin"] else [m["name"]]
            policies[m["species"]].extend(n for n in names if n not in policies[m["species"]])
            windows.update({n: m["observation_window"] for n in names if n not in windows})
            text = (m.get("lineage") or {}).get("text")
            if text:  # where the module started: "from scratch, then a 3-stage curriculum…"
                lineage.update({n: text for n in names if n not in lineage})
        return {
            "policies": policies,
            "windows": windows,
            "lineage": lineage,
            "worlds": list(settings.LIVE_WORLDS),
            "world_windows": {w: world_config(w).obs_size for w in settings.LIVE_WORLDS},
            **self._defaults(models),
            "speed": {"default": settings.LIVE_DEFAULT_SPEED, "max": settings.LIVE_MAX_SPEED},
            "max_sessions": self.max_sessions,
            "idle_timeout_s": self.idle_timeout_s,
        }

    @staticmethod
    def _defaults(models: list[dict[str, Any]]) -> dict[str, Any]:
        """What the page opens on: per species, a served trained policy when there is one (its
        shortest name, e.g. ``ppo/predator``: the newest run), else the random built-in; and a
        packaged world that gives their observation window (the default world when it does)."""
        chosen: dict[str, str] = {s: f"random/{s}" for s in SPECIES}
        windows: dict[str, int | None] = {}
        for species in SPECIES:
            trained = [
                m for m in models if m["species"] == species and not m["builtin"] and not m["error"]
            ]
            # an exported module before an ensemble, then the shortest name (the newest run)
            names = sorted(
                (
                    (m["run"] is None, len(n), n, m["observation_window"])
                    for m in trained
                    for n in (*m["aliases"], m["name"])
                ),
            )
            if names:
                chosen[species], windows[species] = names[0][2], names[0][3]
        wanted = {w for w in windows.values() if w is not None}
        worlds = [settings.LIVE_DEFAULT_WORLD, *settings.LIVE_WORLDS]
        fits = [w for w in worlds if all(world_config(w).obs_size == x for x in wanted)]
        if not fits:  # the trained policies need different worlds: show the built-ins
            return {
                "default_world": settings.LIVE_DEFAULT_WORLD,
                "default_policies": {s: f"random/{s}" for s in SPECIES},
            }
        return {"default_world": fits[0], "default_policies": chosen}

    def _policy(self, species: str, name: Any, cfg: EnvConfig) -> tuple[str, Policy]:
        from bioflux.serve.inference import ModelLoadError, UnknownModelError

        if not isinstance(name, str) or not name:
            raise LiveError(
                f"{species} policy must be a name from /v1/live/options (e.g. "
                f"'random/{species}'), got {shown(name)}"
            )
        try:
            entry = self.inference.resolve(name)
        except UnknownModelError as err:
            raise LiveError(f"{species} policy: {err}") from None
        if entry.species != species:
            raise LiveError(
                f"{species} policy {name!r} is a {entry.species} policy; pick a {species} one "
                f"(e.g. 'random/{species}')"
            )
        window = observation_window(entry)
        if window is not None and window != cfg.obs_size:
            raise LiveError(
                f"{species} policy {entry.name!r} sees a {window}x{window} window but this world "
                f"gives {cfg.obs_size}x{cfg.obs_size} (obs_radius {cfg.obs_radius}); pick the "
                "world it was trained in"
            )
        try:
            return entry.name, self.inference.get(entry.name).policy
        except ModelLoadError as err:
            again = self.inference.resolve(name)  # an alias steers around a failed load
            if again.name == entry.name:
                raise LiveError(str(err)) from None
            return self._policy(species, again.name, cfg)

    def create(self, params: dict[str, Any] | None = None) -> LiveSession:
        """A new session from ``params`` (``PARAMS``; strings as in a query are fine)."""
        params = dict(params or {})
        unknown = sorted(str(k) for k in params if k not in PARAMS)
        if unknown:
            raise LiveError(f"unknown parameter(s) {shown(unknown)}; allowed: {list(PARAMS)}")
        world_name = params.get("world") or settings.LIVE_DEFAULT_WORLD
        cfg = world_config(world_name, {k: params.get(k) for k in WORLD_OVERRIDES})
        names, policies = {}, {}
        for species in SPECIES:
            names[species], policies[species] = self._policy(
                species, params.get(species) or f"random/{species}", cfg
            )
        seed = parse_seed(params.get("seed") if params.get("seed") not in (None, "") else 0)
        speed = params.get("speed")
        speed = parse_speed(speed) if speed not in (None, "") else settings.LIVE_DEFAULT_SPEED
        self.sweep()
        with self._lock:
            if len(self.sessions) >= self.max_sessions:
                raise LiveError(
                    f"the live view is full: {len(self.sessions)} sessions open, at most "
                    f"{self.max_sessions} (settings.LIVE_MAX_SESSIONS); close a page or retry "
                    "later"
                )
            sid = secrets.token_hex(8)
            session = LiveSession(
                sid, world_name, cfg, names, policies, seed, speed, self.inference
            )
            self.sessions[sid] = session
        return session

    def get(self, session_id: str) -> LiveSession:
        session = self.sessions.get(session_id)
        if session is None or session.closed:
            raise LiveError(f"live session {shown(session_id)} is unknown or was closed")
        return session

    def close(self, session_id: str) -> bool:
        with self._lock:
            session = self.sessions.pop(session_id, None)
        if session is not None:
            session.closed = True
        return session is not None

    def sweep(self, now: float | None = None) -> list[str]:
        """Close the sessions idle longer than ``idle_timeout_s``; their ids."""
        now = time.monotonic() if now is None else now
        stale = [
            sid for sid, s in list(self.sessions.items()) if now - s.touched > self.idle_timeout_s
        ]
        for sid in stale:
            self.close(sid)
        return stale

    def inspect(self, session_id: str, slot: Any) -> dict[str, Any]:
        return self.get(session_id).inspect(slot)


__all__ = ["LiveError", "LiveSession", "LiveSessions", "parse_seed", "parse_speed", "world_config"]
