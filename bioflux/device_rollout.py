"""Episodes played on a torch device: every episode of a pairing at once, world and policies
on the same device (``bioflux.envs.torch_core.TorchWorld``).

``run_episodes_on_device`` is ``bioflux.evaluation.run_episodes`` for a GPU: the same
``EpisodeRecord`` per episode, from one ``TorchWorld`` of ``episodes`` worlds. Observations,
action sampling, rewards, captures and returns stay on the device; the host reads one flag per
step (whether every episode has ended) and the records once at the end. Policies that are torch
modules (trained models, the Lotka–Volterra rule) run there; ``random`` is drawn there; any
other policy (an ensemble) gets its observations on the host and sends its probabilities back.

The worlds' layouts and the sampled actions come from the device's generators, seeded by
``seed`` and ``seed + 1``: a pairing's episodes are reproducible on one device and shared by
every pairing (common random numbers, as in the numpy path), but not the numpy path's episodes.
On the CPU the numpy core is faster (``docs/gpu.md``), so evaluation uses this only on a GPU.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from bioflux.envs.config import N_ACTIONS, SPECIES, EnvConfig
from bioflux.envs.torch_core import TorchWorld, resolve_device
from bioflux.policies import ModulePolicy, Policy, RandomPolicy
from bioflux.rollout import EpisodeRecord


class DevicePolicy:
    """A ``Policy`` acting on device tensors of flattened observations ``(M, S·S·4)``."""

    def __init__(self, policy: Policy, device: torch.device):
        self.policy, self.device = policy, device
        self.deterministic = bool(getattr(policy, "deterministic", False))
        self.module = None
        if isinstance(policy, ModulePolicy):  # a module without weights follows its input
            module = policy.module
            is_net = isinstance(module, torch.nn.Module)
            self.module = copy.deepcopy(module).to(device).eval() if is_net else module

    def probabilities(self, flat: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        if isinstance(self.policy, RandomPolicy):
            return torch.full((len(flat), N_ACTIONS), 1.0 / N_ACTIONS, device=self.device)
        if self.module is not None:
            from ray.rllib.core.columns import Columns

            out = self.module.forward_inference({Columns.OBS: flat})
            return torch.softmax(out[Columns.ACTION_DIST_INPUTS], dim=-1)
        probs = self.policy.probabilities(windows.cpu().numpy())  # host round trip
        return torch.as_tensor(probs, dtype=torch.float32, device=self.device)


def run_episodes_on_device(
    predator: Policy,
    prey: Policy,
    env_config: EnvConfig,
    episodes: int,
    seed: int = 0,
    device: str | torch.device = "cuda",
    greedy: bool = False,
    world: TorchWorld | None = None,
) -> list[EpisodeRecord]:
    """Play ``episodes`` episodes, all at once; one record per episode, in world order.
    ``world``: a prepared ``TorchWorld`` of ``episodes`` worlds, already reset (tests)."""
    if episodes < 1:
        raise ValueError(f"episodes={episodes} is out of range; allowed: >= 1")
    env_config = env_config.require_agent_identity("evaluation")
    if world is None:
        world = TorchWorld(env_config, num_worlds=episodes, device=device, seed=seed)
        world.reset()
    dev = world.device
    policies = {"predator": predator, "prey": prey}
    on_device = {s: DevicePolicy(policies[s], dev) for s in SPECIES}
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed + 1)
    B, N = world.alive.shape
    returns = torch.zeros((B, N), dtype=torch.float64, device=dev)
    captures = torch.zeros(B, dtype=torch.int64, device=dev)
    first = torch.full((B,), -1, dtype=torch.int64, device=dev)
    species_mask = {"predator": world.is_predator, "prey": ~world.is_predator}
    actions = torch.zeros((B, N), dtype=torch.int64, device=dev)
    with torch.inference_mode():
        while not bool(world.done.all()):
            running = ~world.done
            obs = world.observe_all()  # (B, N, S, S, 4)
            actions.zero_()
            for species in SPECIES:
                mask = world.alive & running[:, None] & species_mask[species][None, :]
                windows = obs[mask]
                if len(windows) == 0:
                    continue
                policy = on_device[species]
                probs = policy.probabilities(windows.reshape(len(windows), -1), windows)
                if greedy or policy.deterministic:
                    chosen = probs.argmax(-1)
                else:
                    chosen = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
                actions[mask] = chosen
            res = world.step(actions, check_actions=False)
            returns += torch.where(running[:, None], res.rewards.double(), 0.0)
            captures += torch.where(running, res.captured.long(), 0)
            first = torch.where((first < 0) & (res.captured > 0) & running, world.t.long(), first)
    return _records(world, returns, captures, first)


def _records(
    world: TorchWorld, returns: torch.Tensor, captures: torch.Tensor, first: torch.Tensor
) -> list[EpisodeRecord]:
    host: dict[str, Any] = {
        name: value.cpu().numpy()
        for name, value in {
            "returns": returns,
            "captures": captures,
            "first": first,
            "t": world.t,
            "used": world.used,
            "is_predator": world.is_predator,
        }.items()
    }
    records = []
    for w in range(world.num_worlds):
        pred = host["used"][w] & host["is_predator"]
        prey = host["used"][w] & ~host["is_predator"]
        f = int(host["first"][w])
        records.append(
            EpisodeRecord(
                length=int(host["t"][w]),
                captures=int(host["captures"][w]),
                prey_total=int(np.sum(prey)),
                first_capture_step=f if f >= 0 else None,
                predator_returns=tuple(host["returns"][w, pred].tolist()),
                prey_returns=tuple(host["returns"][w, prey].tolist()),
            )
        )
    return records


def evaluation_device(choice: str) -> torch.device | None:
    """``evaluation.device`` resolved: a CUDA device, or None for the numpy core."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return None
    return resolve_device("cuda" if choice == "auto" else choice)
