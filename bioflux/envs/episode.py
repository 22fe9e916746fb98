"""Run and record one episode of the PettingZoo env with random actions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bioflux.envs import predator_prey_v0
from bioflux.envs.rendering import save_frames


def run_random_episode(
    out_dir: str | Path, steps: int = 100, seed: int = 0, **env_kwargs: Any
) -> dict[str, Any]:
    """Play random actions for up to ``steps`` steps; write ``episode.gif`` and ``episode.png``."""
    env = predator_prey_v0.parallel_env(render_mode="rgb_array", **env_kwargs)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    frames = [env.render()]
    returns = {"predator": 0.0, "prey": 0.0}
    for _ in range(steps):
        if not env.agents:
            break
        _, rewards, _, _, _ = env.step(dict(zip(env.agents, rng.integers(0, 5, len(env.agents)))))
        for agent, r in rewards.items():
            returns[agent.split("_")[0]] += r
        frames.append(env.render())
    out_dir = Path(out_dir)
    gif = save_frames(frames, out_dir / "episode.gif")
    png = save_frames(frames, out_dir / "episode.png")
    return {
        "steps": len(frames) - 1,
        "populations": env.population_history[-1][1:],
        "total_rewards": returns,
        "gif": str(gif),
        "png": str(png),
    }
