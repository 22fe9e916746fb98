"""What moves the calibrated world's predator lag: the shipped lynx–hare world
(``configs/ecology_lynx_hare.yaml``) played by the Lotka–Volterra policies with one change at a
time, on the re-ranking seeds (2000–2003: no trial's and no validation's).

Run: ``python benchmarks/calibration_levers.py [--steps 1500] [--burn-in 300]``; prints one
JSON object per variant: the lag/period per seed and its mean, the lag in steps and the
period (FFT of the prey series) it is the ratio of, the mean-cycle shape correlations with the
lynx–hare data, and full cycles (``bioflux.ecology.realism``). ~3 min on 2 cores. The
variants: the Lotka–Volterra policies' coefficients
(``bioflux.policy_modules.lotka_volterra``), predator crowding halved and doubled, and a
bigger world at the same densities.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bioflux.config import load
from bioflux.ecology.calibrate import reference_series
from bioflux.ecology.realism import cycle_realism, objective
from bioflux.ecology.simulate import simulate, to_population_series
from bioflux.policies import ModulePolicy
from bioflux.policy_modules.lotka_volterra import make_module

SEEDS = [2000, 2001, 2002, 2003]


def bigger(env: dict, factor: float) -> dict:
    """``env`` with ``factor`` × the side and every count scaled by the area."""
    area = factor * factor
    out = dict(env, height=int(env["height"] * factor), width=int(env["width"] * factor))
    for key in ("n_predators", "n_prey", "prey_capacity", "max_prey", "max_predators"):
        out[key] = int(round(env[key] * area))
    out["predator_crowding"] = env["predator_crowding"] * area
    return out


def crowded(env: dict, per_cell: float) -> dict:
    """``env`` with ``predator_crowding`` at ``per_cell`` × its cells."""
    return dict(env, predator_crowding=per_cell * env["height"] * env["width"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--burn-in", type=int, default=300)
    args = ap.parse_args()
    ref = cycle_realism(reference_series("lynx_hare"))
    shipped = load("ecology_lynx_hare")
    base = shipped.env_config.to_dict()
    lv = shipped.lotka_volterra or {}  # the shipped coefficients; a variant changes one
    base["max_steps"] = args.steps
    from bioflux.policy_modules.lotka_volterra import DEFAULTS

    def coefficient(species: str, name: str) -> float:
        return lv.get(species, {}).get(name, DEFAULTS[name])

    per_cell = base["predator_crowding"] / (base["height"] * base["width"])
    variants = {
        "shipped": (base, {}, {}),
        f"predator temperature 1.0 (shipped {coefficient('predator', 'temperature'):.2f})": (
            base,
            {"temperature": 1.0},
            {},
        ),
        f"predator pursuit delta 1.0 (shipped {coefficient('predator', 'delta'):.1f})": (
            base,
            {"delta": 1.0},
            {},
        ),
        f"predator search gamma 0 (shipped {coefficient('predator', 'gamma'):.1f})": (
            base,
            {"gamma": 0.0},
            {},
        ),
        f"prey flight beta 1.0 (shipped {coefficient('prey', 'beta'):.2f})": (
            base,
            {},
            {"beta": 1.0},
        ),
        "world side x1.5, same densities": (bigger(base, 1.5), {}, {}),
        f"predator_crowding x2, weaker ({2 * per_cell:.3f} per cell; shipped {per_cell:.3f})": (
            crowded(base, 2 * per_cell),
            {},
            {},
        ),
        f"predator_crowding x0.5, stronger ({0.5 * per_cell:.3f} per cell)": (
            crowded(base, 0.5 * per_cell),
            {},
            {},
        ),
    }
    for name, (env, pred, prey) in variants.items():
        t0 = time.perf_counter()
        res = simulate(
            env,
            ModulePolicy(
                make_module("predator", **{**lv.get("predator", {}), **pred}), name="lotka_volterra"
            ),
            ModulePolicy(
                make_module("prey", **{**lv.get("prey", {}), **prey}), name="lotka_volterra"
            ),
            args.steps,
            SEEDS,
            progress=False,
        )
        per_seed = {}
        for seed, s in res["series"].items():
            if int(s["step"][-1]) < args.steps:
                per_seed[seed] = {"extinct_at": int(s["step"][-1])}
                continue
            stats = cycle_realism(
                to_population_series({k: v[args.burn_in :] for k, v in s.items()})
            )
            scored = objective(stats, ref)
            per_seed[seed] = {
                "lag_fraction": round(stats["lag_fraction"], 3),
                "lag_steps": round(stats["lag_fraction"] * stats["period"], 1),
                "period": round(stats["period"], 1),
                "shape_prey": round(scored["shape_prey"], 3),
                "shape_predator": round(scored["shape_predator"], 3),
                "n_cycles": stats["n_cycles"],
            }
        lags = [v["lag_fraction"] for v in per_seed.values() if "lag_fraction" in v]
        print(
            json.dumps(
                {
                    "variant": name,
                    "lag_mean": round(float(np.mean(lags)), 3) if lags else None,
                    "data_lag": round(ref["lag_fraction"], 3),
                    "per_seed": per_seed,
                    "wall_s": round(time.perf_counter() - t0, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
