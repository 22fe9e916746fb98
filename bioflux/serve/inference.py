"""``ModelInference``: batched predictions with confidence and reasoning, no Serve needed.

The Serve app (``bioflux.serve.app``) wraps one ``ModelInference`` per replica, so the local
API and the HTTP endpoint give the same answers for the same inputs.

    from bioflux.serve import ModelInference
    inf = ModelInference("models/")
    inf.predict("ppo", "predator", obs)                     # obs: (11, 11, 4) or flattened
    inf.batch_predict([{"policy": "ppo/prey", "observation": obs2}, ...])

Observations are validated against the policy's env (window size from ``obs_radius``; finite
values within the channel ranges) and may be given as raw state instead (grid size, walls and
agent positions), encoded by the environment's own code (``BatchedWorld.observe``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bioflux.envs.config import ACTION_NAMES, SPECIES, EnvConfig
from bioflux.envs.core import OBS_CHANNELS, BatchedWorld
from bioflux.policies import BUILTINS, ModulePolicy, Policy, choose_actions
from bioflux.serve.registry import ModelEntry, ModelRegistry, UnknownModelError

_N_CH = len(OBS_CHANNELS)


class ObservationError(ValueError):
    """An observation (or raw state) that the policy cannot take."""


class ModelLoadError(RuntimeError):
    """A checkpoint that exists but cannot be loaded (corrupt, incompatible)."""


@dataclass
class LoadedModel:
    entry: ModelEntry
    policy: Policy
    loaded_at: float


def observation_window(entry: ModelEntry) -> int | None:
    """The window side ``S`` the policy expects (None: any odd size, built-ins)."""
    env = entry.metadata.get("env")
    return None if not env else 2 * int(env.get("obs_radius", EnvConfig.obs_radius)) + 1


def prepare_observation(obs: Any, window: int | None) -> np.ndarray:
    """Validate one observation → ``(S, S, 4)`` float32, or raise ``ObservationError``."""
    try:
        arr = np.asarray(obs, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ObservationError(f"observation is not a numeric array: {err}") from None
    if arr.ndim == 1:
        side = int(round(np.sqrt(arr.size / _N_CH)))
        if side * side * _N_CH != arr.size or (window and side != window):
            want = f"{window * window * _N_CH}" if window else "S*S*4"
            raise ObservationError(f"flat observation has {arr.size} values; expected {want}")
        arr = arr.reshape(side, side, _N_CH)
    if arr.ndim != 3 or arr.shape[2] != _N_CH or arr.shape[0] != arr.shape[1]:
        raise ObservationError(
            f"observation shape {tuple(arr.shape)} is not (S, S, {_N_CH}) with channels "
            f"{OBS_CHANNELS}"
        )
    if window and arr.shape[0] != window:
        raise ObservationError(
            f"observation window {arr.shape[0]}x{arr.shape[1]} does not match the policy's "
            f"{window}x{window}"
        )
    if arr.shape[0] % 2 == 0:
        raise ObservationError(f"observation window side {arr.shape[0]} must be odd")
    if not np.isfinite(arr).all():
        raise ObservationError("observation contains NaN or infinite values")
    if arr.min() < 0:
        raise ObservationError("observation values must be >= 0 (counts and flags)")
    if arr[..., 0].max() > 1 or arr[..., 3].max() > 1:
        raise ObservationError("obstacle and own_energy channels must lie in [0, 1]")
    return arr


def observation_from_state(state: dict[str, Any], species: str, entry: ModelEntry) -> np.ndarray:
    """Encode raw state with the environment's own observation code.

    ``state``: ``height``, ``width``, ``predators`` and ``prey`` (lists of ``[row, col]``),
    optional ``walls`` (list of ``[row, col]``), ``energy`` (one per predator), and ``agent``:
    the index of the observing agent within its species' list.
    """
    env = dict(entry.metadata.get("env") or {})
    try:
        height, width = int(state["height"]), int(state["width"])
        pred = [tuple(map(int, p)) for p in state.get("predators", [])]
        prey = [tuple(map(int, p)) for p in state.get("prey", [])]
        index = int(state.get("agent", 0))
        own = pred if species == "predator" else prey
        if not 0 <= index < len(own):
            raise ObservationError(f"state.agent={index} is not an index into state.{species}")
        cfg = EnvConfig.from_kwargs(
            {
                **{
                    k: v
                    for k, v in env.items()
                    if k in {"obs_radius", "capture_radius", "reproduce_energy", "ecology"}
                },
                "height": height,
                "width": width,
                "n_predators": len(pred),
                "n_prey": len(prey),
                "wall_density": 0.0,
            }
        )
        world = BatchedWorld(cfg, num_worlds=1)
        layout = {"predators": pred, "prey": prey, "walls": state.get("walls") or []}
        if state.get("energy") is not None:
            layout["energy"] = [float(e) for e in state["energy"]]
        world.reset(layout=layout)
    except ObservationError:
        raise
    except KeyError as err:
        raise ObservationError(f"state is missing {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise ObservationError(f"invalid state: {err}") from None
    slot = index if species == "predator" else cfg.max_predators + index
    return world.observe(np.array([0]), np.array([slot]))[0]


def explain(
    obs: np.ndarray, probs: np.ndarray, action: int, drives: dict[str, np.ndarray] | None = None
) -> str:
    """A short human-readable reason: the choice, the alternatives, what dominates the view
    and, for interpretable policies (Lotka–Volterra), the drive values behind the choice."""
    order = np.argsort(-probs)
    alts = ", ".join(f"{ACTION_NAMES[i]} {probs[i]:.2f}" for i in order[:3] if i != action)
    parts = [f"chose {ACTION_NAMES[action]} (p={probs[action]:.2f}); next: {alts}"]
    if drives:
        parts.append(
            "drives for "
            + ACTION_NAMES[action]
            + ": "
            + ", ".join(
                f"{name} {values[action]:+.2f}"
                for name, values in drives.items()
                if np.any(values != 0)
            )
        )
    s = obs.shape[0] // 2
    for ch, label in ((1, "predator"), (2, "prey")):
        grid = obs[..., ch].copy()
        if label == "predator" and obs[s, s, 3] > 0:  # a predator counts itself
            grid[s, s] = max(grid[s, s] - 1, 0)
        rows, cols = np.nonzero(grid)
        if len(rows) == 0:
            parts.append(f"no {label} in view")
            continue
        d = np.maximum(np.abs(rows - s), np.abs(cols - s))
        k = int(np.argmin(d))
        dr, dc = int(rows[k] - s), int(cols[k] - s)
        where = (
            " ".join(
                w
                for w in (
                    f"{abs(dr)} {'down' if dr > 0 else 'up'}" if dr else "",
                    f"{abs(dc)} {'right' if dc > 0 else 'left'}" if dc else "",
                )
                if w
            )
            or "here"
        )
        parts.append(f"{int(grid.sum())} {label} in view, nearest {where}")
    return "; ".join(parts)


class ModelInference:
    """Load-on-demand cache of policies with batched, explained predictions (thread-safe)."""

    def __init__(self, models_dir: str | Path = "models", preload: bool = False):
        self.registry = ModelRegistry(models_dir)
        self._loaded: dict[str, LoadedModel] = {}
        self.failures: dict[str, str] = {}
        self._lock = threading.Lock()
        if preload:
            self.preload()

    # ------------------------------------------------------------ model cache
    def preload(self) -> None:
        """Try to load every discovered module; failures are recorded, not raised."""
        for name, entry in list(self.registry.entries.items()):
            if not entry.builtin:
                try:
                    self.load(name)
                except ModelLoadError:
                    pass

    def load(self, name: str) -> LoadedModel:
        """Load (or reload: hot swap) a policy; in-flight requests finish on the old one."""
        self.registry.scan()
        entry = self.resolve(name)
        if entry.builtin:
            policy: Policy = BUILTINS[entry.algorithm](entry.species)
        else:
            try:
                policy = ModulePolicy.from_checkpoint(entry.path, name=entry.name)
            except ValueError as err:
                self.failures[entry.name] = str(err.__cause__ or err)
                raise ModelLoadError(
                    f"policy {entry.name!r} failed to load: {self.failures[entry.name]}"
                ) from None
        loaded = LoadedModel(entry, policy, time.time())
        with self._lock:
            self._loaded[entry.name] = loaded  # atomic swap
            self.failures.pop(entry.name, None)
        return loaded

    def unload(self, name: str) -> bool:
        entry = self.resolve(name)
        with self._lock:
            return self._loaded.pop(entry.name, None) is not None

    def resolve(self, name: str):
        """Registry lookup that steers aliases around checkpoints that failed to load."""
        return self.registry.resolve(name, unhealthy=self.failures)

    def get(self, name: str) -> LoadedModel:
        entry = self.resolve(name)
        loaded = self._loaded.get(entry.name)
        if loaded is None:
            if entry.name in self.failures:
                raise ModelLoadError(
                    f"policy {entry.name!r} failed to load: {self.failures[entry.name]}"
                )
            loaded = self.load(entry.name)
        return loaded

    def list_models(self) -> list[dict[str, Any]]:
        self.registry.scan()
        alias_of: dict[str, list[str]] = {}
        for alias, full in self.registry.aliases.items():
            alias_of.setdefault(full, []).append(alias)
        out = []
        for name, e in sorted(self.registry.entries.items()):
            out.append(
                {
                    "name": name,
                    "aliases": sorted(alias_of.get(name, [])),
                    "algorithm": e.algorithm,
                    "species": e.species,
                    "run": e.run,
                    "kind": e.kind,
                    "builtin": e.builtin,
                    "loaded": name in self._loaded,
                    "error": self.failures.get(name),
                    "iteration": e.metadata.get("iteration"),
                    "observation_window": observation_window(e),
                }
            )
        return out

    # ------------------------------------------------------------ predictions
    def resolve_observation(
        self, name: str, observation: Any = None, state: dict[str, Any] | None = None
    ) -> tuple[ModelEntry, np.ndarray]:
        """Validate the input for ``name`` and return ``(entry, (S, S, 4) observation)``."""
        entry = self.resolve(name)
        if (observation is None) == (state is None):
            raise ObservationError("give exactly one of 'observation' or 'state'")
        if state is not None:
            return entry, observation_from_state(state, entry.species, entry)
        return entry, prepare_observation(observation, observation_window(entry))

    def predict_many(
        self, items: list[tuple[str, np.ndarray]], sample: bool = False, seed: int | None = None
    ) -> list[dict[str, Any]]:
        """Predict for ``(policy name, validated observation)`` pairs: one forward per policy."""
        rng = np.random.default_rng(seed)
        groups: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(items):
            groups.setdefault(self.resolve(name).name, []).append(i)
        results: list[dict[str, Any]] = [{}] * len(items)
        for full, idx in groups.items():
            model = self.get(full)
            window = {items[i][1].shape for i in idx}
            by_shape = [[i for i in idx if items[i][1].shape == shp] for shp in window]
            for sub in by_shape:
                obs = np.stack([items[i][1] for i in sub])
                probs = model.policy.probabilities(obs)
                drives_fn = getattr(model.policy, "drives", None)
                drives = drives_fn(obs) if drives_fn else None
                actions = choose_actions(model.policy, probs, rng, greedy=not sample)
                for j, i in enumerate(sub):
                    a = int(actions[j])
                    results[i] = {
                        "policy": full,
                        "action": a,
                        "action_name": ACTION_NAMES[a],
                        "confidence": float(probs[j, a]),
                        "probabilities": {n: float(p) for n, p in zip(ACTION_NAMES, probs[j])},
                        "reasoning": explain(
                            obs[j], probs[j], a, drives and {k: v[j] for k, v in drives.items()}
                        ),
                        "degraded": False,
                    }
        return results

    def predict(
        self,
        algorithm: str,
        species: str,
        obs: Any = None,
        run: str | None = None,
        state: dict[str, Any] | None = None,
        sample: bool = False,
    ) -> dict[str, Any]:
        """One prediction for ``<algorithm>/<species>[@run]``."""
        if species not in SPECIES:
            raise ObservationError(f"species={species!r} is unknown; allowed: {SPECIES}")
        name = f"{algorithm}/{species}" + (f"@{run}" if run else "")
        entry, arr = self.resolve_observation(name, obs, state)
        return self.predict_many([(entry.name, arr)], sample=sample)[0]

    def batch_predict(
        self, requests: list[dict[str, Any]], sample: bool = False
    ) -> list[dict[str, Any]]:
        """Many agents, each ``{"policy": name, "observation": ... | "state": ...}``."""
        items = [
            self.resolve_observation(r["policy"], r.get("observation"), r.get("state"))
            for r in requests
        ]
        return self.predict_many([(e.name, o) for e, o in items], sample=sample)


__all__ = [
    "ModelInference",
    "ModelLoadError",
    "ObservationError",
    "UnknownModelError",
    "explain",
    "observation_from_state",
    "prepare_observation",
]
