"""Training: build the algorithm from a validated experiment, run it, checkpoint, resume, export.

Run folder (``<output>/<name>/``)::

    config.yaml            the resolved experiment (after --set overrides)
    metrics.jsonl          one JSON object per iteration (see ``ITERATION_KEYS``)
    summary.json           final figures, best iteration, checkpoint and export paths,
                           ``env_runner_nodes`` (Ray node ID of each remote EnvRunner)
    learning_curves.png    return per species and capture rate against env steps
    tb/                    TensorBoard logs (same scalars as metrics.jsonl)
    checkpoints/iter_NNNNNN/  the last ``checkpoint.keep`` periodic RLlib checkpoints
    checkpoints/best/      the checkpoint with the best ``checkpoint.score``
    checkpoints/final/     the checkpoint at the end

Checkpoints are written to a temporary folder and renamed, so a killed run never leaves a
half-written one; ``resume=True`` restores the newest complete checkpoint and continues the
iteration count (metrics rows after that checkpoint are dropped and recomputed). The final and
best modules are exported to ``<models>/<algorithm>/<name>/{final,best}/<species>/`` with a
``bioflux.json`` describing them; serving and evaluation load them from there.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bioflux.config import Experiment
from bioflux.envs.config import SPECIES
from bioflux.policies import MODULES_SUBDIR

#: Keys of each metrics.jsonl row.
ITERATION_KEYS = (
    "iteration",
    "env_steps",
    "agent_steps",
    "episodes",
    "time_s",
    "iteration_time_s",
    "predator_return",
    "prey_return",
    "capture_rate",
    "first_capture_step",
    "episode_length",
    "env_steps_per_s",
    "agent_steps_per_s",
)


class RunFolder:
    """Paths and file I/O of one run folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.metrics = self.root / "metrics.jsonl"
        self.summary = self.root / "summary.json"
        self.curves = self.root / "learning_curves.png"
        self.config = self.root / "config.yaml"

    def periodic(self) -> list[Path]:
        return sorted(self.checkpoints.glob("iter_[0-9]*[0-9]"))

    def latest(self) -> Path | None:
        """The newest complete checkpoint (final counts as newest)."""
        final = self.checkpoints / "final"
        if final.is_dir():
            return final
        periodic = self.periodic()
        return periodic[-1] if periodic else None

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.is_file():
            return []
        rows = []
        for line in self.metrics.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill
                break
        return rows

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        self.metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def append_metrics(self, row: dict[str, Any]) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps(row) + "\n")


def save_checkpoint(algo: Any, target: Path) -> Path:
    """Save atomically: write to ``<target>.tmp``, then swap it in."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    algo.save_to_path(str(tmp.resolve()))
    old = target.with_name(target.name + ".old")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def iteration_row(
    result: dict[str, Any], previous: dict[str, Any] | None, iteration_time: float
) -> dict[str, Any]:
    """Flatten RLlib's result dict into one metrics row."""
    er = result.get("env_runners", {})
    returns = er.get("module_episode_returns_mean", {}) or {}
    env_steps = int(
        result.get("num_env_steps_sampled_lifetime", 0)
        or er.get("num_env_steps_sampled_lifetime", 0)
    )
    agent_steps = er.get("num_agent_steps_sampled_lifetime", {}) or {}
    agent_steps = (
        int(sum(agent_steps.values())) if isinstance(agent_steps, dict) else int(agent_steps)
    )
    prev_env = previous["env_steps"] if previous else 0
    prev_agent = previous["agent_steps"] if previous else 0
    prev_time = previous["time_s"] if previous else 0.0

    def num(x: Any) -> float | None:
        return None if x is None else float(x)

    return {
        "iteration": int(result["training_iteration"]),
        "env_steps": env_steps,
        "agent_steps": agent_steps,
        "episodes": int(er.get("num_episodes_lifetime", 0)),
        "time_s": round(prev_time + iteration_time, 3),
        "iteration_time_s": round(iteration_time, 3),
        "predator_return": num(returns.get("predator")),
        "prey_return": num(returns.get("prey")),
        "capture_rate": num(er.get("capture_rate")),
        "first_capture_step": num(er.get("first_capture_step")),
        "episode_length": num(er.get("episode_len_mean")),
        "env_steps_per_s": round((env_steps - prev_env) / iteration_time, 1),
        "agent_steps_per_s": round((agent_steps - prev_agent) / iteration_time, 1),
    }


def format_row(row: dict[str, Any], stop_iterations: int | None) -> str:
    def f(x: Any, spec: str = ".2f") -> str:
        return "—" if x is None else format(x, spec)

    total = f"/{stop_iterations}" if stop_iterations else ""
    return (
        f"iter {row['iteration']}{total} | env steps {row['env_steps']:,} | return "
        f"predator {f(row['predator_return'])} prey {f(row['prey_return'])} | capture rate "
        f"{f(row['capture_rate'])} | {row['env_steps_per_s']:,.0f} env-steps/s "
        f"({row['agent_steps_per_s']:,.0f} agent-steps/s)"
    )


def should_stop(exp: Experiment, row: dict[str, Any]) -> bool:
    s = exp.stop
    return any(
        [
            s.iterations is not None and row["iteration"] >= s.iterations,
            s.env_steps is not None and row["env_steps"] >= s.env_steps,
            s.episodes is not None and row["episodes"] >= s.episodes,
            s.time_s is not None and row["time_s"] >= s.time_s,
        ]
    )


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to ``address``/``RAY_ADDRESS`` or start a local Ray; True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)
    return True


def _node_id(_env_runner: Any) -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def env_runner_nodes(algo: Any) -> list[str]:
    """Ray node IDs of the algorithm's remote EnvRunners, in runner order (empty with none).

    Node IDs, not IPs: several nodes on one machine share an IP.
    """
    group = getattr(algo, "env_runner_group", None)
    if group is None or group.num_remote_env_runners() == 0:
        return []
    return list(group.foreach_env_runner(_node_id, local_env_runner=False))


def export_modules(checkpoint: Path, target: Path, metadata: dict[str, Any]) -> Path:
    """Copy each species' module out of an RLlib checkpoint, with a ``bioflux.json``."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for species in SPECIES:
        src = checkpoint / MODULES_SUBDIR / species
        if src.is_dir():
            shutil.copytree(src, tmp / species)
            meta = {**metadata, "species": species, "source_checkpoint": str(checkpoint)}
            (tmp / species / "bioflux.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def rolling_mean(values: list[float | None], window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values, skipping missing ones (None/NaN)."""
    a = np.array([np.nan if v is None else v for v in values], dtype=float)
    valid = ~np.isnan(a)
    sums = np.concatenate([[0.0], np.cumsum(np.where(valid, a, 0.0))])
    counts = np.concatenate([[0], np.cumsum(valid)])
    end = np.arange(1, len(a) + 1)
    start = np.maximum(0, end - window)
    n = counts[end] - counts[start]
    return np.where(n > 0, (sums[end] - sums[start]) / np.maximum(n, 1), np.nan)


def plot_learning_curves(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Return per species and capture rate per iteration, with a rolling mean over ~5% of
    the run when there are enough iterations to need one (one iteration is few episodes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["env_steps"] for r in rows]
    window = max(1, len(rows) // 20)
    smooth = window > 1

    def draw(ax, ys: list[float | None], colour: str, label: str | None = None) -> None:
        raw = [np.nan if y is None else y for y in ys]
        ax.plot(
            steps,
            raw,
            color=colour,
            alpha=0.3 if smooth else 1.0,
            lw=1,
            label=None if smooth else label,
        )
        if smooth:
            ax.plot(steps, rolling_mean(ys, window), color=colour, lw=2, label=label)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for species, colour in (("predator", "#d22"), ("prey", "#2a4")):
        draw(ax1, [r[f"{species}_return"] for r in rows], colour, species)
    ax1.set_xlabel("env steps")
    ax1.set_ylabel("episode return (sum over the species' agents)")
    ax1.legend()
    draw(ax2, [r["capture_rate"] for r in rows], "#333")
    ax2.set_xlabel("env steps")
    ax2.set_ylabel("capture rate")
    ax2.set_ylim(0, 1)
    if smooth:
        fig.text(
            0.99,
            0.01,
            f"bold: rolling mean of {window} iterations",
            ha="right",
            fontsize=8,
            color="#555",
        )
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def train(
    exp: Experiment,
    output: str | Path = "runs",
    models: str | Path = "models",
    resume: bool = False,
    address: str | None = None,
    num_env_runners: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``exp`` to its stop criteria; returns the summary (also written to summary.json)."""
    from bioflux.algorithms import get_algorithm

    exp.env_config.require_agent_identity("training")  # before Ray starts
    plugin = get_algorithm(exp.algorithm)
    if hasattr(plugin, "train"):  # plug-ins that are not an RLlib Algorithm (coefficient search)
        return plugin.train(
            exp, output=output, models=models, resume=resume, address=address, log=log
        )
    if num_env_runners is not None:
        exp.resources.num_env_runners = num_env_runners
    run = RunFolder(Path(output) / exp.name)
    latest = run.latest()
    if latest is not None and not resume:
        raise ValueError(
            f"run folder {run.root} already has checkpoints; pass --resume to continue it or "
            f"choose another --output / name"
        )
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    run.config.write_text(yaml.safe_dump(exp.to_dict(), sort_keys=False))

    started_ray = init_ray(address)
    import ray

    algo = get_algorithm(exp.algorithm).build_config(exp).build_algo()
    try:
        runner_nodes = env_runner_nodes(algo)
        rows: list[dict[str, Any]] = []
        if resume and latest is not None:
            algo.restore_from_path(str(latest.resolve()))
            rows = [r for r in run.read_metrics() if r["iteration"] <= algo.iteration]
            log(f"resumed {run.root} from {latest.name} at iteration {algo.iteration}")
        elif resume:
            log(f"nothing to resume in {run.root}: starting a new run")
        run.write_metrics(rows)
        writer = _tensorboard(run.root / "tb")
        score_key = exp.checkpoint.score
        best = max(
            (r[score_key] for r in rows if r.get(score_key) is not None), default=float("-inf")
        )
        best_iteration = next((r["iteration"] for r in rows if r.get(score_key) == best), None)
        if (run.checkpoints / "final").exists():  # resuming a finished run: nothing to train
            pass
        else:
            while not rows or not should_stop(exp, rows[-1]):
                t0 = time.perf_counter()
                result = algo.train()
                row = iteration_row(result, rows[-1] if rows else None, time.perf_counter() - t0)
                rows.append(row)
                run.append_metrics(row)
                log(format_row(row, exp.stop.iterations))
                if writer is not None:
                    for k, v in row.items():
                        if isinstance(v, (int, float)) and k != "iteration":
                            writer.add_scalar(k, v, row["env_steps"])
                if row.get(score_key) is not None and row[score_key] > best:
                    best, best_iteration = row[score_key], row["iteration"]
                    save_checkpoint(algo, run.checkpoints / "best")
                if row["iteration"] % exp.checkpoint.frequency == 0:
                    save_checkpoint(algo, run.checkpoints / f"iter_{row['iteration']:06d}")
                    for old in run.periodic()[: -exp.checkpoint.keep]:
                        shutil.rmtree(old, ignore_errors=True)
            save_checkpoint(algo, run.checkpoints / "final")
        if writer is not None:
            writer.close()
    finally:
        algo.stop()
        if started_ray:
            ray.shutdown()

    meta = {
        "algorithm": exp.algorithm,
        "run": exp.name,
        "env": exp.env_config.to_dict(),
        "observation": "flattened (row, col, channel) window, see predator_prey_v0",
        "iteration": rows[-1]["iteration"] if rows else None,
    }
    export_root = Path(models) / exp.algorithm / exp.name
    exports = {
        "final": str(
            export_modules(
                run.checkpoints / "final", export_root / "final", {**meta, "kind": "final"}
            )
        )
    }
    if (run.checkpoints / "best").is_dir():
        exports["best"] = str(
            export_modules(
                run.checkpoints / "best",
                export_root / "best",
                {**meta, "kind": "best", "iteration": best_iteration},
            )
        )
    if rows:
        plot_learning_curves(rows, run.curves, f"{exp.name} ({exp.algorithm})")
    summary = {
        "name": exp.name,
        "algorithm": exp.algorithm,
        "iterations": rows[-1]["iteration"] if rows else 0,
        "env_steps": rows[-1]["env_steps"] if rows else 0,
        "time_s": rows[-1]["time_s"] if rows else 0.0,
        "last": rows[-1] if rows else None,
        "best": {"score": score_key, "value": best if rows else None, "iteration": best_iteration},
        "run_dir": str(run.root),
        "env_runner_nodes": runner_nodes,
        "checkpoints": {
            "final": str(run.checkpoints / "final"),
            "best": str(run.checkpoints / "best"),
        },
        "models": exports,
        "learning_curves": str(run.curves),
        "metrics": str(run.metrics),
    }
    run.summary.write_text(json.dumps(summary, indent=2))
    return summary


def _tensorboard(path: Path):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:  # optional: metrics.jsonl has the same numbers
        return None
    return SummaryWriter(str(path))
