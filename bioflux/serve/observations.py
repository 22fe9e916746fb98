"""Observations a served policy takes: validation and encoding, before any model runs.

An observation is an egocentric window ``(S, S, 4)`` (or flattened), validated against the
policy's env (window size from ``obs_radius``; finite values within the channel ranges), or raw
state (grid size, walls and agent positions), validated (:func:`validate_state`,
:func:`validate_world`) and encoded by the environment's own code (``BatchedWorld.observe``).
Every limit is checked before anything is allocated (``bioflux.serve.settings``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bioflux.envs.config import EnvConfig
from bioflux.envs.core import OBS_CHANNELS, BatchedWorld
from bioflux.serve import settings
from bioflux.serve.registry import ModelEntry, shown

_N_CH = len(OBS_CHANNELS)
#: The keys a raw state may have.
STATE_KEYS = ("height", "width", "predators", "prey", "walls", "energy", "agent")


class ObservationError(ValueError):
    """An observation (or raw state) that the policy cannot take."""


def observation_window(entry: ModelEntry) -> int | None:
    """The window side ``S`` the policy expects (None: any odd size, built-ins)."""
    env = entry.metadata.get("env")
    if not isinstance(env, dict) or entry.error:
        return None
    return 2 * int(env.get("obs_radius", EnvConfig.obs_radius)) + 1


def _count_values(obs: list | tuple, limit: int) -> int:
    """Leaves of a nested list, counted up to just past ``limit`` (cheap: stops there)."""
    count, stack = 0, [obs]
    while stack:
        for item in stack.pop():
            if isinstance(item, (list, tuple)):
                stack.append(item)
            else:
                count += 1
            if count > limit or len(stack) > limit:
                return limit + 1
    return count


def prepare_observation(obs: Any, window: int | None) -> np.ndarray:
    """Validate one observation → ``(S, S, 4)`` float32, or raise ``ObservationError``.

    The size is checked (``settings.MAX_OBSERVATION_SIDE``) before the values are converted."""
    side_max = settings.MAX_OBSERVATION_SIDE
    values_max = side_max * side_max * _N_CH
    if isinstance(obs, np.ndarray):
        if obs.size > values_max:
            raise ObservationError(
                f"observation has {obs.size} values; at most {values_max} "
                f"({side_max}x{side_max}x{_N_CH})"
            )
    elif isinstance(obs, (list, tuple)) and _count_values(obs, values_max) > values_max:
        raise ObservationError(
            f"observation has more than {values_max} values; at most a "
            f"{side_max}x{side_max}x{_N_CH} window (settings.MAX_OBSERVATION_SIDE)"
        )
    try:
        arr = np.asarray(obs, dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as err:
        raise ObservationError(f"observation is not a numeric array: {str(err)[:160]}") from None
    if arr.size > values_max:
        raise ObservationError(
            f"observation has {arr.size} values; at most {values_max} "
            f"({side_max}x{side_max}x{_N_CH})"
        )
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
        raise ObservationError(
            "observation contains NaN or infinite values (or values beyond float32)"
        )
    if arr.min() < 0:
        raise ObservationError("observation values must be >= 0 (counts and flags)")
    if arr[..., 0].max() > 1 or arr[..., 3].max() > 1:
        raise ObservationError("obstacle and own_energy channels must lie in [0, 1]")
    return arr


def _integer(value: Any, field: str, lo: int, hi: int, what: str = "") -> int:
    """``value`` as an int in ``[lo, hi]`` (integral finite numbers only; no bools)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ObservationError(f"state.{field} must be an integer, got {shown(value)}")
    if not isinstance(value, (int, np.integer)):
        value = float(value)
        if not (math.isfinite(value) and value.is_integer()):
            raise ObservationError(f"state.{field} must be a finite integer, got {shown(value)}")
    v = int(value)
    if not lo <= v <= hi:
        raise ObservationError(
            f"state.{field}={shown(v, 40)} is out of range; allowed: [{lo}, {hi}]{what}"
        )
    return v


def _as_list(value: Any, field: str) -> list:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise ObservationError(f"state.{field} must be a list, got {shown(value)}")
    return list(value)


def _positions(state: dict[str, Any], field: str, height: int, width: int) -> list[tuple]:
    """``state[field]``: a list of ``[row, col]`` cells inside the grid (no wrap-around)."""
    value = state.get(field)
    if value is None:
        return []
    value = _as_list(value, field)
    if len(value) > height * width:
        raise ObservationError(
            f"state.{field} has {len(value)} cells; at most height*width = {height * width}"
        )
    grid = f" (the grid is {height}x{width})"
    try:  # fast path: a well-formed integer array inside the grid (the common case)
        cells = np.asarray(value)
    except (ValueError, TypeError):
        cells = None
    if (
        cells is not None
        and cells.ndim == 2
        and cells.shape[1] == 2
        and cells.dtype.kind in "iu"
        and (cells[:, 0] >= 0).all()
        and (cells[:, 0] < height).all()
        and (cells[:, 1] >= 0).all()
        and (cells[:, 1] < width).all()
    ):
        return [(int(r), int(c)) for r, c in cells.tolist()]
    out = []  # anything else: item by item, naming the first bad one
    for i, p in enumerate(value):
        if isinstance(p, np.ndarray):
            p = p.tolist()
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise ObservationError(f"state.{field}[{i}] must be a [row, col] pair, got {shown(p)}")
        row = _integer(p[0], f"{field}[{i}][0] (row)", 0, height - 1, grid)
        col = _integer(p[1], f"{field}[{i}][1] (col)", 0, width - 1, grid)
        out.append((row, col))
    return out


def validate_world(state: Any) -> dict[str, Any]:
    """Check a raw state cheaply, before anything is allocated: types, finite numbers, grid
    cells (``settings.MAX_STATE_CELLS``), coordinates inside the grid; returns the parsed
    ``height``, ``width``, ``predators``, ``prey``, ``walls`` and ``energy``."""
    if not isinstance(state, dict):
        raise ObservationError(f"state must be an object, got {shown(state)}")
    unknown = sorted(str(k) for k in state if k not in STATE_KEYS)
    if unknown:
        raise ObservationError(
            f"state has unknown key(s) {shown(unknown)}; allowed: {list(STATE_KEYS)}"
        )
    for key in ("height", "width"):
        if key not in state:
            raise ObservationError(f"state is missing {key!r}")
    cells_max = settings.MAX_STATE_CELLS
    height = _integer(state["height"], "height", 1, cells_max)
    width = _integer(state["width"], "width", 1, cells_max)
    if height * width > cells_max:
        raise ObservationError(
            f"state.height*state.width = {height * width} grid cells; at most {cells_max}"
        )
    pred = _positions(state, "predators", height, width)
    prey = _positions(state, "prey", height, width)
    walls = _positions(state, "walls", height, width)
    energy = None
    if state.get("energy") is not None:
        energy = _as_list(state["energy"], "energy")
        if len(energy) != len(pred):
            raise ObservationError(
                f"state.energy has {len(energy)} values; expected one per predator ({len(pred)})"
            )
        for i, e in enumerate(energy):
            if isinstance(e, bool) or not isinstance(e, (int, float, np.integer, np.floating)):
                raise ObservationError(f"state.energy[{i}] must be a number, got {shown(e)}")
            if not math.isfinite(float(e)):
                raise ObservationError(f"state.energy[{i}] must be finite, got {shown(e)}")
        energy = [float(e) for e in energy]
    return {
        "height": height,
        "width": width,
        "predators": pred,
        "prey": prey,
        "walls": walls,
        "energy": energy,
    }


def validate_state(state: Any, species: str) -> dict[str, Any]:
    """``validate_world`` plus the observing ``agent``: an index into the species' list."""
    s = validate_world(state)
    key, own = ("predators", s["predators"]) if species == "predator" else ("prey", s["prey"])
    if not own:
        raise ObservationError(f"state.{key} is empty: the observing agent must be listed there")
    s["agent"] = _integer(
        state.get("agent", 0), "agent", 0, len(own) - 1, f" (an index into state.{key})"
    )
    return s


def world_from_state(s: dict[str, Any], env: dict[str, Any]) -> BatchedWorld:
    """A one-world ``BatchedWorld`` holding a validated state, with the rules (window, capture
    radius, ecology) of ``env`` (a model's training env; ``{}``: the defaults)."""
    try:
        cfg = EnvConfig.from_kwargs(
            {
                **{
                    k: v
                    for k, v in env.items()
                    if k in {"obs_radius", "capture_radius", "reproduce_energy", "ecology"}
                },
                "height": s["height"],
                "width": s["width"],
                "n_predators": len(s["predators"]),
                "n_prey": len(s["prey"]),
                "wall_density": 0.0,
            }
        )
        world = BatchedWorld(cfg, num_worlds=1)
        layout: dict[str, Any] = {
            "predators": s["predators"],
            "prey": s["prey"],
            "walls": s["walls"],
        }
        if s["energy"] is not None:
            layout["energy"] = s["energy"]
        world.reset(layout=layout)
    except (TypeError, ValueError, OverflowError) as err:
        raise ObservationError(f"invalid state: {str(err)[:200]}") from None
    return world


def observation_from_state(state: dict[str, Any], species: str, entry: ModelEntry) -> np.ndarray:
    """Encode raw state with the environment's own observation code.

    ``state``: ``height``, ``width``, ``predators`` and ``prey`` (lists of ``[row, col]``),
    optional ``walls`` (list of ``[row, col]``), ``energy`` (one per predator), and ``agent``:
    the index of the observing agent within its species' list. Validated first
    (:func:`validate_state`), so an oversized or malformed state costs no allocation.
    """
    s = validate_state(state, species)
    env = entry.metadata.get("env")
    world = world_from_state(s, env if isinstance(env, dict) else {})
    slot = s["agent"] if species == "predator" else world.n_pred_slots + s["agent"]
    return world.observe(np.array([0]), np.array([slot]))[0]
