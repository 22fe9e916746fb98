"""``bioflux train --init-from``: a new run starts from a trained model's weights, across
worlds; refused in one line when the modules cannot hold them; the lineage is recorded."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bioflux import config, training, transfer
from bioflux.algorithms import get_algorithm
from bioflux.config import ConfigError
from bioflux.transfer import initialize_modules, parse_init_from
from tests.conftest import TINY


@pytest.fixture(scope="module")
def source(ray_session, tmp_path_factory):
    """A trained tiny PPO run, exported."""
    root = tmp_path_factory.mktemp("transfer")
    cfg = copy.deepcopy(TINY)
    cfg["name"] = "source"
    cfg["stop"] = {"iterations": 2}
    summary = training.train(
        config.validate(cfg), output=root / "runs", models=root / "models", log=lambda _: None
    )
    return root, summary["models"]["final"]


def _target(init_from, **env):
    cfg = copy.deepcopy(TINY)
    cfg["name"] = "target"
    cfg["env"].update(env)
    cfg["training"]["init_from"] = init_from
    return config.validate(cfg)


def _module_state(path: str, species: str) -> dict[str, torch.Tensor]:
    from ray.rllib.core.rl_module.rl_module import RLModule

    return RLModule.from_checkpoint(f"{path}/{species}").state_dict()


def test_every_tensor_starts_from_the_source_in_another_world(source):
    _, model = source
    exp = _target(model, height=14, width=12, n_prey=6, max_steps=30, capture_predators=2)
    algo = get_algorithm("ppo").build_config(exp).build_algo()
    try:
        before = {
            k: v.clone() for k, v in algo.learner_group._learner.module["prey"].state_dict().items()
        }
        lineage = initialize_modules(algo, exp.init_from, "ppo")
        for species in ("predator", "prey"):
            want = _module_state(model, species)
            got = algo.learner_group._learner.module[species].state_dict()
            assert set(want) == set(got)
            for k in want:
                torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)
            # the EnvRunner acting in this process holds them too
            runner = algo.env_runner_group.local_env_runner.module[species].state_dict()
            for k in runner:
                torch.testing.assert_close(runner[k], want[k], rtol=0, atol=0, msg=k)
            assert lineage[species]["tensors_copied"] == len(want)
            assert lineage[species]["tensors_fresh"] == []
            assert lineage[species]["run"] == "source"
        assert any(not torch.equal(before[k], v) for k, v in _module_state(model, "prey").items())
    finally:
        algo.stop()


def test_the_weights_reach_a_remote_env_runner_with_a_set_state_in_flight(source):
    """Right after the algorithm is built, the set_state that sent its remote EnvRunners the
    fresh weights may still be in flight; RLlib allows one per EnvRunner and silently drops
    another. A slow call under that tag stands in for it here: the source's weights must
    reach the EnvRunner anyway, before it samples."""
    _, model = source
    exp = _target(model, height=12)
    exp.resources.num_env_runners = 1
    algo = get_algorithm("ppo").build_config(exp).build_algo()
    try:
        runners = algo.env_runner_group
        runners.fetch_ready_async_reqs(tags="set_state", timeout_seconds=None)
        assert (
            runners.foreach_env_runner_async(lambda r: __import__("time").sleep(2), tag="set_state")
            == 1
        )
        initialize_modules(algo, exp.init_from, "ppo")
        remote = runners.foreach_env_runner(
            lambda r: {
                s: {k: v.clone() for k, v in r.module[s].state_dict().items()}
                for s in ("predator", "prey")
            },
            local_env_runner=False,
        )[0]
        for species in ("predator", "prey"):
            want = _module_state(model, species)
            for k in want:
                torch.testing.assert_close(remote[species][k], want[k], rtol=0, atol=0, msg=k)
    finally:
        algo.stop()


def test_a_run_records_its_lineage_in_the_summary_and_the_exports(source):
    root, model = source
    exp = _target({"predator": model}, height=12)
    exp.stop.iterations = 1
    summary = training.train(exp, output=root / "runs", models=root / "models", log=lambda _: None)
    assert set(summary["init_from"]) == {"predator"}
    assert summary["init_from"]["predator"]["path"] == model
    meta = json.loads(
        (root / "models" / "ppo" / "target" / "final" / "predator" / "bioflux.json").read_text()
    )
    assert meta["init_from"]["predator"]["run"] == "source"


def _clone(module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_on_start_sees_the_weights_the_run_starts_from(source, tmp_path):
    _, model = source
    exp = _target(model, height=12)
    exp.stop.iterations = 1
    seen = []

    def on_start(algo):
        seen.append((algo.iteration, _clone(algo.learner_group._learner.module["predator"])))

    training.train(
        exp, output=tmp_path / "runs", models=tmp_path / "m", log=lambda _: None, on_start=on_start
    )
    assert len(seen) == 1 and seen[0][0] == 0  # once, before the first iteration
    want = _module_state(model, "predator")
    for k in want:
        torch.testing.assert_close(seen[0][1][k], want[k], rtol=0, atol=0, msg=k)


def test_a_curriculum_starts_its_first_stage_from_init_from(source, tmp_path, monkeypatch):
    """``training.init_from`` with ``stages:``: stage 1's modules hold the source's weights
    once initialised (in the learner and the EnvRunner), stage 2 starts from stage 1's final
    checkpoint, both stages run, and the curriculum's lineage names the source."""
    _, model = source
    cfg = copy.deepcopy(TINY)
    cfg["name"] = "curric_from_source"
    cfg["training"]["init_from"] = model
    cfg["stages"] = [
        {"name": "small", "stop": {"iterations": 1}},
        {"name": "wide", "env": {"width": 14, "n_prey": 6}, "stop": {"iterations": 1}},
    ]
    started: list[dict] = []
    real = transfer.initialize_modules

    def spy(algo, init_from, algorithm):
        lineage = real(algo, init_from, algorithm)
        runner = algo.env_runner_group.local_env_runner
        started.append(
            {
                "init_from": dict(init_from),
                "learner": {s: _clone(algo.learner_group._learner.module[s]) for s in init_from},
                "runner": {s: _clone(runner.module[s]) for s in init_from},
            }
        )
        return lineage

    monkeypatch.setattr(transfer, "initialize_modules", spy)
    runs = tmp_path / "runs"
    summary = training.train(
        config.validate(cfg), output=runs, models=tmp_path / "m", log=lambda _: None
    )
    assert len(started) == 2  # stage 1 from the source, stage 2 from stage 1
    first, second = started
    assert first["init_from"] == {"predator": model, "prey": model}
    for species in ("predator", "prey"):
        want = _module_state(model, species)
        for where in ("learner", "runner"):
            got = first[where][species]
            assert set(got) == set(want)
            for k in want:
                torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=f"{where} {k}")
    stage1_final = runs / "curric_from_source" / "stages" / "small" / "checkpoints" / "final"
    assert set(second["init_from"].values()) == {str(stage1_final.resolve())}
    assert [(s["name"], s["iterations"]) for s in summary["curriculum"]] == [
        ("small", 1),
        ("wide", 1),
    ]
    rows = [json.loads(r) for r in Path(summary["metrics"]).read_text().splitlines()]
    assert [(r["stage"], r["stage_iteration"]) for r in rows] == [(1, 1), (2, 1)]
    assert summary["init_from"]["predator"]["path"] == model
    meta = json.loads((Path(summary["models"]["final"]) / "predator" / "bioflux.json").read_text())
    assert meta["init_from"]["prey"]["run"] == "source"
    assert [s["name"] for s in meta["curriculum"]] == ["small", "wide"]


def test_a_module_that_cannot_hold_the_weights_is_refused_in_one_line(source):
    _, model = source
    exp = _target(model, obs_radius=3)  # another observation window
    algo = get_algorithm("ppo").build_config(exp).build_algo()
    try:
        with pytest.raises(ValueError, match="does not fit this run's") as err:
            initialize_modules(algo, exp.init_from, "ppo")
        assert "\n" not in str(err.value) and "there and" in str(err.value)
    finally:
        algo.stop()


def test_another_algorithms_module_is_refused(source):
    _, model = source
    cfg = copy.deepcopy(TINY)
    cfg.update(name="dqn_target", algorithm="epsilon_greedy")
    cfg["training"] = {"init_from": model, "hidden": [32]}
    cfg["resources"]["env_runner"] = "transitions"
    exp = config.validate(cfg)
    algo = get_algorithm("epsilon_greedy").build_config(exp).build_algo()
    try:
        with pytest.raises(ValueError, match="a ppo module cannot start this epsilon_greedy"):
            initialize_modules(algo, exp.init_from, "epsilon_greedy")
    finally:
        algo.stop()


def test_init_from_values_parse_and_bad_ones_are_refused():
    assert parse_init_from(["runs/a"]) == "runs/a"
    assert parse_init_from(["predator=runs/a", "prey=runs/b"]) == {
        "predator": "runs/a",
        "prey": "runs/b",
    }
    with pytest.raises(ValueError, match="one PATH for every species"):
        parse_init_from(["runs/a", "prey=runs/b"])
    with pytest.raises(ConfigError, match="unknown species"):
        _target({"wolf": "x"})


def test_the_cli_trains_from_an_init_from(source, tmp_path):
    _, model = source
    cfg = copy.deepcopy(TINY)
    cfg["name"] = "cli_target"
    cfg["stop"] = {"iterations": 1}
    path = tmp_path / "target.yaml"
    path.write_text(json.dumps(cfg))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bioflux",
            "train",
            "--config",
            str(path),
            "--init-from",
            f"prey={model}",
            "--output",
            str(tmp_path / "runs"),
            "--models",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "prey starts from" in out.stdout + out.stderr
    summary = json.loads((tmp_path / "runs" / "cli_target" / "summary.json").read_text())
    assert set(summary["init_from"]) == {"prey"}
