"""Transfer approaches in a study: init_from another approach (same seed), a curriculum ending in
the study's world, the report's Transfer section, its curve metrics, the config rules."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from bioflux.config import ConfigError
from bioflux.study import load_study, run_study
from bioflux.study.transfer import (
    approach_curves,
    markdown,
    mean_over_run,
    source_cost,
    steps_to_threshold,
    target_curve,
    transfer_section,
)
from tests.conftest import TINY
from tests.study.test_study import TINY_STUDY

PPO = TINY_STUDY["approaches"]["ppo"]
#: a curriculum: one iteration on a smaller world, then the study's world for the budget
CURRICULUM = {
    **{k: v for k, v in TINY.items() if k not in ("name", "env", "stop")},
    "training": {
        "train_batch_size": 200,
        "minibatch_size": 100,
        "num_epochs": 1,
        "hidden": [16],
    },
    "stop": {"iterations": 1},
    "stages": [
        {"name": "small", "env": {"height": 8, "width": 8}, "stop": {"iterations": 1}},
        {"name": "target"},
    ],
}


def transfer_study(tmp_path: Path, curriculum: bool = True) -> dict:
    path = tmp_path / "curriculum.yaml"
    path.write_text(yaml.safe_dump(CURRICULUM, sort_keys=False))
    approaches = {
        "ppo": PPO,
        "ppo_ft": {**PPO, "init_from": "ppo"},  # same config and set: compared with ppo
    }
    if curriculum:
        approaches["ppo_cur"] = {"config": str(path), "compare_to": "ppo"}
    return {
        **{k: v for k, v in TINY_STUDY.items() if k not in ("ensembles", "approaches")},
        "name": "transfer_study",
        "budget": {"iterations": 2},
        "approaches": approaches,
        "ecology_realism": {"enabled": False},
    }


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer_study")
    path = write(root, transfer_study(root))
    lines: list[str] = []
    doc = run_study(load_study(path), output=root / "out", progress=False, log=lines.append)
    return root, path, doc, lines


def test_a_transfer_study_runs_sources_first_and_reports_the_transfer(finished):
    root, _, doc, lines = finished
    assert not doc["failed_trials"], doc["failed_trials"]
    assert len(doc["trials"]) == 6
    started = [line for line in lines if line.endswith("started")]
    first_ft = min(i for i, line in enumerate(started) if "ppo_ft" in line)
    assert all("ppo_ft" in line for line in started[first_ft:])  # the second wave
    section = doc["transfer"]
    assert [(p["approach"], p["compare_to"]) for p in section["pairs"]] == [
        ("ppo_ft", "ppo"),
        ("ppo_cur", "ppo"),
    ]
    assert section["threshold"] > 0 and "random-vs-random" in section["threshold_from"]
    by = {(t["approach"], t["seed"]): t for t in doc["trials"]}
    for pair in section["pairs"]:
        for name in (pair["approach"], "ppo"):
            c = pair["curves"][name]
            assert c["steps_to_threshold"]["of"] == 2
            assert 0 <= c["mean_capture_rate"]["mean"] <= 1
            lo, hi = c["mean_capture_rate"]["ci95"]
            assert lo <= c["mean_capture_rate"]["mean"] <= hi
            for s in c["per_seed"]:  # x: the trial's own agent-steps in the study's world
                rows = [
                    json.loads(line)
                    for line in Path(by[(name, s["seed"])]["metrics"]).read_text().splitlines()
                ]
                last = [r for r in rows if r.get("stage", 2) == rows[-1].get("stage", 2)]
                before = [r for r in rows if r not in last]
                offset = before[-1]["agent_steps"] if before else 0
                assert s["target_agent_steps"] == last[-1]["agent_steps"] - offset
    ft, cur = section["pairs"]
    # the source's cost: ppo's same-seed trial (agent-steps and wall time), mean over seeds
    assert ft["source_cost"]["agent_steps"] == pytest.approx(
        np.mean([by[("ppo", s)]["agent_steps"] for s in (0, 1)])
    )
    assert ft["source_cost"]["wall_s"] == pytest.approx(
        np.mean([by[("ppo", s)]["wall_s"] for s in (0, 1)]), abs=0.1
    )
    # a curriculum's earlier stage is its source: its agent-steps are the cost, not the x
    for s in cur["curves"]["ppo_cur"]["per_seed"]:
        total = by[("ppo_cur", s["seed"])]["agent_steps"]
        cost = next(c for c in cur["source_cost"]["per_seed"] if c["seed"] == s["seed"])
        assert cost["agent_steps"] > 0
        assert cost["agent_steps"] + s["target_agent_steps"] == total
    md = (root / "out" / "transfer_study" / "study.md").read_text()
    assert "## Transfer" in md
    assert "| `ppo_ft` | starts from `ppo` (same seed) |" in md
    assert "curriculum of 2 stages" in md and "| `ppo` | from scratch |" in md
    doc = json.loads((root / "out" / "transfer_study" / "study.json").read_text())
    assert doc["transfer"]
    # the figure's curves start at the target world: x from the first target iteration
    for s in cur["curves"]["ppo_cur"]["per_seed"]:
        assert s["curve"][-1][0] == s["target_agent_steps"] and s["curve"][0][0] > 0
    png = Path(doc["files"]["transfer_curves"])
    assert png.name == "transfer_curves.png" and png.stat().st_size > 10_000


def test_each_dependent_trial_starts_from_its_sources_same_seed_model(finished):
    root, _, doc, _ = finished
    by = {(t["approach"], t["seed"]): t for t in doc["trials"]}
    sources = set()
    for seed in (0, 1):
        source = by[("ppo", seed)]["model"]
        run = root / "out" / "transfer_study" / "runs" / f"transfer_study_ppo_ft_s{seed}"
        lineage = json.loads((run / "init_from.json").read_text())
        assert {line["path"] for line in lineage.values()} == {source}
        assert set(lineage) == {"predator", "prey"}
        summary = json.loads((run / "summary.json").read_text())
        assert summary["init_from"] == lineage
        assert by[("ppo_ft", seed)]["init_from"] == source
        sources.add(source)
    assert len(sources) == 2  # one per seed
    for label in ("ppo", "ppo_cur"):
        run = root / "out" / "transfer_study" / "runs" / f"transfer_study_{label}_s0"
        assert not (run / "init_from.json").exists(), label


def test_resume_runs_a_dependent_trial_from_its_finished_source(finished):
    """The dependent trial of seed 1 is lost (its record and run folder); --resume trains only
    it, from ppo's seed-1 model of the first run. (Runs after the tests that read the first
    run's folder as it was.)"""
    root, path, doc, _ = finished
    folder = root / "out" / "transfer_study"
    (folder / "trials" / "ppo_ft_s1.json").unlink()
    shutil.rmtree(folder / "runs" / "transfer_study_ppo_ft_s1")
    lines: list[str] = []
    again = run_study(
        load_study(path), output=root / "out", resume=True, progress=False, log=lines.append
    )
    assert "skipping 5 finished trial(s)" in lines
    assert not again["failed_trials"]
    source = next(t["model"] for t in doc["trials"] if t["approach"] == "ppo" and t["seed"] == 1)
    lineage = json.loads(
        (folder / "runs" / "transfer_study_ppo_ft_s1" / "init_from.json").read_text()
    )
    assert {line["path"] for line in lineage.values()} == {source}
    assert again["transfer"]["pairs"][0]["curves"]["ppo_ft"]["steps_to_threshold"]["of"] == 2


# ---------------------------------------------------------------------------- config rules
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["approaches.ppo_ft.init_from=ppo2"], r"init_from='ppo2' is neither an approach"),
        (["approaches.ppo_ft.init_from=ppo_ft"], "init_from names the approach itself"),
        (
            ["approaches.ppo.init_from=ppo_ft"],  # ppo -> ppo_ft -> ppo
            r"a cycle of approaches \(ppo -> ppo_ft -> ppo\)",
        ),
        (["approaches.ppo_ft.compare_to=nope"], r"compare_to='nope' is not an approach"),
        (["approaches.ppo_ft.compare_to=ppo_ft"], "compare_to names the approach itself"),
        (
            ["approaches.ppo_ft.set=['training.hidden=[16]']"],  # no longer ppo's config and set
            "no approach trains the same config and set from scratch; name one with compare_to",
        ),
        (
            ["approaches.ppo_ft.set=[training.init_from=/tmp]"],
            "init_from is given twice",
        ),
        (
            ["approaches.lv={config: lotka_volterra}", "approaches.ppo_ft.init_from=lv"],
            "trains no RLlib",
        ),
        (["baselines=[]"], "transfer.threshold: give one"),
    ],
)
def test_transfer_config_rules_are_one_line(tmp_path, overrides, message):
    path = write(tmp_path, transfer_study(tmp_path, curriculum=False))
    with pytest.raises(ConfigError, match=message) as err:
        load_study(path, overrides)
    assert "\n" not in str(err.value)


def test_a_curriculum_must_end_in_the_studys_world_for_its_budget(tmp_path):
    data = transfer_study(tmp_path)
    path = write(tmp_path, data)
    study = load_study(path)
    exp = study.experiment("ppo_cur", 0)
    assert exp.stages[-1].stop is None and exp.stop.iterations == 2  # the study's budget
    assert exp.stages[0].env == {"height": 8, "width": 8}
    cur = yaml.safe_load((tmp_path / "curriculum.yaml").read_text())
    bad = copy.deepcopy(cur)
    bad["stages"][-1]["env"] = {"n_prey": 3}
    (tmp_path / "curriculum.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"last stage \(target\) changes \[.*'n_prey'\]") as err:
        load_study(path)
    assert "\n" not in str(err.value)
    bad = copy.deepcopy(cur)
    bad["stages"][-1]["stop"] = {"iterations": 5}
    (tmp_path / "curriculum.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="has a stop of its own") as err:
        load_study(path)
    assert "\n" not in str(err.value)


def test_an_init_from_model_path_is_passed_to_training_and_waves_order_sources(tmp_path):
    from bioflux.study.plan import trials_makespan

    model = tmp_path / "some_model"
    model.mkdir()
    data = transfer_study(tmp_path, curriculum=False)
    data["approaches"]["ppo_path"] = {**PPO, "init_from": str(model)}
    data["approaches"]["ppo_ft2"] = {**PPO, "init_from": "ppo_ft", "compare_to": "ppo"}
    study = load_study(write(tmp_path, data))
    assert study.experiment("ppo_path", 1).training["init_from"] == str(model.resolve())
    assert "init_from" not in study.experiment("ppo_ft", 1).training  # its source: at run time
    assert study.experiment("ppo_ft", 1, "/m/ppo_s1").training["init_from"] == "/m/ppo_s1"
    assert study.waves() == [["ppo", "ppo_path"], ["ppo_ft"], ["ppo_ft2"]]
    # ppo_path's counterpart: the same config and set, from scratch
    assert dict(study.transfer_pairs()) == {"ppo_ft": "ppo", "ppo_path": "ppo", "ppo_ft2": "ppo"}
    # 2 seeds, 2 slots: wave 0 (4 trials of 10 s) 20 s, then 5 s and 7 s waves
    assert trials_makespan(study, {"ppo": 10, "ppo_path": 10, "ppo_ft": 5, "ppo_ft2": 7}, 2) == 32


# ---------------------------------------------------------------------------- curve metrics
def test_threshold_and_area_on_known_curves():
    curve = np.array([[100, 0.1], [200, 0.3], [300, 0.5], [400, 0.4]])
    assert steps_to_threshold(curve, 0.3) == 200  # the first point at or above it
    assert steps_to_threshold(curve, 0.45) == 300
    assert steps_to_threshold(curve, 0.6) is None  # never: censored
    # each value covers the 100 agent-steps before it: (0.1 + 0.3 + 0.5 + 0.4) / 4
    assert mean_over_run(curve) == pytest.approx(0.325)
    uneven = np.array([[100, 0.2], [400, 0.8]])  # 0.2 over 100 steps, 0.8 over 300
    assert mean_over_run(uneven) == pytest.approx((0.2 * 100 + 0.8 * 300) / 400)
    assert mean_over_run(np.zeros((0, 2))) is None


def test_a_curriculums_curve_is_its_last_stage_from_zero():
    rows = [
        {"stage": 1, "agent_steps": 500, "time_s": 4.0, "capture_rate": 0.9},
        {"stage": 1, "agent_steps": 1000, "time_s": 8.0, "capture_rate": 0.9},
        {"stage": 2, "agent_steps": 1100, "time_s": 9.0, "capture_rate": None},
        {"stage": 2, "agent_steps": 1200, "time_s": 10.0, "capture_rate": 0.2},
        {"stage": 2, "agent_steps": 1300, "time_s": 11.0, "capture_rate": 0.4},
    ]
    assert target_curve(rows).tolist() == [[200, 0.2], [300, 0.4]]
    plain = [{"agent_steps": 50, "capture_rate": 0.5}, {"agent_steps": 100, "capture_rate": 0.7}]
    assert target_curve(plain).tolist() == [[50, 0.5], [100, 0.7]]


def fake_trial(root: Path, label: str, seed: int, rows: list[dict], **extra) -> dict:
    run = root / f"{label}_s{seed}"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"approach": label, "seed": seed, "metrics": str(run / "metrics.jsonl"), **extra}


def test_censored_seeds_are_counted_not_averaged_and_the_source_cost_is_the_same_seeds(tmp_path):
    """3 seeds; the transfer approach reaches 0.5 in 2 of them (at 100 and 300 agent-steps),
    the scratch one in none. Each seed's source trial has its own cost."""

    def rows(values: list[float]) -> list[dict]:
        return [
            {"agent_steps": 100 * (i + 1), "time_s": i + 1.0, "capture_rate": v}
            for i, v in enumerate(values)
        ]

    data = transfer_study(tmp_path, curriculum=False)
    data["seeds"] = [0, 1, 2]
    study = load_study(write(tmp_path, data))
    ft = {0: [0.5, 0.6, 0.7], 1: [0.1, 0.2, 0.6], 2: [0.1, 0.1, 0.1]}
    scratch = {0: [0.1, 0.2, 0.3], 1: [0.1, 0.1, 0.1], 2: [0.0, 0.1, 0.2]}
    trials = []
    for seed in (0, 1, 2):
        cost = {"agent_steps": 1000 * (seed + 1), "wall_s": 10.0 * (seed + 1)}
        trials.append(fake_trial(tmp_path / "runs", "ppo", seed, rows(scratch[seed]), **cost))
        trials.append(fake_trial(tmp_path / "runs", "ppo_ft", seed, rows(ft[seed])))
    by = {(t["approach"], t["seed"]): t for t in trials}
    curves = approach_curves(by, "ppo_ft", [0, 1, 2], 0.5)
    assert [s["steps_to_threshold"] for s in curves["per_seed"]] == [100, 300, None]
    st = curves["steps_to_threshold"]
    assert (st["reached"], st["of"], st["mean"]) == (2, 3, 200)
    # t(0.975, 1 df) x sd 141.4 / sqrt(2), the interval kept above 0 agent-steps
    assert st["ci95"] == pytest.approx([0.0, 200 + 12.706 * 100], rel=1e-4)
    assert curves["mean_capture_rate"]["mean"] == pytest.approx(np.mean([0.6, 0.3, 0.1]))
    assert curves["mean_capture_rate"]["ci95"][0] == 0.0  # a rate's interval stays in [0, 1]
    assert source_cost(study, by, "ppo_ft", 1)["agent_steps"] == 2000  # seed 1's source
    assert source_cost(study, by, "ppo", 1)["agent_steps"] == 0

    section = transfer_section(study, trials, random_capture_rate=0.2)
    assert section["threshold"] == pytest.approx(0.3)  # 1.5 x 0.2
    study.transfer.threshold = 0.5
    section = transfer_section(study, trials, random_capture_rate=0.2)
    assert section["threshold"] == 0.5 and section["threshold_from"] == "transfer.threshold"
    (pair,) = section["pairs"]
    assert pair["source_cost"]["agent_steps"] == 2000 and pair["source_cost"]["wall_s"] == 20
    diff = pair["mean_capture_rate_difference"]  # paired over seeds: ft - scratch
    assert diff["mean"] == pytest.approx(np.mean([0.6 - 0.2, 0.3 - 0.1, 0.1 - 0.1]))
    md = "\n".join(markdown(section))
    assert "200 [" in md and "(over the 2 seeds that reached it; not reached in 1/3)" in md
    assert "| `ppo` | from scratch | not reached in 3/3 seeds |" in md
    assert "| 2,000 | 20 |" in md


def test_plan_times_dependent_and_curriculum_approaches_in_waves(ray_session, tmp_path):
    from bioflux.study.plan import plan_study, plan_table, trials_makespan

    study = load_study(write(tmp_path, transfer_study(tmp_path)))
    plan = plan_study(study, iterations=2, log=lambda _: None)
    assert set(plan["approaches"]) == {"ppo", "ppo_ft", "ppo_cur"} and plan["waves"] == 2
    cur = plan["approaches"]["ppo_cur"]
    assert cur["note"] == "curriculum: every stage timed on its own world"
    # the earlier stage is timed and in the trial's estimate; a plain approach has none
    assert cur["earlier_stages_s"] > 0 and plan["approaches"]["ppo"]["earlier_stages_s"] == 0
    assert cur["trial_s"] >= cur["earlier_stages_s"] + cur["setup_s"]
    trial_s = {a: p["trial_s"] for a, p in plan["approaches"].items()}
    assert plan["trials_s"] == round(trials_makespan(study, trial_s, plan["trials_at_once"]))
    table = plan_table(plan)
    assert "in 2 waves: sources first" in table and "(curriculum: every stage timed" in table
