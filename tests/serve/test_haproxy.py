"""`bioflux serve --haproxy --replicas 2`: serving goes on while a replica is SIGKILLed.

A real `bioflux serve` process, Serve's HAProxy ingress, real HTTP clients; the replica's process
is found by the title Ray gives it and killed with SIGKILL, as a crash or the OOM killer would.
HAProxy replays the requests the dead replica never answered; one whose response had already
begun (or a keep-alive connection closed by HAProxy's reload) can still fail, so the test
allows at most 0.1% failures (measured here: 0 to 2 of ~6,400).
"""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import requests

from tests.serve.conftest import free_port, spawn, stop

REPLICA_TITLE = "ServeReplica:bioflux:PolicyServer"


def _replica_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", REPLICA_TITLE], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_haproxy_keeps_serving_through_a_killed_replica(models_dir, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    proc = spawn(
        [sys.executable, "-m", "bioflux", "serve", "--models", str(models_dir)]
        + ["--port", str(port), "--replicas", "2", "--haproxy"],
        log,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    url = f"http://127.0.0.1:{port}"
    obs = np.zeros((5, 5, 4))
    obs[2, 2, 2] = 1.0
    body = {"policy": "ppo/prey@tiny", "observation": obs.tolist()}
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if requests.get(url + "/healthz", timeout=2).status_code == 200:
                    if len(_replica_pids()) == 2:
                        break
            except requests.RequestException:  # not listening yet, or no replica behind it
                pass
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        before = _replica_pids()
        assert len(before) == 2, before
        done, ok, failed = threading.Event(), [], []

        def client() -> None:
            with requests.Session() as session:
                while not done.is_set():
                    try:
                        r = session.post(url + "/v1/predict", json=body, timeout=30)
                        (ok if r.status_code == 200 else failed).append(r.status_code)
                    except requests.RequestException as err:
                        failed.append(repr(err))

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(3)
        served_before_kill = len(ok)
        os.kill(before[0], signal.SIGKILL)
        replaced = None
        t_kill = time.monotonic()
        while time.monotonic() - t_kill < 60:
            now = _replica_pids()
            if len(now) == 2 and before[0] not in now:
                replaced = time.monotonic() - t_kill
                break
            time.sleep(0.25)
        time.sleep(2)
        done.set()
        for t in threads:
            t.join()
        assert served_before_kill > 0
        assert len(failed) <= 0.001 * (len(ok) + len(failed)), (len(failed), len(ok), failed[:3])
        assert len(ok) > served_before_kill
        assert replaced is not None and replaced < 30, replaced
    finally:
        stop(proc)
