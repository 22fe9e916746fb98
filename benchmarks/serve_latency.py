"""Serving latency and throughput, batching on vs off. Prints one JSON object.

Run: ``python benchmarks/serve_latency.py [--models outputs/demo/models] [--requests 2000]``.

Starts Ray Serve on 127.0.0.1 with a trained demo checkpoint (trains a 2-iteration demo into a
temporary folder when ``--models`` has none), then drives it from a separate client process
on loopback (aiohttp, keep-alive connections) at concurrency 1 and 64, once with batching
(``max_batch_size=32``) and once without (``max_batch_size=1``). Targets on 2 cores: p50 ≤ 5 ms
and p99 ≤ 10 ms at concurrency 1; at concurrency 64 batching ≥ 3× the throughput of
``max_batch_size=1``, no errors. ``healthz_c64`` (GET /healthz at concurrency 64, an endpoint
that does no work) is the ceiling any /v1/predict configuration can reach on this server.

``act_c1``: ``POST /v1/act`` with one whole default world (100×100, 20 predators, 100 prey:
every agent's action in one request, built-in Lotka–Volterra policies) at concurrency 1; its
throughput is world-steps/s. Target on 2 cores: ≥ 200 world-steps/s (24k agent-predictions/s)
with p99 ≤ 15 ms. ``--act-only`` measures just that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


async def _client(url: str, body: bytes, concurrency: int, requests: int) -> dict:
    """POST ``body`` to ``url`` (GET when ``body`` is empty) from ``concurrency`` workers."""
    import aiohttp

    def send(session):
        if not body:
            return session.get(url)
        return session.post(url, data=body, headers={"content-type": "application/json"})

    latencies: list[float] = []
    errors = 0
    queue = iter(range(requests))

    async def worker(session):
        nonlocal errors
        for _ in queue:
            t0 = time.perf_counter()
            async with send(session) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - t0)

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:
        for _ in range(20):  # warm-up
            async with send(session) as r:
                await r.read()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2)

    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "throughput_rps": round(len(latencies) / wall, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": round(1000 * sum(latencies) / len(latencies), 2),
    }


def client_main() -> None:
    url, concurrency, requests = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    body = sys.stdin.buffer.read()
    try:  # a lighter client leaves more of the shared cores to the server under test
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_client(url, body, concurrency, requests))))


def run_client(url: str, body: bytes, concurrency: int, requests: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--client", url, str(concurrency), str(requests)],
        input=body,
        capture_output=True,
        check=True,
    )
    return json.loads(out.stdout)


def demo_models(path: Path | None) -> Path:
    if path and any(path.glob("*/*/*/*/bioflux.json")):
        return path
    from bioflux import config, training

    out = Path(tempfile.mkdtemp(prefix="bioflux-serve-bench-"))
    exp = config.load("demo", ["stop.iterations=2"])
    training.train(exp, output=out / "runs", models=out / "models", log=lambda _: None)
    return out / "models"


def default_world_state(seed: int = 0) -> dict:
    """A default-world state (100x100, 20 predators, 100 prey, 2% walls) as /v1/act takes it."""
    from bioflux.envs.config import EnvConfig
    from bioflux.envs.core import BatchedWorld

    world = BatchedWorld(EnvConfig(), num_worlds=1, seed=seed)
    world.reset()
    P = world.n_pred_slots
    pos = world.pos[0]
    walls = np.argwhere(world.state(0)[..., 0] > 0)
    return {
        "height": world.config.height,
        "width": world.config.width,
        "predators": pos[:P][world.alive[0, :P]].tolist(),
        "prey": pos[P:][world.alive[0, P:]].tolist(),
        "walls": walls.tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("outputs/demo/models"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--policy", default="ppo/predator")
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.0)
    parser.add_argument("--max-batch-size", type=int, default=32, help="the batching run's")
    parser.add_argument(
        "--direct-ingress", action="store_true", help="replica answers HTTP itself (no proxy)"
    )
    parser.add_argument("--act-only", action="store_true", help="only the /v1/act scenario")
    args = parser.parse_args()

    import ray
    from ray import serve

    from bioflux.serve.app import start

    direct_port = None
    if args.direct_ingress:
        from bioflux.serve.app import enable_direct_ingress

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            direct_port = sock.getsockname()[1]
        enable_direct_ingress(direct_port)
    results: dict = {"direct_ingress": args.direct_ingress}
    act_body = json.dumps(
        {
            "state": default_world_state(),
            "policies": {"predator": "lotka_volterra/predator", "prey": "lotka_volterra/prey"},
        }
    ).encode()
    if args.act_only:
        ray.init(include_dashboard=False, log_to_driver=False)
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            empty = Path(tempfile.mkdtemp(prefix="bioflux-act-bench-"))
            start(empty, port=port, name="bench_act")
            url = f"http://127.0.0.1:{direct_port or port}/v1/act"
            results["act_c1"] = run_client(url, act_body, 1, args.requests // 4)
            serve.shutdown()
        finally:
            ray.shutdown()
        act = results["act_c1"]
        results["act_targets"] = {
            "world_steps_per_s_ge_200": act["throughput_rps"] >= 200,
            "p99_le_15ms": act["p99_ms"] <= 15,
            "agent_predictions_per_s": round(act["throughput_rps"] * 120),
        }
        print(json.dumps(results, indent=2))
        return
    models = demo_models(args.models)
    window = 2 * 4 + 1  # demo config: obs_radius 4
    obs = np.zeros((window, window, 4), dtype=np.float32)
    obs[window // 2, window // 2, 1] = 1.0
    obs[..., 3] = 1.0
    body = json.dumps({"policy": args.policy, "observation": obs.tolist()}).encode()
    for label, max_batch in (("batching", args.max_batch_size), ("no_batching", 1)):
        # a fresh Ray session per configuration: Serve's direct ingress does not restart
        ray.init(include_dashboard=False, log_to_driver=False)
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            start(
                models,
                port=port,
                max_batch_size=max_batch,
                batch_wait_timeout_s=args.batch_wait_timeout_s,
                name=f"bench_{label}",
            )
            url = f"http://127.0.0.1:{direct_port or port}/v1/predict"
            results[label] = {
                "max_batch_size": max_batch,
                "batch_wait_timeout_s": args.batch_wait_timeout_s,
                "c1": run_client(url, body, 1, args.requests),
                "c64": run_client(url, body, 64, args.requests * 2),
            }
            if max_batch > 1:
                results["act_c1"] = run_client(
                    url.replace("/v1/predict", "/v1/act"), act_body, 1, args.requests // 4
                )
                # The per-request floor of Serve + uvicorn + FastAPI (an endpoint that does
                # nothing): no /v1/predict setting can exceed this throughput.
                results["healthz_c64"] = run_client(
                    url.replace("/v1/predict", "/healthz"), b"", 64, args.requests * 2
                )
            serve.shutdown()
        finally:
            ray.shutdown()
    b, nb = results["batching"], results["no_batching"]
    results["batching_speedup_c64"] = round(
        b["c64"]["throughput_rps"] / nb["c64"]["throughput_rps"], 2
    )
    results["targets"] = {
        "p50_c1_le_5ms": b["c1"]["p50_ms"] <= 5,
        "p99_c1_le_10ms": b["c1"]["p99_ms"] <= 10,
        "batching_ge_3x_at_c64": results["batching_speedup_c64"] >= 3,
        "no_errors": all(r[c]["errors"] == 0 for r in (b, nb) for c in ("c1", "c64")),
    }
    results["models"] = str(models)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main()
    else:
        main()
