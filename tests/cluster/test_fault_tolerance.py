"""An EnvRunner killed during training is restarted and the run finishes all its iterations.

Fault tolerance comes from RLlib: ``resources.restart_failed_env_runners`` (default true) and
``resources.max_num_env_runner_restarts`` (``bioflux/algorithms/ppo.py`` passes them to
``AlgorithmConfig.fault_tolerance``). Ray restarts the dead actor; RLlib samples from the healthy
runners meanwhile, then probes the restarted one and syncs its weights. The killed-driver case
(resume from the last checkpoint) is tests/training/test_resume.py.
"""

from __future__ import annotations

import json
import os
import signal
import time

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from bioflux import config, training


def _pids(group) -> list[int]:
    # A lambda: cloudpickle ships it by value (this test module is not importable on workers).
    return group.foreach_env_runner(lambda _runner: os.getpid(), local_env_runner=False)


def test_killed_env_runner_is_restarted(ray_session, tmp_path, tiny_config, monkeypatch):
    tiny_config["resources"].update(num_env_runners=2, num_cpus_per_env_runner=0.5)
    tiny_config["stop"] = {"iterations": 5}
    exp = config.validate(tiny_config)
    assert exp.resources.restart_failed_env_runners  # the default

    algos = []  # the Algorithm that training.train builds
    build_algo = AlgorithmConfig.build_algo

    def capture(self, *args, **kwargs):
        algos.append(build_algo(self, *args, **kwargs))
        return algos[-1]

    monkeypatch.setattr(AlgorithmConfig, "build_algo", capture)

    seen: dict[str, object] = {}

    def after_iteration(line: str) -> None:  # training.train's per-iteration log hook
        group = algos[0].env_runner_group
        if line.startswith("iter 1/"):
            pids = _pids(group)
            assert len(pids) == 2 and os.getpid() not in pids
            os.kill(pids[0], signal.SIGKILL)  # the runner's worker process dies mid-run
            seen["killed"], seen["survivor"] = pids
        elif line.startswith("iter 5/"):
            # Tiny iterations take milliseconds; a new worker process can take seconds to
            # start on a loaded machine. Give the restart up to a minute, probing as RLlib
            # does before each iteration.
            deadline = time.monotonic() + 60
            while group.num_healthy_remote_env_runners() < 2 and time.monotonic() < deadline:
                group.probe_unhealthy_env_runners()
                time.sleep(0.5)
            seen["healthy"] = group.num_healthy_remote_env_runners()
            seen["restarts"] = group.num_remote_worker_restarts()
            seen["pids"] = _pids(group)

    summary = training.train(
        exp, output=tmp_path / "runs", models=tmp_path / "models", log=after_iteration
    )

    run = tmp_path / "runs" / "tiny"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(b["env_steps"] > a["env_steps"] for a, b in zip(rows, rows[1:]))
    assert summary["iterations"] == 5 and (run / "checkpoints" / "final").is_dir()
    # Both runners are back: the killed one in a new process, the other untouched.
    assert seen["healthy"] == 2 and seen["restarts"] >= 1, seen
    assert seen["killed"] not in seen["pids"] and seen["survivor"] in seen["pids"], seen
    assert len(summary["env_runner_nodes"]) == 2
