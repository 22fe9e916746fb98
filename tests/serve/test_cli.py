"""`bioflux serve` as a user runs it: a real process, direct ingress, HTTP, clean shutdown."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import requests

from tests.serve.conftest import free_port


def test_bioflux_serve_direct_ingress_answers_and_stops(models_dir):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bioflux",
            "serve",
            "--models",
            str(models_dir),
            "--port",
            str(port),
            "--direct-ingress",
        ],
        env={**os.environ, "RAY_ADDRESS": ""},
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if requests.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            time.sleep(0.5)
        obs = np.zeros((5, 5, 4))
        obs[2, 2, 2] = 1.0
        r = requests.post(
            url + "/v1/predict",
            timeout=10,
            json={"policy": "ppo/prey@tiny", "observation": obs.tolist()},
        )
        assert r.status_code == 200, r.text
        assert r.json()["policy"] == "ppo/prey@tiny:final"
        assert (
            requests.post(
                url + "/v1/predict", json={"policy": "nope/prey", "observation": [0]}, timeout=10
            ).status_code
            == 404
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        exit_s = time.monotonic() - t0
    assert proc.returncode == 0
    assert exit_s < 10, f"bioflux serve took {exit_s:.1f} s to exit"  # issue target: 5 s
    time.sleep(1)
    try:
        requests.get(url + "/healthz", timeout=2)
        raise AssertionError("the server is still answering after SIGTERM")
    except requests.ConnectionError:
        pass
