"""Curricula (``stages:``): stage after stage in one run folder, each stage starting from the
previous stage's weights in its own world; continuous metrics; resume mid-curriculum; bad
stages refused in one line."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from bioflux import config, training, transfer
from bioflux.config import ConfigError
from bioflux.learning_curves import stage_boundaries
from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[2]


def _curriculum(name: str = "curric", **stop: int) -> dict:
    cfg = copy.deepcopy(TINY)
    cfg["name"] = name
    cfg["checkpoint"] = {"frequency": 1, "keep": 2}
    cfg["stages"] = [
        {"name": "small", "stop": {"iterations": stop.get("small", 2)}},
        {"name": "short", "env": {"max_steps": 7}, "stop": {"iterations": stop.get("short", 1)}},
        {"name": "wide", "env": {"width": 14, "n_prey": 6}, "stop": {"iterations": 1}},
    ]
    return cfg


def _module_state(path: Path, species: str) -> dict[str, torch.Tensor]:
    from ray.rllib.core.rl_module.rl_module import RLModule

    return RLModule.from_checkpoint(str(path / species)).state_dict()


@pytest.fixture(scope="module")
def curriculum_run(ray_session, tmp_path_factory):
    """A finished tiny 3-stage curriculum; the learner's modules right after each stage's
    weights were carried in (spied on ``bioflux.transfer.initialize_modules``)."""
    root = tmp_path_factory.mktemp("curriculum")
    started: list[dict] = []
    real = transfer.initialize_modules

    def spy(algo, init_from, algorithm):
        lineage = real(algo, init_from, algorithm)
        learner = algo.learner_group._learner
        runner = algo.env_runner_group.local_env_runner
        started.append(
            {
                "init_from": dict(init_from),
                "learner": {
                    s: {k: v.clone() for k, v in learner.module[s].state_dict().items()}
                    for s in init_from
                },
                "runner": {
                    s: {k: v.clone() for k, v in runner.module[s].state_dict().items()}
                    for s in init_from
                },
            }
        )
        return lineage

    transfer.initialize_modules = spy
    try:
        summary = training.train(
            config.validate(_curriculum()),
            output=root / "runs",
            models=root / "models",
            log=lambda _: None,
        )
    finally:
        transfer.initialize_modules = real
    return root, summary, started


def test_each_stage_starts_from_the_previous_stages_final_weights(curriculum_run):
    root, _, started = curriculum_run
    stages = root / "runs" / "curric" / "stages"
    assert len(started) == 2  # stage 1 starts fresh; stages 2 and 3 from the stage before
    for before, start in zip(("small", "short"), started):
        final = stages / before / "checkpoints" / "final"
        assert set(start["init_from"].values()) == {str(final.resolve())}
        for species in ("predator", "prey"):
            want = _module_state(final / "learner_group" / "learner" / "rl_module", species)
            for where in ("learner", "runner"):
                got = start[where][species]
                assert set(got) == set(want)
                for k in want:
                    torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)
    # and training moved them: stage 2's end is not stage 1's end
    a = _module_state(stages / "small/checkpoints/final/learner_group/learner/rl_module", "prey")
    b = _module_state(stages / "short/checkpoints/final/learner_group/learner/rl_module", "prey")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_each_stage_plays_in_its_own_world(curriculum_run):
    root, summary, _ = curriculum_run
    rows = [json.loads(r) for r in (root / "runs/curric/metrics.jsonl").read_text().splitlines()]
    by_stage = {n: [r for r in rows if r["stage"] == n] for n in (1, 2, 3)}
    # stage 2 truncates episodes at 7 steps; stages 1 and 3 at 20
    assert all(r["episode_length_iter"] == 7 for r in by_stage[2] if r["episode_length_iter"])
    assert any((r["episode_length_iter"] or 0) > 7 for r in by_stage[1] + by_stage[3])
    saved = yaml.safe_load((root / "runs/curric/stages/wide/config.yaml").read_text())
    assert saved["env"]["width"] == 14 and saved["env"]["n_prey"] == 6
    assert saved["env"]["max_steps"] == 20  # stage overrides merge into env, not into each other
    meta = json.loads((root / "models/ppo/curric/final/predator/bioflux.json").read_text())
    assert meta["env"]["width"] == 14
    assert [s["name"] for s in meta["curriculum"]] == ["small", "short", "wide"]
    assert meta["curriculum"][1]["env"] == {"max_steps": 7}
    assert summary["curriculum"][0]["iterations"] == 2


def test_the_metrics_run_on_across_stages(curriculum_run):
    root, summary, _ = curriculum_run
    rows = [json.loads(r) for r in (root / "runs/curric/metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    assert [(r["stage"], r["stage_name"], r["stage_iteration"]) for r in rows] == [
        (1, "small", 1),
        (1, "small", 2),
        (2, "short", 1),
        (3, "wide", 1),
    ]
    for key in ("agent_steps", "env_steps", "time_s"):
        assert all(a[key] < b[key] for a, b in zip(rows, rows[1:])), key
    assert all(a["episodes"] <= b["episodes"] for a, b in zip(rows, rows[1:]))
    assert rows[-1]["episodes"] > rows[1]["episodes"]
    stage2 = json.loads((root / "runs/curric/stages/short/metrics.jsonl").read_text())
    assert rows[2]["agent_steps"] == rows[1]["agent_steps"] + stage2["agent_steps"]
    assert summary["iterations"] == 4 and summary["env_steps"] == rows[-1]["env_steps"]
    assert stage_boundaries(rows, "agent_steps") == [
        (0, "1: small"),
        (rows[1]["agent_steps"], "2: short"),
        (rows[2]["agent_steps"], "3: wide"),
    ]
    assert (root / "runs/curric/learning_curves.png").stat().st_size > 0
    # the run folder's final checkpoint is the last stage's
    final = root / "runs/curric/checkpoints/final/learner_group/learner/rl_module"
    last = root / "runs/curric/stages/wide/checkpoints/final/learner_group/learner/rl_module"
    a, b = _module_state(final, "predator"), _module_state(last, "predator")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert config.trained_env(root / "runs/curric", "predator")["width"] == 14


def _stages(**changes) -> dict:
    cfg = _curriculum()
    for index, env in changes.items():
        cfg["stages"][int(index[1:])].setdefault("env", {}).update(env)
    return cfg


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (_stages(s1={"obs_radius": 3}), r"stage 2 \(short\) has obs_radius 3 but stage 1 has 2"),
        (_stages(s2={"wolves": 3}), r"stage 3 \(wide\) env: unknown predator_prey_v0 argument"),
        (_stages(s0={"n_prey": 500}), r"stage 1 \(small\) env: n_predators \+ n_prey"),
        ({**_curriculum(), "stages": []}, "give at least one stage"),
        (
            {**_curriculum(), "stages": [{"name": "a"}, {"name": "a"}]},
            r"\['a'\] appear more than once",
        ),
        ({**_curriculum(), "stages": [{"envs": {}}]}, r"stages\.0\.envs: unknown key"),
    ],
)
def test_bad_stages_are_refused_in_one_line(cfg, message):
    with pytest.raises(ConfigError, match=message) as err:
        config.validate(cfg)
    assert "\n" not in str(err.value)


def test_the_cli_refuses_a_bad_stage_with_exit_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_stages(s2={"obs_radius": 4})))
    out = subprocess.run(
        [sys.executable, "-m", "bioflux", "train", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert "stage 3 (wide) has obs_radius 4 but stage 1 has 2" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_the_packaged_curriculum_keeps_one_window_and_ends_in_the_reference_world():
    exp = config.load(REPO / "configs" / "curriculum.yaml")
    from bioflux.curriculum import stage_env

    envs = [stage_env(exp, i) for i in range(len(exp.stages))]
    assert len({e.get("obs_radius", exp.env_config.obs_radius) for e in envs}) == 1
    last = config.EnvConfig.from_kwargs(envs[-1])
    assert (last.height, last.width, last.n_predators, last.n_prey, last.max_steps) == (
        100,
        100,
        20,
        100,
        300,
    )


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": ""}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def test_a_curriculum_interrupted_in_stage_2_resumes_there_and_goes_on(tmp_path):
    cfg = _curriculum("killed", short=1000)  # stage 2 runs until interrupted
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runs, models = tmp_path / "runs", tmp_path / "models"
    train = [sys.executable, "-m", "bioflux", "train", "--config", str(path)]
    train += ["--output", str(runs), "--models", str(models)]
    proc = subprocess.Popen(
        train,
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    stage2 = runs / "killed" / "stages" / "short" / "checkpoints"
    try:
        deadline = time.monotonic() + 300
        while len(list(stage2.glob("iter_*"))) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no stage-2 checkpoint within 300 s"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, (out + err)[-3000:]
    line = next(x for x in err.splitlines() if "interrupted" in x)
    checkpoint = Path(re.search(r"last checkpoint (\S+);", line).group(1))
    assert checkpoint.parent == stage2, line
    done = int(checkpoint.name.removeprefix("iter_"))
    assert not (runs / "killed" / "stages" / "wide").exists()
    stage1_metrics = (runs / "killed/stages/small/metrics.jsonl").read_text()

    cfg["stages"][1]["stop"] = {"iterations": done + 2}  # a stage's stop may change on resume
    path.write_text(yaml.safe_dump(cfg))
    command = line.split("continue with: ", 1)[1].split()
    resumed = subprocess.run(
        [sys.executable, "-m", "bioflux", *command[1:]],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    text = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, text[-3000:]
    assert "stage 2/3 short: resumed" in text and f"at iteration {done}" in text, text[-3000:]
    assert "stage 1/3 small: iter" not in text  # stage 1 is not trained again
    assert (runs / "killed/stages/small/metrics.jsonl").read_text() == stage1_metrics
    rows = [json.loads(r) for r in (runs / "killed/metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["stage_iteration"]) for r in rows] == [
        (1, 1),
        (1, 2),
        *[(2, i) for i in range(1, done + 3)],
        (3, 1),
    ]
    assert [r["iteration"] for r in rows] == list(range(1, len(rows) + 1))
    summary = json.loads((runs / "killed/summary.json").read_text())
    assert [s["iterations"] for s in summary["curriculum"]] == [2, done + 2, 1]
    assert (models / "ppo/killed/final/predator/bioflux.json").is_file()
    # raising an earlier stage's stop now would leave the later stages' start stale: refused
    cfg["stages"][0]["stop"] = {"iterations": 3}
    with pytest.raises(ValueError, match=r"stage 1 \(small\) would train again but short, wide"):
        training.train(config.validate(cfg), output=runs, models=models, resume=True)


def test_evaluate_shows_where_each_module_started(curriculum_run, tmp_path, capsys):
    from bioflux import cli

    root, _, _ = curriculum_run
    model = root / "models/ppo/curric/final"
    stage2 = root / "runs/curric/stages/short/checkpoints/final"
    out = tmp_path / "ev"
    argv = ["evaluate", "--predator", str(model), "--prey", str(stage2)]
    assert cli.main([*argv, "--episodes", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "- predator module: from scratch, then a 3-stage curriculum: small (2 it) -> short "
        "(max_steps=7; 1 it) -> wide (width=14, n_prey=6; 1 it)" in printed
    )
    small = root / "runs/curric/stages/small/checkpoints/final"
    assert f"- prey module: from {small.resolve()} (run small, ppo, " in printed
    report = json.loads((out / "evaluation.json").read_text())[0]["lineage"]
    assert report["predator"]["run"] == "curric" and report["predator"]["init_from"] is None
    assert [s["name"] for s in report["predator"]["curriculum"]] == ["small", "short", "wide"]
    assert report["prey"]["run"] == "short" and report["prey"]["init_from"]["path"] == str(
        small.resolve()
    )
    assert "- prey module: from" in (out / "evaluation.md").read_text()


def test_resume_may_change_a_stages_stop_but_not_its_world(tmp_path):
    from bioflux.artifacts import RunFolder

    run = RunFolder(tmp_path / "curric")
    run.root.mkdir()
    run.config.write_text(yaml.safe_dump(config.validate(_curriculum()).to_dict()))
    raised = _curriculum(short=5)
    training.check_resume(run, config.validate(raised))  # a stage's stop: allowed
    moved = _stages(s1={"max_steps": 9})
    with pytest.raises(
        ValueError, match=r"in stages\.2\.env\.max_steps \(stages\.2\.env\.max_steps: 7 -> 9\)"
    ):
        training.check_resume(run, config.validate(moved))
