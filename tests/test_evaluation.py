"""Evaluation on the batched core with built-in policies (no Ray needed)."""

import json

import numpy as np
import pytest

from bioflux import evaluation
from bioflux.envs import EnvConfig
from bioflux.policies import RandomPolicy, load_policy

ENV = EnvConfig(height=12, width=12, n_predators=2, n_prey=5, max_steps=30, obs_radius=2)


class ChasePolicy:
    """Steps toward the nearest prey in view (a scripted baseline for the tests)."""

    name = "chase"

    def probabilities(self, obs):
        prey = obs[..., 2]
        s = obs.shape[1] // 2
        rows, cols = np.nonzero(np.ones(prey.shape[1:]))
        out = np.zeros((len(obs), 5))
        for i, window in enumerate(prey):
            seen = window.ravel() > 0
            if not seen.any():
                out[i] = 0.2
                continue
            d = np.abs(rows - s) + np.abs(cols - s)
            k = np.argmin(np.where(seen, d, 999))
            dr, dc = rows[k] - s, cols[k] - s
            action = (2 if dr > 0 else 1) if abs(dr) >= abs(dc) and dr else (4 if dc > 0 else 3)
            out[i, action if (dr or dc) else 0] = 1.0
        return out


def test_deterministic_per_seed():
    a = evaluation.run_episodes(RandomPolicy(), RandomPolicy(), ENV, 12, seed=3)
    b = evaluation.run_episodes(RandomPolicy(), RandomPolicy(), ENV, 12, seed=3)
    c = evaluation.run_episodes(RandomPolicy(), RandomPolicy(), ENV, 12, seed=4)
    assert a == b and a != c
    assert len(a) == 12 and all(r.length <= 30 for r in a)


def test_metrics_are_consistent():
    m = evaluation.summarize(evaluation.run_episodes(RandomPolicy(), RandomPolicy(), ENV, 20))
    assert 0.0 <= m["predator"]["capture_rate"] <= 1.0
    assert m["prey"]["success_rate"] == pytest.approx(1.0 - m["predator"]["capture_rate"])
    assert m["predator"]["success_rate"] == m["predator"]["capture_rate"]
    assert 1 <= m["prey"]["episode_length_mean"] <= 30


def test_a_chasing_predator_beats_a_random_one():
    rnd = evaluation.summarize(evaluation.run_episodes(RandomPolicy(), RandomPolicy(), ENV, 40))
    chase = evaluation.summarize(evaluation.run_episodes(ChasePolicy(), RandomPolicy(), ENV, 40))
    assert chase["predator"]["capture_rate"] > rnd["predator"]["capture_rate"] + 0.1
    assert chase["predator"]["first_capture_step_mean"] < rnd["predator"]["first_capture_step_mean"]


def test_report_files(tmp_path):
    result = evaluation.evaluate("random", "random", ENV, episodes=6, seed=0)
    files = evaluation.write_report([result], tmp_path)
    assert json.loads((tmp_path / "evaluation.json").read_text())[0]["metrics"]["prey"]
    table = (tmp_path / "evaluation.md").read_text()
    assert "| predator |" in table and "| prey |" in table
    assert (tmp_path / "evaluation.png").stat().st_size > 1000
    assert set(files) == {"json", "md", "png"}


def test_record_episode_gif(tmp_path):
    out = evaluation.record_episode(RandomPolicy(), RandomPolicy(), ENV, tmp_path / "ep.gif")
    from PIL import Image

    assert Image.open(out["path"]).n_frames == out["steps"] + 1


def test_unknown_policy_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="neither a built-in"):
        load_policy("no_such_policy", "predator")
    with pytest.raises(ValueError, match="no predator module"):
        load_policy(tmp_path, "predator")
    with pytest.raises(ValueError, match="species"):
        load_policy(tmp_path, "wolf")


def test_return_spread_is_reported_over_episodes_and_over_agents():
    from bioflux.rollout import EpisodeRecord

    records = [
        EpisodeRecord(10, 1, 2, 3, (1.0, 0.0), (0.0, -1.0)),
        EpisodeRecord(10, 0, 2, None, (0.0, 0.0), (1.0, 1.0)),
    ]
    m = evaluation.summarize(records)
    # predator episode means 0.5 and 0.0; agents 1, 0, 0, 0
    assert m["predator"]["return_mean"] == pytest.approx(0.25)
    assert m["predator"]["return_std_episodes"] == pytest.approx(0.25)
    assert m["predator"]["return_std_agents"] == pytest.approx(np.std([1, 0, 0, 0]))
    # prey episode means -0.5 and 1.0; agents 0, -1, 1, 1
    assert m["prey"]["return_std_episodes"] == pytest.approx(0.75)
    assert m["prey"]["return_std_agents"] == pytest.approx(np.std([0, -1, 1, 1]))
    assert m["predator"]["capture_rate"] == pytest.approx(0.25)


def test_means_come_with_bootstrap_intervals_over_episodes():
    """95% intervals hold their mean, narrow with more episodes, and reach the table."""
    few = evaluation.summarize(evaluation.run_episodes(ChasePolicy(), RandomPolicy(), ENV, 10))
    many = evaluation.summarize(evaluation.run_episodes(ChasePolicy(), RandomPolicy(), ENV, 80))
    for metrics in (few, many):
        for m in metrics.values():
            for mean, (lo, hi) in (
                (m["return_mean"], m["return_ci95"]),
                (m["success_rate"], m["success_rate_ci95"]),
            ):
                assert lo < hi and lo <= mean <= hi

    def width(m, key):
        lo, hi = m["predator"][key]
        return hi - lo

    assert width(many, "success_rate_ci95") < width(few, "success_rate_ci95")
    assert width(many, "return_ci95") < width(few, "return_ci95")
    result = {"predator_policy": "chase", "prey_policy": "random", "episodes": 80, "seed": 0}
    table = evaluation.markdown_table({**result, "metrics": many})
    lo, hi = many["predator"]["success_rate_ci95"]
    assert f"[{lo:.3f}, {hi:.3f}]" in table
    json.dumps(many)  # the JSON report holds them


def test_evaluate_says_where_it_writes_and_never_overwrites_by_default(tmp_path, monkeypatch):
    from bioflux.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["evaluate", "--predator", "random", "--prey", "random", "--episodes", "2"]
    for _ in range(2):
        assert main(argv) == 0
    for n, folder in ((1, "outputs/evaluation"), (2, "outputs/evaluation_2")):
        assert (tmp_path / folder / "evaluation.json").is_file(), n
    notes = [evaluation.report_folder(None)[1], evaluation.report_folder("mine")[1]]
    assert notes[0].startswith("writing the report to outputs/evaluation_3/")
    assert "outputs/evaluation/ holds an earlier one" in notes[0]
    assert notes[1] == "writing the report to mine/"
    assert main([*argv, "--out", "outputs/evaluation"]) == 0  # explicit: replaced, and said so
    assert "replacing" in evaluation.report_folder("outputs/evaluation")[1]


def test_the_episode_gif_has_a_caption_a_legend_and_capture_rings(tmp_path):
    from PIL import Image

    from bioflux.envs.rendering import CAPTURE_COLOUR, annotate

    out = evaluation.record_episode(
        load_policy("lotka_volterra", "predator"), RandomPolicy(), ENV, tmp_path / "ep.gif", seed=3
    )
    gif = Image.open(out["path"])
    assert min(gif.size) >= 384 // max(ENV.height, ENV.width) * min(ENV.height, ENV.width)
    band = annotate(np.zeros((8, 8, 3), np.uint8), ["a", "b"]).shape[0] - 8  # caption + legend
    rings = 0
    for k in range(gif.n_frames):
        gif.seek(k)
        grid = np.asarray(gif.convert("RGB"))[band:]
        rings += bool((grid == CAPTURE_COLOUR).all(-1).any())
    assert out["captures"] >= 1 and rings >= 1  # seed 3 captures; each capture is ringed
    assert gif.n_frames == out["steps"] + 1
