"""Ctrl-C during ``bioflux train``: one line naming the last checkpoint and the command that
continues, exit status 130, and that command continues the run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": ""}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _bioflux(*args: str) -> list[str]:
    return [sys.executable, "-m", "bioflux", *args]


def test_ctrl_c_prints_one_line_exits_130_and_the_resume_continues(tmp_path, tiny_config):
    cfg = tiny_config
    cfg["name"] = "interrupted"
    cfg["stop"] = {"iterations": 1000}  # runs until interrupted
    config = tmp_path / "interrupted.yaml"
    config.write_text(yaml.safe_dump(cfg))
    runs, models = tmp_path / "runs", tmp_path / "models"
    proc = subprocess.Popen(
        _bioflux("train", "--config", str(config), "--output", str(runs), "--models", str(models)),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    checkpoints = runs / "interrupted" / "checkpoints"
    try:
        deadline = time.monotonic() + 300
        while len(list(checkpoints.glob("iter_*"))) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = out + err
    assert proc.returncode == 130, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert "Started a local Ray instance" not in text  # quiet logs: BioFlux's own lines
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1, err[-3000:]
    line = lines[0]
    assert line.startswith("bioflux: interrupted; last checkpoint "), line
    checkpoint = re.search(r"last checkpoint (\S+);", line).group(1)
    assert Path(checkpoint).is_dir() and Path(checkpoint).parent == checkpoints
    command = line.split("continue with: ", 1)[1].split()
    assert command[:2] == ["bioflux", "train"] and command[-1] == "--resume"

    done = int(Path(checkpoint).name.removeprefix("iter_"))
    resumed = subprocess.run(
        _bioflux(*command[1:], "--set", f"stop.iterations={done + 1}"),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert f"at iteration {done}" in resumed.stdout + resumed.stderr
    metrics = (runs / "interrupted" / "metrics.jsonl").read_text().splitlines()
    rows = [yaml.safe_load(r) for r in metrics]
    assert [r["iteration"] for r in rows] == list(range(1, done + 2))
