"""Serving under load and faults. Prints one JSON object.

Run: ``python benchmarks/serve_load_fault.py [--seconds 60] [--concurrency 64] [--haproxy]``.

1. **Hot swaps under load**: one replica (Serve's proxy, as on a cluster), ``--concurrency``
   clients on keep-alive connections send ``/v1/predict`` for ``lotka_volterra/predator@fit``
   for ``--seconds`` while the admin reloads that module every 5 s. Reports requests, errors,
   p50/p99 and the swaps done. Target: 0 errors.

Clients retry a failed request once (predictions are idempotent); ``failed_first_try`` counts
the failures a client without a retry would see, ``errors`` those left after the retry.
2. **A replica killed under load**: 2 replicas, the same clients; after a third of the time
   one replica's process is SIGKILLed. Reports failed requests and the time until 2 replicas
   serve again. Target: 0 failed with 2 replicas (the other replica answers).
3. **The only replica killed under load**: 1 replica, the same. Reports failed requests, the
   outage (kill → last failed request) and the time until Serve has restarted the replica.
   Target: recovery ≤ 10 s.
The models folder holds an exported Lotka–Volterra module (no training needed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

TOKEN = "bench-token"
POLICY = "lotka_volterra/predator@fit"


def _models() -> Path:
    from bioflux.artifacts import export_rl_modules, export_root
    from bioflux.policy_modules.lotka_volterra import make_module

    root = Path(tempfile.mkdtemp(prefix="bioflux-loadfault-"))
    modules = {s: make_module(s) for s in ("predator", "prey")}
    meta = {s: {"algorithm": "lotka_volterra", "run": "fit", "env": {}} for s in modules}
    export_rl_modules(export_root(root, "lotka_volterra", "fit") / "final", modules, meta)
    return root


async def _load(url: str, body: bytes, concurrency: int, seconds: float) -> dict:
    """``concurrency`` keep-alive clients for ``seconds``. A request that fails (non-200 or a
    connection error) is retried once, as a client of an idempotent prediction would; both the
    first-try failures and the failures left after the retry are reported."""
    import aiohttp

    latencies: list[float] = []
    failed_first: list[float] = []  # start times of requests whose first try failed
    failed: list[float] = []  # ... and whose retry failed too
    t_end = time.perf_counter() + seconds

    async def attempt(session) -> bool:
        try:
            async with session.post(
                url, data=body, headers={"content-type": "application/json"}
            ) as r:
                await r.read()
                return r.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def worker(session):
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            ok = await attempt(session)
            if not ok:
                failed_first.append(t0)
                ok = await attempt(session)
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                failed.append(t0)

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=conn, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    latencies.sort()
    pct = lambda q: round(1000 * latencies[int(q * (len(latencies) - 1))], 2) if latencies else None  # noqa: E731
    return {
        "requests": len(latencies) + len(failed),
        "failed_first_try": len(failed_first),
        "errors": len(failed),  # failed after one retry
        "throughput_rps": round(len(latencies) / seconds, 1),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": round(1000 * latencies[-1], 1) if latencies else None,
        "error_times": failed_first,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = _free_port()  # one port for every app: Serve keeps its HTTP options for the session


def _serve(models: Path, replicas: int, name: str) -> str:
    from bioflux.serve.app import start

    port = PORT
    start(models, port=port, num_replicas=replicas, name=name, admin_token=TOKEN)
    return f"http://127.0.0.1:{port}"


def _replica_pids(name: str) -> list[int]:
    """PIDs of the app's live replicas, from the GCS (no dashboard needed)."""
    from ray._private import state

    return [
        int(a["Pid"])
        for a in state.actors().values()
        if a.get("State") == "ALIVE"
        and "PolicyServer" in (a.get("Name") or "")
        and name in (a.get("Name") or "")
    ]


def _kill_under_load(models: Path, replicas: int, body: bytes, args: argparse.Namespace) -> dict:
    """SIGKILL one replica a third of the way into the load; wait for Serve to replace it."""
    from ray import serve

    name = f"bench_kill{replicas}"
    url = _serve(models, replicas, name)
    pids = _replica_pids(name)
    killed: dict = {}

    def killer() -> None:
        time.sleep(args.seconds / 3)
        killed["t"] = time.perf_counter()
        os.kill(pids[0], signal.SIGKILL)
        deadline = killed["t"] + 120
        while time.perf_counter() < deadline:
            alive = _replica_pids(name)
            if len(alive) == replicas and pids[0] not in alive:
                killed["back_s"] = round(time.perf_counter() - killed["t"], 1)
                return
            time.sleep(0.25)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = asyncio.run(_load(url + "/v1/predict", body, args.concurrency, args.seconds))
    thread.join(timeout=130)
    errors = result.pop("error_times")
    serve.delete(name)
    return {
        **result,
        "replicas": replicas,
        "killed_pid": pids[0] if pids else None,
        "outage_s": round(max(errors) - killed["t"], 1) if errors and "t" in killed else 0.0,
        "replica_back_s": killed.get("back_s"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--haproxy",
        action="store_true",
        help="Serve's HAProxy ingress (replays requests whose replica died) instead of its proxy",
    )
    args = parser.parse_args()
    if args.haproxy:
        from bioflux.serve.app import enable_haproxy_ingress

        enable_haproxy_ingress()
    import ray
    import requests
    from ray import serve

    obs = np.zeros((11, 11, 4), dtype=np.float32)
    obs[5, 5, 1] = 1.0
    obs[3, 6, 2] = 1.0
    body = json.dumps({"policy": POLICY, "observation": obs.tolist()}).encode()
    models = _models()
    out: dict = {
        "ingress": "haproxy" if args.haproxy else "serve proxy",
        "concurrency": args.concurrency,
        "seconds": args.seconds,
    }
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        # 1. hot swaps under load
        url = _serve(models, 1, "bench_swap")
        stop, swaps = threading.Event(), []

        def swapper() -> None:
            while not stop.wait(5.0):
                r = requests.post(
                    f"{url}/v1/models/{POLICY}/load",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=30,
                )
                swaps.append(r.status_code)

        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        result = asyncio.run(_load(url + "/v1/predict", body, args.concurrency, args.seconds))
        stop.set()
        thread.join()
        result.pop("error_times")
        out["hot_swap"] = {**result, "swaps": len(swaps), "swap_status": sorted(set(swaps))}
        serve.delete("bench_swap")

        # 2. a replica killed under load, 2 replicas; 3. the only replica killed
        out["replica_killed"] = _kill_under_load(models, 2, body, args)
        out["only_replica_killed"] = _kill_under_load(models, 1, body, args)
        serve.shutdown()
    finally:
        ray.shutdown()
    back = out["only_replica_killed"]["replica_back_s"]
    out["targets"] = {
        "hot_swap_no_errors": out["hot_swap"]["failed_first_try"] == 0,
        "kill_no_failed_with_2_replicas_first_try": out["replica_killed"]["failed_first_try"] == 0,
        "kill_no_failed_with_2_replicas_after_one_retry": out["replica_killed"]["errors"] == 0,
        "recovery_le_10s_with_1_replica": back is not None and back <= 10,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
