"""`ray job submit` on a real two-node Ray cluster: EnvRunners on both nodes, checkpoint written.

Both nodes run on this machine (`ray start --head`, then `ray start --address=...`), each with
1 CPU, every port chosen free, the dashboard on 127.0.0.1, and token authentication on with a
token of the test's own (``RAY_AUTH_TOKEN``), as on a real cluster. Each `ray start` runs with
``--block`` as a child of the test, so stopping it stops exactly that node's processes; a sweep
then kills anything still carrying this cluster's token in its environment. Other Ray sessions
on the machine are left alone (no `ray stop`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, closing
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
#: Never uploaded with the working dir (they are .gitignore'd too; this does not rely on it).
EXCLUDES = [".git", ".venv", "runs", "models", "outputs", ".pytest_cache", ".ruff_cache"]


def free_ports(n: int) -> list[int]:
    with ExitStack() as stack:
        socks = [stack.enter_context(closing(socket.socket())) for _ in range(n)]
        for s in socks:
            s.bind(("", 0))  # free on every interface: Ray binds some ports on 0.0.0.0
        return [s.getsockname()[1] for s in socks]


def _pids_with(marker: bytes) -> list[int]:
    """PIDs (other than ours) whose environment contains ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            pass
    return pids


class LocalCluster:
    """A head and worker nodes started with `ray start --block` on 127.0.0.1."""

    def __init__(self, root: Path):
        self.root = root
        self.token = secrets.token_hex(32)
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RAY_ADDRESS", "RAY_AUTH", "RAY_API_SERVER"))
        }
        self.env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.token,
            RAY_USAGE_STATS_ENABLED="0",
            # `bioflux` and `ray` of this venv, for the nodes and the job's entrypoint.
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        self.marker = f"RAY_AUTH_TOKEN={self.token}".encode()
        self.nodes: list[subprocess.Popen] = []
        self.gcs_port, self.dashboard_port = free_ports(2)
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, name: str, args: list[str], timeout: float = 90, attempts: int = 2) -> None:
        # A loaded machine can make `ray start` miss its own 30 s GCS deadline: retry once.
        for attempt in range(attempts):
            try:
                return self._start_once(f"{name}{attempt or ''}", args, timeout)
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                proc = self.nodes.pop()
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

    def _start_once(self, name: str, args: list[str], timeout: float) -> None:
        agent, agent_grpc, runtime_env, metrics, node_manager, object_manager = free_ports(6)
        log = self.root / f"{name}.log"
        cmd = [
            RAY,
            "start",
            "--block",
            *args,
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            "--object-store-memory=200000000",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--metrics-export-port={metrics}",
            f"--node-manager-port={node_manager}",
            f"--object-manager-port={object_manager}",
            "--min-worker-port=0",  # random worker ports: no clash with other Ray sessions
            "--max-worker-port=0",
            f"--temp-dir={self.root / name}",
            "--disable-usage-stats",
        ]
        with log.open("w") as out:
            proc = subprocess.Popen(
                cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.nodes.append(proc)
        deadline = time.time() + timeout
        while "Ray runtime started" not in log.read_text():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"ray start ({name}) failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def start_head(self) -> None:
        (client_port,) = free_ports(1)
        self._start(
            "head",
            [
                "--head",
                f"--port={self.gcs_port}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={client_port}",
            ],
        )

    def add_worker(self, name: str) -> None:
        self._start(name, [f"--address=127.0.0.1:{self.gcs_port}"])

    def get(self, path: str, token: bool = True) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        return requests.get(self.dashboard + path, headers=headers, timeout=30)

    def alive_nodes(self) -> dict[str, bool]:
        """node_id -> is_head_node, for alive nodes (Ray's state API over HTTP)."""
        r = self.get("/api/v0/nodes?limit=100")
        r.raise_for_status()
        rows = r.json()["data"]["result"]["result"]
        return {n["node_id"]: n["is_head_node"] for n in rows if n["state"] == "ALIVE"}

    def ray(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [RAY, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )

    def stop(self) -> None:
        """SIGTERM each `ray start --block` (it stops its node), then kill any leftovers."""
        for proc in reversed(self.nodes):  # workers first, the head last
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        deadline = time.time() + 15
        while leftovers := _pids_with(self.marker):
            for pid in leftovers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.time() > deadline:
                raise RuntimeError(f"processes of the test cluster survive: {leftovers}")
            time.sleep(0.2)


@pytest.fixture
def cluster():
    # A short root: Ray's Unix socket paths must stay under ~107 characters.
    root = Path(tempfile.mkdtemp(prefix="bfx-"))
    c = LocalCluster(root)
    try:
        c.start_head()
        c.add_worker("worker1")
        yield c
    finally:
        c.stop()
        assert not _pids_with(c.marker)
        shutil.rmtree(root, ignore_errors=True)


def test_job_submit_trains_on_two_nodes(cluster, tmp_path):
    nodes = cluster.alive_nodes()
    assert sorted(nodes.values()) == [False, True], nodes  # a head and a worker
    assert cluster.get("/api/version", token=False).status_code in (401, 403)  # auth is on

    out = tmp_path / "out"  # absolute, outside the uploaded working dir
    job = cluster.ray(
        "job",
        "submit",
        f"--address={cluster.dashboard}",
        f"--submission-id=bioflux-test-{secrets.token_hex(4)}",
        f"--working-dir={ROOT}",
        f"--runtime-env-json={json.dumps({'excludes': EXCLUDES})}",
        "--",
        "bioflux",
        "train",
        "--config=configs/demo.yaml",  # resolved inside the uploaded working dir
        f"--output={out / 'runs'}",
        f"--models={out / 'models'}",
        "--set=name=cluster_tiny",
        "--set=env={height: 10, width: 10, n_predators: 2, n_prey: 4, max_steps: 20,"
        " obs_radius: 2, wall_density: 0.0}",
        "--set=training={train_batch_size: 200, minibatch_size: 100, num_epochs: 1, hidden: [32]}",
        # 1 CPU per runner on 1-CPU nodes: the scheduler must put one runner on each node.
        "--set=resources={num_env_runners: 2, num_cpus_per_env_runner: 1,"
        " num_envs_per_env_runner: 2}",
        "--set=stop={iterations: 2}",
        "--set=checkpoint={frequency: 1, keep: 1}",
    )
    assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
    assert "iter 2/2" in job.stdout and "succeeded" in job.stdout, job.stdout[-4000:]

    run = out / "runs" / "cluster_tiny"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 2
    # The two EnvRunners ran on different nodes: the head and the worker.
    assert sorted(summary["env_runner_nodes"]) == sorted(nodes), (summary, nodes)
    final = run / "checkpoints" / "final"
    assert (final / "learner_group" / "learner" / "rl_module" / "predator").is_dir()
    assert (out / "models" / "ppo" / "cluster_tiny" / "final" / "prey" / "bioflux.json").is_file()
