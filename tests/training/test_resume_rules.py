"""Resume rules on real Ray: a run with a fixed (non-learned) module exports only what it
trained and resumes; a finished run continues to a raised stop; a resume with another config or
an unreadable checkpoint is refused and leaves the run folder byte-identical."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from bioflux import config, training
from bioflux.artifacts import MODULES_SUBDIR


def folder_hashes(root: Path) -> dict[str, str]:
    """Every file under ``root`` → sha256 of its bytes (plus every folder, as empty)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(root.rglob("*"))
    }


def _exp(tiny: dict, **changes) -> config.Experiment:
    data = copy.deepcopy(tiny)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        data[section][key] = value
    return config.validate(data)


@pytest.fixture(scope="module")
def fixed_run(ray_session, tmp_path_factory):
    """2 iterations of PPO predators against fixed Lotka–Volterra prey."""
    from tests.conftest import TINY

    tiny = copy.deepcopy(TINY)
    tiny["training"]["fixed_modules"] = {"prey": "lotka_volterra"}
    root = tmp_path_factory.mktemp("fixed")
    lines: list[str] = []
    summary = training.train(
        config.validate(copy.deepcopy(tiny)),
        output=root / "runs",
        models=root / "models",
        log=lines.append,
    )
    return root, tiny, summary


def test_fixed_modules_are_not_exported(fixed_run):
    root, _, summary = fixed_run
    assert summary["trained_species"] == ["predator"]
    for kind in ("final", "best"):
        folder = root / "models" / "ppo" / "tiny" / kind
        assert sorted(p.name for p in folder.iterdir()) == ["predator"]
        meta = json.loads((folder / "predator" / "bioflux.json").read_text())
        assert meta["species"] == "predator" and meta["env"]["obs_radius"] == 2
    # the checkpoint itself still holds the LV module (RLlib needs it to resume)
    assert (root / "runs" / "tiny" / "checkpoints" / "final" / MODULES_SUBDIR / "prey").is_dir()


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"training__lr": 1e-3}, "training.lr"),
        # a learned prey resumed as an LV prey crashed in RLlib's optimizer restore before
        ({"training__fixed_modules": {}}, "training.fixed_modules.prey"),
        ({"env__obs_radius": 3}, "env.obs_radius"),
    ],
)
def test_a_resume_with_another_config_is_refused_untouched(fixed_run, changes, key, tmp_path):
    root, tiny, _ = fixed_run
    before = folder_hashes(root)
    exp = _exp(tiny, **changes, stop__iterations=5)
    with pytest.raises(ValueError, match="cannot resume") as err:
        training.train(exp, output=root / "runs", models=root / "models", resume=True)
    assert key in str(err.value) and "\n" not in str(err.value)
    assert folder_hashes(root) == before


def test_an_unreadable_checkpoint_is_refused_untouched(fixed_run, tmp_path):
    root, tiny, _ = fixed_run
    shutil.copytree(root / "runs", tmp_path / "runs")
    for pkl in (tmp_path / "runs" / "tiny" / "checkpoints" / "final").rglob("*.pkl"):
        pkl.write_bytes(b"not a pickle")
    before = folder_hashes(tmp_path)
    exp = _exp(tiny, stop__iterations=3)
    with pytest.raises(ValueError, match="cannot resume .* from .*final"):
        training.train(exp, output=tmp_path / "runs", models=tmp_path / "models", resume=True)
    assert folder_hashes(tmp_path) == before  # no config.yaml, metrics or models written


def test_a_finished_run_continues_to_a_raised_stop(fixed_run, monkeypatch):
    """Runs last in this module: it extends the shared run to 3 iterations."""
    root, tiny, _ = fixed_run
    run = root / "runs" / "tiny"
    lines: list[str] = []
    exp = _exp(tiny, stop__iterations=3)
    summary = training.train(
        exp, output=root / "runs", models=root / "models", resume=True, log=lines.append
    )
    assert "at iteration 2" in lines[0]  # restored from checkpoints/final
    assert lines[1] == "learners: 1 on cpu" and lines[2].startswith("iter 3/3")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert summary["iterations"] == 3
    assert "iterations: 3" in (run / "config.yaml").read_text()  # the raised stop is recorded
    final = root / "models" / "ppo" / "tiny" / "final"
    assert json.loads((final / "predator" / "bioflux.json").read_text())["iteration"] == 3
    assert sorted(p.name for p in final.iterdir()) == ["predator"]

    # the same stop again: nothing to train, said so before Ray starts, metrics unchanged
    def no_ray(*_args, **_kwargs):
        raise AssertionError("a finished run started Ray")

    monkeypatch.setattr(training, "init_ray", no_ray)
    lines.clear()
    again = training.train(
        exp, output=root / "runs", models=root / "models", resume=True, log=lines.append
    )
    assert len(lines) == 1 and "nothing to train" in lines[0], lines
    assert again["iterations"] == 3 and again["models"] == summary["models"]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]


def test_model_inference_imports_from_training_without_ray_serve():
    import subprocess
    import sys

    code = (
        "import sys, bioflux.training as t\n"
        "assert 'ray.serve' not in sys.modules and 'bioflux.serve.inference' not in sys.modules\n"
        "from bioflux.training import ModelInference\n"
        "from bioflux.serve.inference import ModelInference as M\n"
        "assert ModelInference is M\n"
        "try:\n    t.NoSuchName\nexcept AttributeError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "NoSuchName" in out.stdout
