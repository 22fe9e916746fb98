"""A run killed with SIGKILL resumes from its last checkpoint without losing iterations."""

import json
import os
import signal
import subprocess
import sys
import time

import yaml

from bioflux.policies import load_policy


def _rows(run):
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def test_sigkill_then_resume(tmp_path, tiny_config):
    tiny_config["stop"] = {"iterations": 10_000}  # killed long before
    tiny_config["checkpoint"] = {"frequency": 2, "keep": 2}
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config))
    run = tmp_path / "runs" / "tiny"
    cmd = [
        sys.executable,
        "-m",
        "bioflux",
        "train",
        "--config",
        str(cfg),
        "--output",
        str(tmp_path / "runs"),
        "--models",
        str(tmp_path / "models"),
    ]
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(_rows(run)) < 3 and proc.poll() is None:
            time.sleep(0.05)
        assert len(_rows(run)) >= 3, "training did not get going"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
        proc.wait()
    killed_at = len(_rows(run))
    assert not (run / "checkpoints" / "final").exists()
    last_ckpt = max(int(p.name[5:]) for p in (run / "checkpoints").glob("iter_[0-9]*[0-9]"))

    target = killed_at + 2
    out = subprocess.run(
        [*cmd, "--resume", "--set", f"stop.iterations={target}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"at iteration {last_ckpt}" in out.stdout
    rows = _rows(run)
    assert [r["iteration"] for r in rows] == list(range(1, target + 1))
    assert rows[-1]["env_steps"] > rows[last_ckpt - 1]["env_steps"]
    policy = load_policy(tmp_path / "models" / "ppo" / "tiny", "predator")
    assert policy.probabilities(__import__("numpy").zeros((1, 5, 5, 4), "float32")).shape == (1, 5)
