"""The comparative study: every approach trained on one world, compared with honest statistics.

Run: ``bioflux study --config configs/study_demo.yaml [--seeds K] [--set ...] [--output DIR]
[--resume]``. Steps (one module each):

1. ``config`` — the study file: world, approaches, one shared budget, seeds;
2. ``trials`` — every (approach, seed) trains as a Ray Tune trial, in parallel;
3. ``crossplay`` — every predator policy against every prey policy (baselines included) on a
   common evaluation seed; ensembles (``ensembles:``) are built here, per training seed, from
   the members' exports, so ``--resume`` may add or change them without retraining anything;
4. ``transfer`` — transfer approaches (``init_from``, curricula) against their from-scratch
   counterparts on the study world's learning curves: agent-steps to a threshold, mean over the
   run, the source's cost (section "Transfer");
5. ``realism`` — each approach's policies play the calibrated lynx–hare ecology world
   (``ecology_realism``, on by default; one ``simulate`` run per player);
6. ``report`` — ranking, evaluation tables (mean, std across seeds, std across episodes, 95%
   bootstrap CI), cross-play heatmap, learning curves, cost; ``study.md`` and ``study.json``.

Expected on ``configs/study_demo.yaml`` (2 cores, 2 seeds): about 4 minutes; the README shows
the report it wrote.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bioflux.artifacts import StudyFolder
from bioflux.study.config import StudyConfig, load_study
from bioflux.study.crossplay import cross_play, players
from bioflux.study.realism import ecology_realism
from bioflux.study.report import write_report
from bioflux.study.transfer import random_capture_rate, transfer_section
from bioflux.study.trials import run_trials


def _same_training(saved: dict[str, Any], study: StudyConfig) -> bool:
    """Whether a saved study config describes the same study as ``study``, ensembles,
    ecological realism and the transfer section's settings aside: none trains anything (they
    are evaluation), so a resumed study may add, drop or change them and is evaluated and
    reported again with the finished trials. The saved config is read with today's defaults
    (a field added since it was written takes its default)."""
    now = study.model_dump(mode="json")
    try:
        saved = StudyConfig(**saved).model_dump(mode="json")
    except ValueError:  # not a valid study today: compared as it is (and so differs)
        pass
    free = ("ensembles", "ecology_realism", "transfer")
    return {k: v for k, v in saved.items() if k not in free} == {
        k: v for k, v in now.items() if k not in free
    }


def run_study(
    study: StudyConfig,
    output: str | Path = "outputs/studies",
    resume: bool = False,
    address: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train, evaluate and report ``study`` in ``<output>/<study.name>/``; returns the report."""
    t0 = time.perf_counter()
    folder = StudyFolder(Path(output) / study.name)
    resolved = yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False)
    if folder.config.exists():
        if not resume:
            raise ValueError(
                f"study folder {folder.root} exists; pass --resume to continue it (finished "
                "trials are skipped) or choose another --output / name"
            )
        if not _same_training(yaml.safe_load(folder.config.read_text()) or {}, study):
            raise ValueError(
                f"--resume: the study config differs from the one in {folder.config}; "
                "a resumed study must be the same study (only 'ensembles' may change)"
            )
    folder.root.mkdir(parents=True, exist_ok=True)
    folder.config.write_text(resolved)
    trials, failed = run_trials(study, folder, resume=resume, address=address, log=log)
    if not trials:
        raise RuntimeError(
            f"every trial failed ({failed[0]['approach']} seed {failed[0]['seed']}: "
            f"{failed[0]['error']}); logs in {folder.logs}"
        )
    everyone = players(study, {(t["approach"], t["seed"]): t["model"] for t in trials})
    games = cross_play(study, everyone, progress=progress, log=log, address=address)
    realism = ecology_realism(study, everyone, log=log)
    transfer = transfer_section(study, trials, random_capture_rate(games))
    doc = write_report(
        study, folder, everyone, games, trials, time.perf_counter() - t0, failed, realism, transfer
    )
    log(f"report: {folder.report_md}")
    if failed:
        log(
            f"{len(failed)} trial(s) failed (listed in the report); the report covers the "
            "others; `bioflux study --resume` retries only the failed ones"
        )
    return doc


__all__ = ["StudyConfig", "load_study", "run_study"]
