"""What moves the calibrated world's predator lag: the shipped lynx–hare world
(``configs/ecology_lynx_hare.yaml``) played by the Lotka–Volterra policies with one change at a
time, on the re-ranking seeds (2000–2003: no trial's and no validation's).

Run: ``python benchmarks/calibration_levers.py [--steps 1500] [--burn-in 300]``; prints one
JSON object per variant: the lag/period per seed and its mean, the mean-cycle shape
correlations with the lynx–hare data, and full cycles (``bioflux.ecology.realism``). ~2 min on
2 cores. The variants are the levers docs/ecology.md names as not yet searched: the
Lotka–Volterra policies' coefficients (``bioflux.policy_modules.lotka_volterra``) and a
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--burn-in", type=int, default=300)
    args = ap.parse_args()
    ref = cycle_realism(reference_series("lynx_hare"))
    base = load("ecology_lynx_hare").env_config.to_dict()
    base["max_steps"] = args.steps
    variants = {
        "shipped": (base, {}, {}),
        "predator temperature 1.0 (default 0.25)": (base, {"temperature": 1.0}, {}),
        "predator pursuit delta 1.0 (default 2.0)": (base, {"delta": 1.0}, {}),
        "predator search gamma 0 (default 0.3)": (base, {"gamma": 0.0}, {}),
        "prey flight beta 1.0 (default 2.0)": (base, {}, {"beta": 1.0}),
        "world side x1.5, same densities": (bigger(base, 1.5), {}, {}),
    }
    for name, (env, pred, prey) in variants.items():
        t0 = time.perf_counter()
        res = simulate(
            env,
            ModulePolicy(make_module("predator", **pred), name="lotka_volterra"),
            ModulePolicy(make_module("prey", **prey), name="lotka_volterra"),
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
