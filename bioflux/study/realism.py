"""The study's ecological realism: each approach's policies play the calibrated ecology world
(``bioflux simulate``'s long episodes), and their cycle statistics stand beside the lynx–hare
data's (``bioflux.ecology.realism``).

Per player of the study (each approach's and ensemble's policy from the first training seed,
and the baselines) one ``simulate`` run: that player's predators against that player's prey,
for ``steps`` steps on ``seeds`` seeds, in the calibrated world (``config``, by default
``configs/ecology_lynx_hare.yaml``) shrunk to ``size`` × ``size`` cells at the same densities
and with the study world's observation window (the one the policies were trained with). The
first ``burn_in`` steps are dropped. A player whose populations die out is reported with the
step of the extinction; a player that cannot play the world (its error) is reported as such.
The ``lotka_volterra`` baseline plays with the calibrated world's own coefficients (its
``lotka_volterra`` section), so its row is the calibrated world as ``bioflux ecology
calibrate`` validated it, at the study's size and window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bioflux.config import load as load_experiment
from bioflux.envs.config import SPECIES, EnvConfig
from bioflux.policies import Policy, lotka_volterra_policy
from bioflux.study.config import StudyConfig
from bioflux.study.crossplay import Player, load_player

#: The statistics the report shows, in order.
COLUMNS = ("lag_fraction", "shape_prey", "shape_predator", "n_cycles", "amp_ratio", "rise_prey")


def realism_world(study: StudyConfig) -> dict[str, Any]:
    """The calibrated world at ``ecology_realism.size`` with the study's observation window."""
    settings = study.ecology_realism
    env = load_experiment(settings.config).env_config.to_dict()
    cells = env["height"] * env["width"]
    side = settings.size
    ratio = side * side / cells

    def scaled(key: str) -> int:
        return max(2, int(round(env[key] * ratio)))

    env.update(
        height=side,
        width=side,
        n_predators=scaled("n_predators"),
        n_prey=scaled("n_prey"),
        max_predators=scaled("max_predators"),
        max_prey=scaled("max_prey"),
        prey_capacity=scaled("prey_capacity") if env.get("prey_capacity") else None,
        predator_crowding=(
            env["predator_crowding"] * ratio if env.get("predator_crowding") else None
        ),
        obs_radius=int(study.env.get("obs_radius", EnvConfig.obs_radius)),
        ecology=True,
        recycle_slots=True,
    )
    return env


def _players(study: StudyConfig, everyone: list[Player]) -> list[Player]:
    first = study.seeds[0]
    picked: dict[str, Player] = {}
    for p in everyone:
        if p.approach not in picked and (p.seed is None or p.seed == first):
            picked[p.approach] = p
    return list(picked.values())


def ecology_realism(
    study: StudyConfig, everyone: list[Player], log: Callable[[str], None] = print
) -> dict[str, Any] | None:
    """Cycle statistics of every player in the calibrated world beside the data's (None when
    ``ecology_realism.enabled`` is false)."""
    settings = study.ecology_realism
    if not settings.enabled:
        return None
    from bioflux.ecology.realism import compare, cycle_realism, scalar_statistics
    from bioflux.ecology.series import load_lynx_hare
    from bioflux.ecology.simulate import simulate, to_population_series

    t0 = time.perf_counter()
    env = realism_world(study)
    coefficients = load_experiment(settings.config).lotka_volterra or {}
    data = cycle_realism(load_lynx_hare())
    rows: dict[str, Any] = {}
    seeds = list(range(settings.seeds))
    for player in _players(study, everyone):
        try:
            predator, prey = (_policy(player, species, coefficients) for species in SPECIES)
            result = simulate(env, predator, prey, settings.steps, seeds, progress=False)
        except (ValueError, RuntimeError, OSError) as err:
            rows[player.approach] = {"player": player.key, "error": str(err).splitlines()[0]}
            continue
        per_seed = []
        for seed in seeds:
            s = result["series"][seed]
            last = int(s["step"][-1])
            if last < settings.steps:
                per_seed.append({"seed": seed, "extinct": True, "extinction_step": last})
                continue
            stats = cycle_realism(
                to_population_series({k: v[settings.burn_in :] for k, v in s.items()})
            )
            per_seed.append(
                {"seed": seed, **scalar_statistics(stats), **_finite(compare(stats, data))}
            )
        rows[player.approach] = {"player": player.key, "per_seed": per_seed, **_mean(per_seed)}
    wall = time.perf_counter() - t0
    log(f"ecology realism: {len(rows)} players in the calibrated world, {wall:.0f} s")
    return {
        "config": settings.config,
        "env": env,
        "steps": settings.steps,
        "burn_in": settings.burn_in,
        "seeds": seeds,
        "data": {k: v for k, v in scalar_statistics(data).items() if k in COLUMNS},
        "players": rows,
        "wall_s": round(wall, 1),
    }


def _policy(player: Player, species: str, coefficients: dict[str, dict[str, float]]) -> Policy:
    if player.source == "lotka_volterra" and not player.members:
        return lotka_volterra_policy(species, **coefficients.get(species, {}))
    return load_player(player, species)


def _finite(d: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if v is not None and math.isfinite(v) else None) for k, v in d.items()}


def _mean(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    live = [r for r in per_seed if not r.get("extinct")]
    out: dict[str, Any] = {"extinct_seeds": len(per_seed) - len(live)}
    for col in COLUMNS:
        values = [r[col] for r in live if r.get(col) is not None]
        out[col] = float(np.mean(values)) if values else None
    return out


def markdown(section: dict[str, Any] | None) -> list[str]:
    """The report's section (empty when realism was off)."""
    if section is None:
        return []

    def f(v: Any) -> str:
        if v is None:
            return "–"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    e = section["env"]
    lines = [
        "",
        "## Ecological realism (the calibrated lynx–hare world)",
        "",
        f"Each player's predators and prey play `{section['config']}` at {e['height']}x"
        f"{e['width']} cells ({e['n_predators']} predators, {e['n_prey']} prey at reset, the "
        f"study's obs_radius {e['obs_radius']}) for {section['steps']} steps on "
        f"{len(section['seeds'])} seed(s), the first {section['burn_in']} dropped "
        "(docs/ecology.md defines the statistics; shapes are correlations with the data's "
        f"mean cycles). {section['wall_s']:.0f} s.",
        "",
        "| player | " + " | ".join(COLUMNS) + " | extinct seeds |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
        "| **lynx–hare data** | "
        + " | ".join(
            f(section["data"].get(c, 1.0 if c.startswith("shape") else None)) for c in COLUMNS
        )
        + " | – |",
    ]
    for row in section["players"].values():
        if "error" in row:
            lines.append(f"| `{row['player']}` | cannot play: {row['error']} |")
            continue
        lines.append(
            f"| `{row['player']}` | "
            + " | ".join(f(row.get(c)) for c in COLUMNS)
            + f" | {row['extinct_seeds']}/{len(row['per_seed'])} |"
        )
    return lines
