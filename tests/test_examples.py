"""Every script in ``examples/`` runs as written, on a tiny budget
(``BIOFLUX_EXAMPLE_BUDGET=tiny``), in a temporary folder: ``full_training.py`` trains and
exports a model, then ``inference.py`` and ``deployment.py`` use it; ``quick_demo.py`` trains
every approach and ranks them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def without_shutdown_noise(text: str) -> str:
    """``text`` less the lines of Ray worker processes that printed "Exception ignored in"
    (CPython's report of an error in a finaliser at interpreter exit: a worker's teardown,
    after its result was returned)."""
    noisy = set(re.findall(r"(\(\w+ pid=\d+\)).*Exception ignored in", text))
    return "\n".join(line for line in text.splitlines() if not any(p in line for p in noisy))


def run_example(name: str, cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RAY_ADDRESS": "",
        "BIOFLUX_EXAMPLE_BUDGET": "tiny",
    }
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, f"{name}: exit {out.returncode}\n{text[-4000:]}"
    assert "Traceback" not in without_shutdown_noise(text), f"{name}\n{text[-4000:]}"
    return out.stdout


def test_the_four_examples_exist():
    names = {p.name for p in EXAMPLES.glob("*.py")}
    assert {"quick_demo.py", "full_training.py", "inference.py", "deployment.py"} <= names


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """``full_training.py``'s run: the folder it ran in and its exported models."""
    cwd = tmp_path_factory.mktemp("examples")
    out = run_example("full_training.py", cwd)
    assert "trained 2 iterations" in out  # 1, then resumed with a raised stop
    assert "| predator |" in out and "report: outputs/examples/full_training/evaluation.md" in out
    models = cwd / "outputs" / "examples" / "full_training" / "models"
    assert (models / "ppo" / "full_training" / "final" / "predator").is_dir()
    return cwd, models


def test_full_training_then_inference(trained):
    cwd, models = trained
    out = run_example("inference.py", cwd, str(models))
    assert "using ppo" in out and "predator_0:" in out
    assert "prey_9:" in out  # every agent of the demo world answered by batch_predict


def test_inference_without_trained_models_uses_the_built_ins(tmp_path):
    out = run_example("inference.py", tmp_path, str(tmp_path / "empty"))
    assert "using lotka_volterra" in out


def test_deployment_serves_calls_and_hot_swaps(trained):
    cwd, models = trained
    out = run_example("deployment.py", cwd, str(models))
    assert "using ppo/predator" in out
    assert "predict: " in out and "act: {" in out
    assert "hot swap: 200" in out and "after the swap: " in out


def test_quick_demo_ranks_every_approach(tmp_path):
    out = run_example("quick_demo.py", tmp_path)
    ranking = [line for line in out.splitlines() if line[:1].isdigit() and ". " in line]
    approaches = {"ppo", "maddpg", "epsilon_greedy", "lotka_volterra", "random (built-in)"}
    assert len(ranking) == 6 and all(any(a in r for r in ranking) for a in approaches), out
