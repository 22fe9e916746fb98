"""Latency of `bioflux serve` as a plain client sees it: a new TCP connection per request
(as curl or a bare ``requests.post`` does), concurrency 1. Prints one JSON object.

Run: ``python benchmarks/serve_new_connections.py [--requests 300] [--no-direct-ingress]``.
Starts ``bioflux serve`` in its default mode (direct ingress with a local Ray and one replica)
on an empty models folder and asks the built-in ``random/prey`` policy. Target on 2 cores:
p50 ≤ 5 ms, p99 ≤ 10 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--no-direct-ingress", action="store_true", help="Serve's proxy mode")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    models = tempfile.mkdtemp(prefix="bioflux-newconn-")
    cmd = [sys.executable, "-m", "bioflux", "serve", "--models", models, "--port", str(port)]
    if args.no_direct_ingress:
        cmd.append("--no-direct-ingress")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    obs = np.zeros((11, 11, 4), dtype=np.float32).tolist()
    body = {"policy": "random/prey", "observation": obs}
    try:
        for _ in range(120):
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(1)
        for _ in range(20):  # warm-up
            requests.post(url + "/v1/predict", json=body, timeout=10)
        latencies, errors = [], 0
        for _ in range(args.requests):
            t0 = time.perf_counter()
            r = requests.post(url + "/v1/predict", json=body, timeout=10)  # new connection
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += r.status_code != 200
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    latencies.sort()
    p = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)  # noqa: E731
    print(
        json.dumps(
            {
                "mode": "proxy" if args.no_direct_ingress else "default (direct ingress)",
                "requests": args.requests,
                "errors": errors,
                "p50_ms": p(0.5),
                "p99_ms": p(0.99),
                "mean_ms": round(statistics.mean(latencies), 2),
                "targets": {"p50_le_5ms": p(0.5) <= 5, "p99_le_10ms": p(0.99) <= 10},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
