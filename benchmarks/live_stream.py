"""Live view streaming: frames per second to 1 and to 4 viewers at once. Prints one JSON object.

Run: ``python benchmarks/live_stream.py [--models outputs/demo/models] [--seconds 5]``.

Starts the live view (``bioflux view``'s app, no Ray) in a separate process on 127.0.0.1 with the
speed cap lifted (``settings.LIVE_MAX_SPEED``), then opens WebSocket viewers of the default
world (``ppo``: 100x100, 20 predators and 100 prey) from this process and counts the frames
each gets in ``--seconds``: with built-in policies (random, Lotka–Volterra) and, when
``--models`` holds them, trained ``ppo`` policies (in the ``demo`` world's 9x9 window, which
they were trained with, at 100x100 with 120 agents; its episodes are 50 steps). ``errors``:
error messages and failed connections; ``capped_60``: one viewer at the page's top speed.
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

SERVER = """
import sys
from bioflux.serve import settings
settings.LIVE_MAX_SPEED = 100000.0
settings.LIVE_MAX_SESSIONS = 64
from bioflux.serve.live_routes import run_view
run_view(sys.argv[1], port=int(sys.argv[2]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _viewer(url: str, seconds: float) -> dict:
    import websockets

    frames = errors = size = 0
    try:
        async with websockets.connect(url, max_size=2**24) as ws:
            first = json.loads(await ws.recv())
            if first.get("type") != "reset":
                return {"frames": 0, "errors": 1, "message": first.get("message")}
            t0 = time.perf_counter()
            while (left := seconds - (time.perf_counter() - t0)) > 0:
                try:
                    text = await asyncio.wait_for(ws.recv(), timeout=left)
                except asyncio.TimeoutError:
                    break
                msg = json.loads(text)
                if msg["type"] == "frame":
                    frames += 1
                    size += len(text)
                    if msg["done"]:
                        await ws.send(json.dumps({"type": "reset"}))
                elif msg["type"] == "error":
                    errors += 1
            elapsed = time.perf_counter() - t0
    except Exception as err:  # a refused or dropped connection
        return {"frames": frames, "errors": errors + 1, "message": f"{type(err).__name__}: {err}"}
    return {"frames": frames, "errors": errors, "fps": frames / elapsed, "bytes": size}


async def _scenario(base: str, query: str, viewers: int, seconds: float) -> dict:
    url = f"{base}/v1/live/ws?{query}"
    results = await asyncio.gather(*(_viewer(url, seconds) for _ in range(viewers)))
    fps = [r.get("fps", 0.0) for r in results]
    frames = sum(r["frames"] for r in results)
    return {
        "viewers": viewers,
        "fps_per_viewer": round(sum(fps) / viewers, 1),
        "fps_total": round(sum(fps), 1),
        "mean_frame_bytes": round(sum(r.get("bytes", 0) for r in results) / max(frames, 1)),
        "errors": sum(r["errors"] for r in results),
        "messages": sorted({r["message"] for r in results if r.get("message")})[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=None, help="exported models (optional)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per scenario")
    args = parser.parse_args()
    models = args.models or Path(tempfile.mkdtemp(prefix="bioflux-live-"))
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(models), str(port)])
    base = f"ws://127.0.0.1:{port}"
    try:
        import urllib.request

        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/live/options") as res:
                    options = json.load(res)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the live view did not start") from None
                time.sleep(0.2)
        pairs = {"random": ("random/predator", "random/prey")}
        pairs["lotka_volterra"] = ("lotka_volterra/predator", "lotka_volterra/prey")
        if "ppo/predator" in options["policies"]["predator"]:
            pairs["ppo"] = ("ppo/predator", "ppo/prey")
        out: dict = {"world": "ppo (100x100, 20 predators, 100 prey)", "seconds": args.seconds}
        for name, (pred, prey) in pairs.items():
            # trained demo models see 9x9: the demo world's window, at the default world's size
            world = (
                "world=demo&height=100&width=100&n_predators=20&n_prey=100"
                if name == "ppo"
                else "world=ppo"
            )
            query = f"{world}&predator={pred}&prey={prey}&seed=0&speed=100000"
            out[name] = {
                "one_viewer": asyncio.run(_scenario(base, query, 1, args.seconds)),
                "four_viewers": asyncio.run(_scenario(base, query, 4, args.seconds)),
            }
        capped = "world=ppo&predator=random/predator&prey=random/prey&speed=60"
        out["capped_60"] = asyncio.run(_scenario(base, capped, 1, args.seconds))
        print(json.dumps(out, indent=2))
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
