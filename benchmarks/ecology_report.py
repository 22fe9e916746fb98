"""Ecology report: population cycles of configs/ecology.yaml under Lotka–Volterra policies.

Run: ``python benchmarks/ecology_report.py [--steps N] [--seeds 10] [--out DIR]``. Prints one
JSON object and writes plots (PNG) and the simulation files into ``--out`` (printed as
``out_dir``). Numpy/torch only, one process, no Ray.

Per seed: full prey cycles (``cycle_statistics``), extinction, predator lag as a fraction of the
period. On the mean series (step-wise mean over the seeds that ran the full length): the LV fit's
R² (prey and predator), period and lag fraction. The same analysis of the Hudson's Bay lynx–hare
pelts (period in years). Targets: >= 8/10 seeds with >= 3 full cycles and no extinction; lag
fraction 0.15–0.35; LV-fit R² >= 0.8 on the mean series.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from bioflux import config
from bioflux.ecology.analysis import analyze, cycle_statistics, load_lynx_hare
from bioflux.ecology.simulate import mean_series, simulate, to_population_series


def plot_seeds(series: dict, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(series)
    fig = Figure(figsize=(12, 1.8 * n), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, (seed, s) in zip(axes, sorted(series.items())):
        ax.plot(s["step"], s["prey"], color="tab:green", lw=0.8, label="prey")
        ax.plot(s["step"], s["predator"], color="tab:red", lw=0.8, label="predator")
        ax.set_ylabel(f"seed {seed}")
    axes[0].legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("step")
    fig.savefig(path, dpi=90)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="ecology")
    parser.add_argument("--steps", type=int, default=None, help="default: env.max_steps")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--min-cycles", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("outputs/ecology_report"))
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    args = parser.parse_args()

    exp = config.load(args.config)
    seeds = list(range(exp.seed, exp.seed + args.seeds))
    start = time.perf_counter()
    sim = simulate(
        exp.env_config,
        "lotka_volterra",
        "lotka_volterra",
        steps=args.steps or exp.env_config.max_steps,
        seeds=seeds,
        out_dir=args.out / "simulation",
        progress=args.progress,
    )
    sim_s = time.perf_counter() - start

    per_seed = {}
    for seed, s in sim["series"].items():
        info = sim["per_seed"][seed]
        st = cycle_statistics(to_population_series(s))
        per_seed[seed] = {
            "steps": info["steps"],
            "extinction_step": info["extinction_step"],
            "n_cycles": st.n_cycles,
            "period": st.period,
            "lag_fraction": st.lag_fraction,
            "ok": (not info["extinct"]) and st.n_cycles >= args.min_cycles,
        }
    ok = [s for s, v in per_seed.items() if v["ok"]]
    lags = [v["lag_fraction"] for v in per_seed.values() if v["ok"]]

    mean, used = mean_series(sim["series"])
    mean_ps = to_population_series(mean)
    a = analyze(mean_ps, reference=load_lynx_hare(), out_dir=args.out)
    fit, cyc = a["lv_fit"] or {}, a["cycles"]
    ref_fit, ref_cyc = a["reference"]["lv_fit"] or {}, a["reference"]["cycles"]
    seeds_png = plot_seeds(sim["series"], args.out / "populations_per_seed.png")

    r2 = [fit.get("r2_prey"), fit.get("r2_predator")]
    lag_mean = float(np.mean(lags)) if lags else None
    result = {
        "config": args.config,
        "env": sim["env"],
        "policies": "lotka_volterra vs lotka_volterra",
        "steps": args.steps or exp.env_config.max_steps,
        "seeds": seeds,
        "fraction_ok": len(ok) / len(seeds),
        "ok_seeds": ok,
        "per_seed": {str(k): v for k, v in per_seed.items()},
        "lag_fraction_mean": lag_mean,
        "period_per_seed_mean": float(np.mean([per_seed[s]["period"] for s in ok])) if ok else None,
        "mean_series": {
            "seeds": used,
            "r2_prey": r2[0],
            "r2_predator": r2[1],
            "period": cyc["period"],
            "period_peaks": cyc["period_peaks"],
            "lag_fraction": cyc["lag_fraction"],
            "n_cycles": cyc["n_cycles"],
            "lv_fit": fit or None,
        },
        "lynx_hare": {
            "period_years": ref_cyc["period"],
            "period_peaks_years": ref_cyc["period_peaks"],
            "lag_fraction": ref_cyc["lag_fraction"],
            "lag_years": ref_cyc["lag"],
            "n_cycles": ref_cyc["n_cycles"],
            "r2_prey": ref_fit.get("r2_prey"),
            "r2_predator": ref_fit.get("r2_predator"),
        },
        "targets": {
            "fraction_ok>=0.8": len(ok) / len(seeds) >= 0.8,
            "lag_fraction_mean_in_[0.15,0.35]": lag_mean is not None and 0.15 <= lag_mean <= 0.35,
            "r2_mean_series>=0.8": all(v is not None and v >= 0.8 for v in r2),
        },
        "out_dir": str(args.out),
        "plots": [a["files"]["png"], str(seeds_png)],
        "simulate_s": round(sim_s, 1),
        "python": platform.python_version(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
