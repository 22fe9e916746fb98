"""`bioflux study`: a tiny study end to end on real Ray Tune, resume, statistics, config rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from bioflux.config import ConfigError
from bioflux.study import load_study, run_study
from bioflux.study.report import Stat, bootstrap_ci
from tests.conftest import TINY

TINY_STUDY = {
    "name": "tiny_study",
    "env": TINY["env"],
    "budget": {"iterations": 1},
    "seeds": [0, 1],
    "approaches": {
        "ppo": {
            "config": "demo",
            "set": [
                "training.train_batch_size=200",
                "training.minibatch_size=100",
                "training.num_epochs=1",
                "training.hidden=[16]",
            ],
        },
        "lotka_volterra": {"config": "lotka_volterra", "set": ["training.episodes=2"]},
    },
    "baselines": ["random"],
    "evaluation": {"episodes": 6, "seed": 4242},
}


@pytest.fixture
def study_file(tmp_path):
    path = tmp_path / "tiny_study.yaml"
    path.write_text(yaml.safe_dump(TINY_STUDY, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    path = root / "tiny_study.yaml"
    path.write_text(yaml.safe_dump(TINY_STUDY, sort_keys=False))
    lines: list[str] = []
    doc = run_study(load_study(path), output=root / "out", progress=False, log=lines.append)
    return root, path, doc, lines


def test_a_tiny_study_runs_end_to_end(finished):
    root, _, doc, lines = finished
    folder = root / "out" / "tiny_study"
    assert len(doc["trials"]) == 4
    assert any("4/4 trials done" in line for line in lines)  # one progress view
    for name in ("study.md", "study.json", "learning_curves.png", "crossplay_capture_rate.png"):
        assert (folder / name).stat().st_size > 500, name
    # cross-play: (2 approaches x 2 seeds + random) squared pairings
    assert len(doc["episodes"]) == 25
    assert doc["crossplay"]["approaches"] == ["ppo", "lotka_volterra", "random"]


def test_the_report_carries_every_approach_species_and_statistic(finished):
    _, _, doc, _ = finished
    md = (finished[0] / "out" / "tiny_study" / "study.md").read_text()
    for approach in ("ppo", "lotka_volterra", "random"):
        for species in ("predator", "prey"):
            for metric in ("return", "success rate", "episode length"):
                stat = doc["evaluation"][approach][species][metric]
                assert set(stat) >= {"mean", "std_across_seeds", "std_across_episodes", "ci95"}
                assert stat["ci95"][0] <= stat["mean"] <= stat["ci95"][1]
            assert f"| `{approach}` | {species} |" in md
    assert doc["evaluation"]["ppo"]["predator"]["return"]["seeds"] == 2
    assert doc["evaluation"]["random"]["prey"]["return"]["std_across_seeds"] is None
    assert "sd seeds" in md and "95% CI" in md and "## Verdict" in md
    assert set(doc["ranking"]["predator"]) == {"ppo", "lotka_volterra", "random"}


def test_resume_skips_finished_trials(finished):
    root, path, _, _ = finished
    folder = root / "out" / "tiny_study"
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "trials").iterdir()}
    tune_runs = set((folder / "tune").iterdir())
    lines: list[str] = []
    run_study(load_study(path), output=root / "out", resume=True, progress=False, log=lines.append)
    assert "skipping 4 finished trial(s)" in lines
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "trials").iterdir()} == before
    assert set((folder / "tune").iterdir()) == tune_runs  # Tune was not run again
    with pytest.raises(ValueError, match="--resume"):
        run_study(load_study(path), output=root / "out", progress=False)


def test_stat_definitions_on_a_hand_built_case():
    seeds = [np.array([1.0, 3.0]), np.array([5.0, 7.0, 9.0])]
    s = Stat.of(seeds)
    assert s.mean == pytest.approx((2.0 + 7.0) / 2)  # mean of per-seed means
    assert s.std_seeds == pytest.approx(np.std([2.0, 7.0], ddof=1))
    assert s.std_episodes == pytest.approx(np.std([1, 3, 5, 7, 9]))
    lo, hi = bootstrap_ci(seeds)
    assert 1.0 <= lo < s.mean < hi <= 9.0
    same = [np.full(10, 0.5), np.full(10, 0.5)]
    assert bootstrap_ci(same) == pytest.approx((0.5, 0.5))


def test_the_evaluation_seed_may_not_pick_models(study_file):
    with pytest.raises(ConfigError, match="evaluation.seed"):
        load_study(study_file, ["evaluation.seed=1"])  # 1 is a training seed
    with pytest.raises(ConfigError, match="evaluation.seed"):
        load_study(
            study_file,
            ["evaluation.seed=77", "approaches.lotka_volterra.set=[training.selection_seed=77]"],
        )


def test_the_budget_is_one_shared_quantity(study_file):
    with pytest.raises(ConfigError, match="exactly one"):
        load_study(study_file, ["budget.env_steps=1000"])
    study = load_study(study_file, ["budget.iterations=null", "budget.env_steps=1000"])
    assert {study.experiment(a, s).stop.env_steps for a, s in study.trials()} == {1000}


def test_study_json_is_plain_json(finished):
    root = finished[0]
    doc = json.loads((root / "out" / "tiny_study" / "study.json").read_text())
    assert doc["study"]["name"] == "tiny_study"
