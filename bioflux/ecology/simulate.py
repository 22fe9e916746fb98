"""Long ecology-mode simulations: population time series under any pair of policies.

``simulate`` plays one long episode per seed on the batched core (``BatchedWorld``, ecology
mode, ``max_steps`` set to ``steps``). Each step, each species' policy sees one batch holding
the observations of all its live agents (no RLlib sampling). Every seed has its own world
(``BatchedWorld(seed=seed)``) and its own action-sampling RNG, so a seed's series does not
depend on which other seeds run with it.

Per seed and step the series records ``step`` (0 = the initial state), the live counts
``predator`` and ``prey``, ``births_predator``/``births_prey`` (slots that came alive that step)
and ``deaths_predator`` (starved) / ``deaths_prey`` (captured). The env ends an episode as soon
as either species is extinct; the series then stops at that step, which ``summary.json``
records as the species' extinction step.

Files (``out_dir``): ``series_seed<k>.csv`` per seed (and ``series_seed<k>.parquet`` when
pyarrow is installed) and ``summary.json`` (per seed: final populations, extinction steps,
birth and death totals; plus the env config and the policies).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bioflux.envs.config import SPECIES, EnvConfig
from bioflux.envs.core import BatchedWorld
from bioflux.policies import Policy, load_policy
from bioflux.rollout import play_step

#: Columns of a series, in CSV order.
COLUMNS: tuple[str, ...] = (
    "step",
    "predator",
    "prey",
    "births_predator",
    "births_prey",
    "deaths_predator",
    "deaths_prey",
)
SERIES_GLOB = "series_seed*.csv"


def series_path(out_dir: str | Path, seed: int, suffix: str = "csv") -> Path:
    return Path(out_dir) / f"series_seed{seed}.{suffix}"


def _env_config(env_config: EnvConfig | Mapping[str, Any], steps: int) -> EnvConfig:
    if steps < 1:
        raise ValueError(f"steps={steps} is out of range; allowed: >= 1")
    cfg = env_config.to_dict() if isinstance(env_config, EnvConfig) else dict(env_config)
    if not cfg.get("ecology", False):
        raise ValueError(
            "simulate needs an ecology-mode env (ecology: true), e.g. --config configs/ecology.yaml"
        )
    cfg["max_steps"] = int(steps)
    return EnvConfig.from_kwargs(cfg)


def _seed_list(seeds: int | Iterable[int]) -> list[int]:
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ValueError(f"seeds={seeds} is out of range; allowed: >= 1 (or a list of seeds)")
        out = list(range(int(seeds)))
    else:
        out = [int(s) for s in seeds]
    if not out:
        raise ValueError("seeds is empty; give a count >= 1 or a list of seeds")
    if min(out) < 0:
        raise ValueError(f"seeds must be >= 0, got {min(out)}")
    if len(set(out)) != len(out):
        raise ValueError(f"seeds must be distinct, got {out}")
    return out


def _policy(spec: str | Path | Policy, species: str) -> Policy:
    if hasattr(spec, "probabilities"):
        return spec  # type: ignore[return-value]
    return load_policy(spec, species)


def action_rng(seed: int) -> np.random.Generator:
    """The RNG that samples the policies' actions for ``seed`` (independent of the world's)."""
    return np.random.default_rng([seed, 1])


def run_seed(
    config: EnvConfig,
    predator: Policy,
    prey: Policy,
    seed: int,
    greedy: bool = False,
    bar: tqdm | None = None,
) -> dict[str, np.ndarray]:
    """One episode of ``config.max_steps`` steps; returns the series as int64 columns.

    Row 0 is the state after reset (no births or deaths); row ``k`` the state after step ``k``.
    """
    world = BatchedWorld(config, num_worlds=1, seed=seed)
    world.reset()
    rng = action_rng(seed)
    P = world.n_pred_slots
    rows = np.zeros((config.max_steps + 1, len(COLUMNS)), dtype=np.int64)
    rows[0, 1:3] = world.populations()[0]
    actions = np.zeros(world.alive.shape, dtype=np.int64)
    n = 0
    policies = {"predator": predator, "prey": prey}
    while not world.done[0]:
        res = play_step(world, policies, rng, greedy, actions)
        n += 1
        rows[n] = (
            world.t[0],
            *world.populations()[0],
            res.born[0, :P].sum(),
            res.born[0, P:].sum(),
            res.starved[0].sum(),
            res.caught[0].sum(),
        )
        if bar is not None:
            bar.update(1)
    rows = rows[: n + 1]
    return {name: rows[:, i] for i, name in enumerate(COLUMNS)}


def seed_summary(series: Mapping[str, np.ndarray], initial: tuple[int, int]) -> dict[str, Any]:
    """Final populations, extinction step per species (or None) and birth/death totals."""
    last = int(series["step"][-1])
    out: dict[str, Any] = {
        "steps": last,
        "initial": dict(zip(SPECIES, initial)),
        "final": {s: int(series[s][-1]) for s in SPECIES},
        "extinction_step": {},
        "births": {s: int(series[f"births_{s}"].sum()) for s in SPECIES},
        "deaths": {s: int(series[f"deaths_{s}"].sum()) for s in SPECIES},
    }
    for s in SPECIES:
        zero = np.flatnonzero(series[s] == 0)
        out["extinction_step"][s] = int(series["step"][zero[0]]) if zero.size else None
    out["extinct"] = any(v is not None for v in out["extinction_step"].values())
    out["max"] = {s: int(series[s].max()) for s in SPECIES}
    out["mean"] = {s: float(series[s].mean()) for s in SPECIES}
    return out


def write_series(series: Mapping[str, np.ndarray], path: str | Path) -> list[Path]:
    """Write ``path`` (CSV) and, when pyarrow is importable, the same table as Parquet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = [np.asarray(series[c]) for c in COLUMNS]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        w.writerows(np.column_stack(cols).tolist())
    written = [path]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return written
    pq.write_table(pa.table({c: v for c, v in zip(COLUMNS, cols)}), path.with_suffix(".parquet"))
    written.append(path.with_suffix(".parquet"))
    return written


def read_series(path: str | Path) -> dict[str, np.ndarray]:
    """A series CSV written by ``simulate`` as int64 columns."""
    data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
    missing = set(COLUMNS) - set(header)
    if missing:
        raise ValueError(f"{path}: not a simulate series (missing {sorted(missing)})")
    return {c: data[:, header.index(c)] for c in COLUMNS}


def simulate(
    env_config: EnvConfig | Mapping[str, Any],
    predator: str | Path | Policy,
    prey: str | Path | Policy,
    steps: int,
    seeds: int | Iterable[int],
    out_dir: str | Path | None = None,
    greedy: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one ``steps``-step ecology episode per seed; see the module docstring.

    ``predator``/``prey``: built-in policy names (``random``, ``lotka_volterra``), checkpoint or
    model paths, or policy objects. ``seeds``: a count ``K`` (seeds ``0 … K-1``) or a list.

    Returns a dict with ``env``, ``policies``, ``steps``, ``seeds``, ``per_seed`` (summaries by
    seed), ``series`` (column arrays by seed) and, with ``out_dir``, ``files``.
    """
    config = _env_config(env_config, steps)
    seed_list = _seed_list(seeds)
    pred_policy = _policy(predator, "predator")
    prey_policy = _policy(prey, "prey")
    series: dict[int, dict[str, np.ndarray]] = {}
    per_seed: dict[int, dict[str, Any]] = {}
    bar = tqdm(total=steps * len(seed_list), desc="simulate", unit="step", disable=not progress)
    for seed in seed_list:
        bar.set_postfix(seed=seed)
        s = run_seed(config, pred_policy, prey_policy, seed, greedy=greedy, bar=bar)
        bar.update(steps - int(s["step"][-1]))  # an extinction ends a seed early
        series[seed] = s
        per_seed[seed] = seed_summary(s, (config.n_predators, config.n_prey))
    bar.close()
    result: dict[str, Any] = {
        "steps": steps,
        "seeds": seed_list,
        "greedy": greedy,
        "policies": {
            "predator": getattr(pred_policy, "name", str(predator)),
            "prey": getattr(prey_policy, "name", str(prey)),
            "predator_spec": str(predator) if not hasattr(predator, "probabilities") else None,
            "prey_spec": str(prey) if not hasattr(prey, "probabilities") else None,
        },
        "env": config.to_dict(),
        "per_seed": per_seed,
        "survived": [s for s in seed_list if not per_seed[s]["extinct"]],
        "series": series,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files: dict[str, Any] = {"series": {}}
        for seed, s in series.items():
            written = write_series(s, series_path(out, seed))
            files["series"][seed] = [str(p) for p in written]
        files["summary"] = str(out / "summary.json")
        result["files"] = files
        summary = {k: v for k, v in result.items() if k != "series"}
        summary["per_seed"] = {str(k): v for k, v in per_seed.items()}
        summary["files"] = {
            "series": {str(k): v for k, v in files["series"].items()},
            "summary": files["summary"],
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return result


def mean_series(
    series: Mapping[int, Mapping[str, np.ndarray]] | str | Path,
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Mean counts per step over seeds, from ``simulate``'s ``series`` or its output folder.

    Only the seeds that ran longest (none of which ended early by an extinction, if any ran
    the full length) enter the mean; returns the mean columns and the seeds used.
    """
    if isinstance(series, (str, Path)):
        folder = Path(series)
        files = sorted(folder.glob(SERIES_GLOB))
        if not files:
            raise ValueError(f"{folder}: no {SERIES_GLOB} files (is it a simulate --out folder?)")
        loaded = {}
        for f in files:
            key = f.stem.removeprefix("series_seed")
            loaded[int(key) if key.isdigit() else key] = read_series(f)
        series = loaded
    if not series:
        raise ValueError("no series to average")
    longest = max(len(s["step"]) for s in series.values())
    used = sorted(k for k, s in series.items() if len(s["step"]) == longest)
    out = {"step": np.asarray(series[used[0]]["step"])}
    for c in COLUMNS[1:]:
        out[c] = np.mean([np.asarray(series[k][c], dtype=float) for k in used], axis=0)
    return out, used


def to_population_series(series: Mapping[str, np.ndarray]):
    """A :class:`~bioflux.ecology.analysis.PopulationSeries` (time in steps) of a series."""
    from bioflux.ecology.analysis import PopulationSeries

    return PopulationSeries(series["step"], series["prey"], series["predator"], "step")


def load_for_analysis(path: str | Path):
    """The series to analyse at ``path`` and where it came from.

    ``path`` is a series CSV (any CSV ``PopulationSeries.from_csv`` reads) or a ``simulate``
    output folder, whose seeds are averaged step by step (``mean_series``). Returns the
    :class:`~bioflux.ecology.analysis.PopulationSeries` and a dict with ``path``, ``kind``
    (``csv`` or ``mean_over_seeds``), ``seeds`` (folder only) and ``default_out`` (the folder,
    or the CSV's folder).
    """
    from bioflux.ecology.analysis import PopulationSeries

    p = Path(path)
    if p.is_dir():
        mean, used = mean_series(p)
        info = {"path": str(p), "kind": "mean_over_seeds", "seeds": used, "default_out": p}
        return to_population_series(mean), info
    if not p.is_file():
        raise ValueError(f"{p} is neither a series CSV nor a simulate output folder")
    return PopulationSeries.from_csv(p), {"path": str(p), "kind": "csv", "default_out": p.parent}
