r"""Lotka–Volterra policy: a non-learned, interpretable RLModule driven by the four LV rates.

The classical model :math:`\dot x = \alpha x - \beta x y`, :math:`\dot y = \delta x y - \gamma y`
(prey :math:`x`, predators :math:`y`) is turned into a local decision rule. From its egocentric
window an agent measures, for each action :math:`a` with unit step :math:`u_a` (stay: 0), the
directional densities

.. math::  x_a = \sum_c \text{prey}(c)\, w_a(c), \qquad
           y_a = \sum_c \text{predators}(c)\, w_a(c), \qquad
           w_a(c) = \frac{\max(0, \langle c, u_a\rangle)}{\lVert c\rVert^2}

over the cells :math:`c` of the window (offsets from the agent; nearer cells weigh more; the
agent itself is not counted). With :math:`\bar a` the opposite of :math:`a` and hunger
:math:`h = 1 - e` (:math:`e` = own energy channel, 1 outside ecology mode), each action gets
the drives

- predator — **pursuit** :math:`\delta (1 + h)(x_a - x_{\bar a})` (conversion of prey into
  predators: move toward prey, harder when hungry) and **search** :math:`\gamma h` for every move
  (the death rate pushes a hungry predator to roam rather than wait);
- prey — **flight** :math:`\beta (y_{\bar a} - y_a)` (predation: move away from predators) and
  **dispersal** :math:`\alpha / (1 + x_a)` for every move (growth: spread toward less crowded
  space).

The score of an action is the sum of its drives; the policy is
:math:`\pi(a) = \text{softmax}(s_a / T)` (``temperature`` :math:`T`), or the argmax when
``greedy``. ``drives(obs)`` returns each drive per action, which the server shows as the
decision's reasoning. Coefficients live in the module state, so a fitted set checkpoints and
loads like any RLModule; ``bioflux train --config configs/lotka_volterra.yaml`` searches them
(``bioflux.algorithms.lotka_volterra``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule

from bioflux.envs.config import N_ACTIONS
from bioflux.envs.core import ACTION_DELTAS

#: Default coefficients (rates of the LV model, as drive weights) and softmax temperature.
DEFAULTS: dict[str, float] = {
    "alpha": 0.5,
    "beta": 2.0,
    "gamma": 0.3,
    "delta": 2.0,
    "temperature": 0.25,
}
COEFFICIENTS = ("alpha", "beta", "gamma", "delta", "temperature")
#: Index of each action's opposite (stay is its own), read off ``ACTION_DELTAS``.
_OPPOSITE = torch.tensor([(ACTION_DELTAS == -d).all(1).argmax() for d in ACTION_DELTAS])


def direction_weights(side: int) -> torch.Tensor:
    """``(N_ACTIONS, side, side)`` weights :math:`w_a(c)` of the module docstring."""
    r = side // 2
    rows, cols = np.meshgrid(np.arange(side) - r, np.arange(side) - r, indexing="ij")
    norm2 = np.maximum(rows**2 + cols**2, 1)
    w = np.zeros((len(ACTION_DELTAS), side, side), dtype=np.float32)
    for a, (dr, dc) in enumerate(ACTION_DELTAS):
        if dr or dc:
            w[a] = np.maximum(0, rows * dr + cols * dc) / norm2
    return torch.from_numpy(w)


class LotkaVolterraModule(RLModule):
    """See the module docstring. ``model_config``: any of ``DEFAULTS``, plus ``species``
    (``"predator"`` or ``"prey"``; inferred from the own-energy channel when absent) and
    ``greedy``."""

    def setup(self) -> None:
        cfg = dict(self.model_config or {})
        self.coefficients = {k: float(cfg.get(k, DEFAULTS[k])) for k in COEFFICIENTS}
        self.species = cfg.get("species")
        self.greedy = bool(cfg.get("greedy", False))
        self._weights: dict[tuple[int, torch.device], torch.Tensor] = {}

    # -- the rule ---------------------------------------------------------------
    def _window(self, obs: Any) -> torch.Tensor:
        obs = torch.as_tensor(obs, dtype=torch.float32)
        if obs.dim() == 2:  # flattened (B, S*S*4)
            side = int(round((obs.shape[1] / 4) ** 0.5))
            obs = obs.reshape(-1, side, side, 4)
        return obs

    def drives(self, obs: Any) -> dict[str, torch.Tensor]:
        """Each drive per action, ``(B, N_ACTIONS)``, for ``(B, S, S, 4)`` or flattened
        observations."""
        o = self._window(obs)
        side, dev = o.shape[1], o.device
        if (side, dev) not in self._weights:
            self._weights[side, dev] = direction_weights(side).to(dev)
        w = self._weights[side, dev]
        opposite = _OPPOSITE.to(dev)
        x = torch.einsum("bij,aij->ba", o[..., 2], w)  # prey per direction
        y = torch.einsum("bij,aij->ba", o[..., 1], w)  # predators per direction
        energy = o[:, side // 2, side // 2, 3]
        c = self.coefficients
        moves = torch.ones(N_ACTIONS, device=dev)
        moves[0] = 0.0
        is_predator = (
            torch.full_like(energy, self.species == "predator", dtype=torch.bool)
            if self.species
            else energy > 0
        )
        hunger = (1.0 - energy).clamp(0, 1)[:, None]
        pursuit = c["delta"] * (1 + hunger) * (x - x[:, opposite])
        search = c["gamma"] * hunger * moves
        flight = c["beta"] * (y[:, opposite] - y)
        dispersal = c["alpha"] * moves / (1 + x)
        zero = torch.zeros_like(x)
        p = is_predator[:, None]
        return {
            "pursuit": torch.where(p, pursuit, zero),
            "search": torch.where(p, search, zero),
            "flight": torch.where(p, zero, flight),
            "dispersal": torch.where(p, zero, dispersal),
        }

    def scores(self, obs: Any) -> torch.Tensor:
        return sum(self.drives(obs).values())

    # -- RLModule API -----------------------------------------------------------
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        logits = self.scores(batch[Columns.OBS]) / self.coefficients["temperature"]
        if self.greedy:
            actions = logits.argmax(-1)
        else:
            actions = torch.distributions.Categorical(logits=logits).sample()
        return {Columns.ACTIONS: actions, Columns.ACTION_DIST_INPUTS: logits}

    def _forward_train(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(
            "the Lotka–Volterra module is not trained by gradients; "
            "leave it out of policies_to_train"
        )

    def get_inference_action_dist_cls(self):
        from ray.rllib.models.torch.torch_distributions import TorchCategorical

        return TorchCategorical

    get_exploration_action_dist_cls = get_inference_action_dist_cls

    def get_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"coefficients": dict(self.coefficients), "species": self.species}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("coefficients"):
            self.coefficients = {k: float(v) for k, v in state["coefficients"].items()}
        self.species = state.get("species", self.species)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        pass


def check_coefficients(coefficients: dict[str, Any], where: str = "coefficients") -> None:
    """``ValueError`` in one line unless every key is one of ``DEFAULTS``, every value a finite
    number and the temperature positive."""
    unknown = set(coefficients) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"{where}: unknown Lotka–Volterra coefficient(s) {sorted(unknown)}; allowed: "
            f"{sorted(DEFAULTS)}"
        )
    for name, value in coefficients.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ValueError(f"{where}.{name}={value!r}: expected a finite number")
    if coefficients.get("temperature", DEFAULTS["temperature"]) <= 0:
        raise ValueError(f"{where}.temperature={coefficients['temperature']}: must be > 0")


def make_module(
    species: str | None = None, greedy: bool = False, **coefficients: float
) -> LotkaVolterraModule:
    """A standalone module (no env spaces needed: the window size is read from the input)."""
    import gymnasium

    check_coefficients(coefficients)
    return LotkaVolterraModule(
        observation_space=gymnasium.spaces.Box(0.0, np.inf, (1,), np.float32),
        action_space=gymnasium.spaces.Discrete(N_ACTIONS),
        model_config={**DEFAULTS, **coefficients, "species": species, "greedy": greedy},
    )
