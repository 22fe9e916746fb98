"""World throughput: the torch core on a device against the numpy core, over the batch size.

Run: ``python benchmarks/torch_world.py [--device cuda] [--worlds 16,256,4096]
[--seconds 3] [--numpy]``. Prints one JSON object.

One "agent-step" is one live agent stepping once with its next observation cut, as in
``env_throughput.py``: random actions for every slot, ``step``, then the observation of every
slot (``observe_all``: the torch sampler's layout; the numpy core observes only the live
agents, which is less work). Finished worlds are reset as they end (``reset_done``: one
device→host sync per step). Default world: 100×100, 20 predators, 100 prey, 11×11×4 windows.
On a GPU every timing ends with a synchronisation.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from bioflux.envs import BatchedWorld, EnvConfig
from bioflux.envs.torch_core import TorchWorld, resolve_device


def torch_rate(worlds: int, device: torch.device, seconds: float, window_copy=None) -> dict:
    world = TorchWorld(EnvConfig(), num_worlds=worlds, device=device, seed=0)
    world.reset()
    if window_copy is not None:
        world.window_copy = window_copy
    gen = torch.Generator(device=device).manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def one_step() -> torch.Tensor:
        world.reset_done()
        acting = world.alive & ~world.done[:, None]
        actions = torch.randint(0, 5, tuple(world.alive.shape), generator=gen, device=device)
        world.step(actions, check_actions=False)
        world.observe_all()
        return acting.sum()

    for _ in range(3):  # warm-up: allocator, kernels
        one_step()
    sync()
    counts, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(counts) < 3:
        counts.append(one_step())
    total = int(torch.stack(counts).sum())
    sync()
    elapsed = time.perf_counter() - start
    return {
        "worlds": worlds,
        "agent_steps_per_s": round(total / elapsed),
        "ms_per_step": round(1e3 * elapsed / len(counts), 3),
        "steps": len(counts),
        "window_copy": world.window_copy,
    }


def profile(worlds: int, device: torch.device) -> list[dict]:
    """The ops that take the time of 10 steps (+ observe, reset) at ``worlds`` worlds."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    world = TorchWorld(EnvConfig(), num_worlds=worlds, device=device, seed=0)
    world.reset()
    gen = torch.Generator(device=device).manual_seed(0)
    shape = tuple(world.alive.shape)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for _ in range(2):
        world.step(torch.randint(0, 5, shape, generator=gen, device=device), check_actions=False)
    with torch_profile(activities=activities) as prof:
        for _ in range(10):
            world.reset_done()
            world.step(
                torch.randint(0, 5, shape, generator=gen, device=device), check_actions=False
            )
            world.observe_all()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)[:15]
    return [
        {"op": e.key, "calls": e.count, "self_ms": round(getattr(e, key, 0) / 1e3, 3)} for e in rows
    ]


def numpy_rate(worlds: int, seconds: float) -> dict:
    world = BatchedWorld(EnvConfig(), num_worlds=worlds, seed=0)
    world.reset()
    rng = np.random.default_rng(0)
    total, n, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3:
        if world.done.any():
            world.reset(worlds=np.flatnonzero(world.done))
        total += int((world.alive & ~world.done[:, None]).sum())
        world.step(rng.integers(0, 5, world.alive.shape))
        b, a = np.nonzero(world.alive & ~world.done[:, None])
        world.observe(b, a)
        n += 1
    elapsed = time.perf_counter() - start
    return {
        "worlds": worlds,
        "agent_steps_per_s": round(total / elapsed),
        "ms_per_step": round(1e3 * elapsed / n, 3),
        "steps": n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worlds", default="16,256")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--numpy", action="store_true", help="also the numpy core, same B")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--profile", type=int, default=0, help="also profile 10 steps at B")
    parser.add_argument(
        "--window-copy",
        choices=["auto", "on", "off"],
        default="auto",
        help="how observations are cut (TorchWorld.window_copy; auto: strided view on CUDA)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    sizes = [int(b) for b in args.worlds.split(",")]
    result: dict = {
        "config": "default (100x100, 20 predators, 100 prey, 11x11x4 windows)",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "torch": [],
    }
    for b in sizes:
        try:
            wc = {"auto": None, "on": True, "off": False}[args.window_copy]
            result["torch"].append(torch_rate(b, device, args.seconds, wc))
        except torch.OutOfMemoryError:
            result["torch"].append({"worlds": b, "error": "out of memory"})
            break
        print(json.dumps(result["torch"][-1]), flush=True)
    if args.numpy:
        result["numpy"] = [numpy_rate(b, args.seconds) for b in sizes]
    if args.profile:
        result["profile"] = profile(args.profile, device)
    best = max(result["torch"], key=lambda r: r.get("agent_steps_per_s", 0))
    result["best_torch_agent_steps_per_s"] = best.get("agent_steps_per_s")
    result["best_torch_worlds"] = best["worlds"]
    result.update(python=platform.python_version(), torch_version=torch.__version__)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
