"""Thread counts per process role (``bioflux.threads``): inference commands run one torch
thread unless ``$BIOFLUX_INFERENCE_THREADS`` says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bioflux import threads
from bioflux.cli import INFERENCE_COMMANDS

REPO = Path(__file__).resolve().parents[1]


def test_inference_threads_default_and_override(monkeypatch):
    monkeypatch.delenv(threads.INFERENCE_THREADS_ENV, raising=False)
    assert threads.inference_threads() == 1
    monkeypatch.setenv(threads.INFERENCE_THREADS_ENV, "3")
    assert threads.inference_threads() == 3
    for bad in ("0", "-2", "many"):
        monkeypatch.setenv(threads.INFERENCE_THREADS_ENV, bad)
        assert threads.inference_threads() == 1


def test_the_inference_commands_are_the_ones_that_only_run_inference():
    assert set(INFERENCE_COMMANDS) == {"evaluate", "render", "simulate", "view", "study"}


def test_an_inference_command_runs_one_torch_thread(tmp_path):
    """``bioflux evaluate`` in a real process, with torch's default (every core) before it."""
    code = (
        "import torch, sys\n"
        "from bioflux import cli, evaluation\n"
        "seen = []\n"
        "real = evaluation.evaluate\n"
        "def spy(*a, **k):\n"
        "    seen.append(torch.get_num_threads())\n"
        "    return real(*a, **k)\n"
        "evaluation.evaluate = spy\n"
        "code = cli.main(['evaluate', '--predator', 'lotka_volterra', '--prey', 'random',\n"
        "                 '--episodes', '1', '--out', sys.argv[1]])\n"
        "print(code, seen)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OMP_NUM_THREADS", None)
    env.pop(threads.INFERENCE_THREADS_ENV, None)
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "0 [1]"
