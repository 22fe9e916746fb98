"""Run artifacts on disk: the one place that knows BioFlux's layout of run folders and models.

Run folder (``<output>/<name>/``, :class:`RunFolder`)::

    config.yaml            the resolved experiment (after --set overrides)
    metrics.jsonl          one JSON object per iteration
    summary.json           final figures, best iteration, checkpoint and export paths
    learning_curves.png    return per species and capture rate against env steps
    tb/                    TensorBoard logs (same scalars as metrics.jsonl)
    checkpoints/iter_NNNNNN/  the last ``checkpoint.keep`` periodic RLlib checkpoints
    checkpoints/best/      the checkpoint with the best ``checkpoint.score``
    checkpoints/final/     the checkpoint at the end

Checkpoints are written to a temporary folder and renamed (:func:`save_checkpoint`), so a
killed run never leaves a half-written one.

Study folder (``<output>/<study>/``, :class:`StudyFolder`): ``study.yaml`` (the resolved
study), ``runs/`` and ``models/`` (each trial's run folder and exports, as above),
``trials/<approach>_s<seed>.json`` (a finished trial's summary: what ``--resume`` skips),
``logs/<approach>_s<seed>.log`` (each trial's training lines), ``tune/`` (Ray Tune's own
state), and the report: ``study.json``, ``study.md``, ``*.png``.

Exported models (``<models>/<algorithm>/<run>/<kind>/<species>/``, ``kind`` in
:data:`EXPORT_KINDS`): one RLlib module folder per species with a ``bioflux.json``
(:data:`METADATA_FILE`) that describes it, including the env it was trained on. Training and
the Lotka–Volterra fit write them (:func:`export_modules`, :func:`export_rl_modules`);
evaluation (:func:`find_module_dir`) and the serve registry (:func:`exported_modules`) read
them. Nothing here imports Ray at module level.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bioflux.envs.config import SPECIES

#: RLlib checkpoint sub-folder that holds one folder per module.
MODULES_SUBDIR = Path("learner_group", "learner", "rl_module")
#: The metadata file next to every exported module.
METADATA_FILE = "bioflux.json"
#: Exports per run: the module at the end of training and the best-scoring one.
EXPORT_KINDS: tuple[str, str] = ("final", "best")


# ---------------------------------------------------------------------------- run folders
class RunFolder:
    """Paths and file I/O of one run folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.metrics = self.root / "metrics.jsonl"
        self.summary = self.root / "summary.json"
        self.curves = self.root / "learning_curves.png"
        self.config = self.root / "config.yaml"
        self.tensorboard = self.root / "tb"

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

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.summary.write_text(json.dumps(summary, indent=2))


class StudyFolder:
    """Paths of one study folder (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.config = self.root / "study.yaml"
        self.runs = self.root / "runs"
        self.models = self.root / "models"
        self.trials = self.root / "trials"
        self.tune = self.root / "tune"
        self.logs = self.root / "logs"
        self.report_json = self.root / "study.json"
        self.report_md = self.root / "study.md"
        self.heatmap = self.root / "crossplay_capture_rate.png"
        self.curves = self.root / "learning_curves.png"

    def trial_log(self, label: str, seed: int) -> Path:
        return self.logs / f"{label}_s{seed}.log"

    def trial_result(self, label: str, seed: int) -> Path:
        return self.trials / f"{label}_s{seed}.json"

    def finished(self, label: str, seed: int) -> dict[str, Any] | None:
        """A finished trial's summary, or None."""
        path = self.trial_result(label, seed)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:  # cut short by a kill: not finished
            return None

    def write_trial_result(self, label: str, seed: int, result: dict[str, Any]) -> None:
        self.trials.mkdir(parents=True, exist_ok=True)
        tmp = self.trial_result(label, seed).with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(self.trial_result(label, seed))


def _swap_in(tmp: Path, target: Path) -> Path:
    """Replace ``target`` by the finished folder ``tmp`` (never leaves neither)."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def _fresh_tmp(target: Path) -> Path:
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def save_checkpoint(algo: Any, target: Path) -> Path:
    """Save an RLlib algorithm atomically: write to ``<target>.tmp``, then swap it in."""
    tmp = _fresh_tmp(target)
    algo.save_to_path(str(tmp.resolve()))
    return _swap_in(tmp, target)


# ---------------------------------------------------------------------------- exported models
def export_root(models: str | Path, algorithm: str, run: str) -> Path:
    """``<models>/<algorithm>/<run>``: the folder holding a run's ``final``/``best`` exports."""
    return Path(models) / algorithm / run


def _write_metadata(folder: Path, metadata: Mapping[str, Any]) -> None:
    (folder / METADATA_FILE).write_text(json.dumps(dict(metadata), indent=2))


def export_modules(
    checkpoint: Path,
    target: Path,
    metadata: Mapping[str, Any],
    species: Iterable[str] = SPECIES,
) -> Path:
    """Copy each of ``species``' modules out of an RLlib checkpoint into ``target/<species>/``,
    each with a ``bioflux.json`` (``metadata`` plus ``species`` and ``source_checkpoint``)."""
    tmp = _fresh_tmp(target)
    tmp.mkdir(parents=True)  # an export of no module is an empty folder, not a missing one
    for name in species:
        src = checkpoint / MODULES_SUBDIR / name
        if src.is_dir():
            shutil.copytree(src, tmp / name)
            meta = {**metadata, "species": name, "source_checkpoint": str(checkpoint)}
            _write_metadata(tmp / name, meta)
    return _swap_in(tmp, target)


def export_rl_modules(
    target: Path, modules: Mapping[str, Any], metadata: Mapping[str, Mapping[str, Any]]
) -> Path:
    """Save standalone RLModules (species → module) into ``target/<species>/`` with their
    ``bioflux.json`` (``metadata[species]``, ``species`` added)."""
    tmp = _fresh_tmp(target)
    for species, module in modules.items():
        folder = tmp / species
        module.save_to_path(str(folder.resolve()))
        _write_metadata(folder, {**metadata[species], "species": species})
    return _swap_in(tmp, target)


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """The ``bioflux.json`` of a module folder; ``{}`` when there is none.

    Raises ``ValueError`` when the file exists but is not a JSON object."""
    meta = Path(folder) / METADATA_FILE
    if not meta.is_file():
        return {}
    try:
        data = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{meta} is not readable JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{meta} does not hold a JSON object")
    return data


def module_mtime(folder: Path) -> float:
    """The newest modification time of the files in a module folder (0.0 if unreadable): a
    cheap signature that changes when a checkpoint is rewritten or repaired."""
    newest = 0.0
    try:
        for path in Path(folder).rglob("*"):
            newest = max(newest, path.lstat().st_mtime)
    except OSError:
        return 0.0
    return newest


def is_module_dir(folder: Path) -> bool:
    return (folder / "module_state.pkl").exists() and (folder / "class_and_ctor_args.pkl").is_file()


def module_dir_candidates(path: Path, species: str) -> list[Path]:
    """Where ``species``' module may sit under ``path``, in the order they are tried."""
    return [
        path / species,  # exported model folder (<models>/<algorithm>/<run>/<kind>)
        path / "final" / species,  # <models>/<algorithm>/<run>
        path / MODULES_SUBDIR / species,  # RLlib checkpoint
        path / "checkpoints" / "final" / MODULES_SUBDIR / species,  # run folder
        path,  # the module folder itself
    ]


def find_module_dir(path: str | Path, species: str) -> Path | None:
    """``species``' module folder inside any accepted layout under ``path``, or None."""
    if species not in SPECIES:
        raise ValueError(f"species={species!r} is unknown; allowed: {SPECIES}")
    return next((c for c in module_dir_candidates(Path(path), species) if is_module_dir(c)), None)


@dataclass(frozen=True)
class ExportedModule:
    """One ``<models>/<algorithm>/<run>/<kind>/<species>/`` folder found by a scan."""

    algorithm: str
    run: str
    kind: str
    species: str
    folder: Path  # as found under the models directory (not resolved)

    @property
    def metadata_file(self) -> Path:
        return self.folder / METADATA_FILE


def exported_modules(models: str | Path) -> Iterator[ExportedModule]:
    """Every exported module folder under ``models`` (those with a ``bioflux.json``)."""
    root = Path(models)
    if not root.is_dir():
        return
    for meta_file in sorted(root.glob(f"*/*/*/*/{METADATA_FILE}")):
        algorithm, run, kind, species = meta_file.parent.relative_to(root).parts
        if species in SPECIES and kind in EXPORT_KINDS:
            yield ExportedModule(algorithm, run, kind, species, meta_file.parent)


# ---------------------------------------------------------------------------- Ray
#: Ray log lines that every normal run prints and that need no action: (logger, text).
BENIGN_RAY_LOGS = (
    # Ray 2.60's RLModule.__init__ itself builds the deprecated RLModuleConfig, so every module
    # (ours included, built with observation_space/action_space/model_config) triggers it once
    ("ray._common.deprecation", "RLModule(config=[RLModuleConfig object])"),
    # a notice that RLlib's default (the new API stack) is in use
    ("ray.rllib.algorithms.algorithm_config", "on the new API stack! This is the new default"),
    ("ray.tune.utils.util", "Install gputil for GPU system monitoring"),
    # the local Ray that BioFlux starts has token authentication on (the safe default); a
    # cluster *without* it is still reported
    ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled"),
    # every command that starts Ray said so; BioFlux prints its own progress instead
    ("ray._private.worker", "Started a local Ray instance"),
    # Tune's advice to reuse actors: trials here are one-off trainings, there is nothing to reuse
    ("ray.tune.trainable.trainable", "consider setting reuse_actors=True"),
    # Tune's bookkeeping after every search; the run folder already says where results are
    ("ray.tune.tune", "Wrote the latest version of all result files"),
    # Ray Serve's start-up notices (`bioflux serve` prints the one address it listens on;
    # "ready at" names Serve's internal router port, which the user never chose)
    ("ray.serve", "Throughput optimized Ray Serve enabled"),
    ("ray.serve", "Started Serve in namespace"),
    ("ray.serve", "Connecting to existing Serve app in namespace"),
    ("ray.serve", "is ready at http"),
)


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_benign_ray_logs() -> None:
    """Drop ``BENIGN_RAY_LOGS`` from this process's logging (also run in every Ray worker
    that ``init_ray`` starts, as its setup hook), and Ray Tune's console reporter: Tune 2.60's
    new output prints a "Configuration for experiment" box and a ``tensorboard --logdir`` hint
    whatever ``verbose`` says; its legacy output honours ``verbose=0``, which BioFlux's
    searches and studies use (they print their own progress lines). A value you set is kept."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name, text in BENIGN_RAY_LOGS:
        logger = logging.getLogger(name)
        if not any(getattr(f, "text", None) == text for f in logger.filters):
            logger.addFilter(_DropMessage(text))


#: ``PYTHONHASHSEED`` of every process that trains: RLlib iterates sets of agent IDs (e.g. the
#: agents to act), whose order follows the string-hash seed; fixed, a seed gives the same run.
TRAINING_HASH_SEED = "0"


def init_ray(
    address: str | None = None, num_cpus: int | None = None, log_to_driver: bool = True
) -> bool:
    """Connect to ``address``/``RAY_ADDRESS`` or start a local Ray; True if we started it.

    ``log_to_driver=False`` keeps the workers' stdout/stderr out of this process's output
    (they stay in Ray's session logs), for callers that log to files of their own."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    quiet_benign_ray_logs()
    workers = {
        "worker_process_setup_hook": "bioflux.artifacts.quiet_benign_ray_logs",
        "env_vars": {"PYTHONHASHSEED": TRAINING_HASH_SEED},
    }
    if address:
        ray.init(address=address, log_to_driver=log_to_driver, runtime_env=workers)
    else:
        ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            log_to_driver=log_to_driver,
            runtime_env=workers,
        )
    return True


# ---------------------------------------------------------------------------- plots
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
    """Return per species and capture rate per iteration against agent steps (env steps for
    rows without them), with a rolling mean over ~5% of the run when there are enough
    iterations to need one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key = "agent_steps" if all(r.get("agent_steps") for r in rows) else "env_steps"
    steps = [r[x_key] for r in rows]
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

    from matplotlib.ticker import EngFormatter, MaxNLocator

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax in (ax1, ax2):  # few, short step labels (12k, 1.5M) that never run together
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    for species, colour in zip(SPECIES, ("#d22", "#2a4")):
        draw(ax1, [r.get(f"{species}_return") for r in rows], colour, species)
    ax1.set_xlabel(x_key.replace("_", " "))
    ax1.set_ylabel("episode return (sum over the species' agents)")
    ax1.legend()
    draw(ax2, [r.get("capture_rate") for r in rows], "#333")
    ax2.set_xlabel(x_key.replace("_", " "))
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
