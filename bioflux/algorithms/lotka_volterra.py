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
loads like any RLModule; ``bioflux train --config configs/lotka_volterra.yaml`` fits them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule

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
_OPPOSITE = torch.tensor([0, 2, 1, 4, 3])


def direction_weights(side: int) -> torch.Tensor:
    """``(5, side, side)`` weights :math:`w_a(c)` of the module docstring."""
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
        self._weights: dict[int, torch.Tensor] = {}

    # -- the rule ---------------------------------------------------------------
    def _window(self, obs: Any) -> torch.Tensor:
        obs = torch.as_tensor(obs, dtype=torch.float32)
        if obs.dim() == 2:  # flattened (B, S*S*4)
            side = int(round((obs.shape[1] / 4) ** 0.5))
            obs = obs.reshape(-1, side, side, 4)
        return obs

    def drives(self, obs: Any) -> dict[str, torch.Tensor]:
        """Each drive per action, ``(B, 5)``, for ``(B, S, S, 4)`` or flattened observations."""
        o = self._window(obs)
        side = o.shape[1]
        if side not in self._weights:
            self._weights[side] = direction_weights(side)
        w = self._weights[side]
        x = torch.einsum("bij,aij->ba", o[..., 2], w)  # prey per direction
        y = torch.einsum("bij,aij->ba", o[..., 1], w)  # predators per direction
        energy = o[:, side // 2, side // 2, 3]
        c = self.coefficients
        moves = torch.ones(5)
        moves[0] = 0.0
        is_predator = (
            torch.full_like(energy, self.species == "predator", dtype=torch.bool)
            if self.species
            else energy > 0
        )
        hunger = (1.0 - energy).clamp(0, 1)[:, None]
        pursuit = c["delta"] * (1 + hunger) * (x - x[:, _OPPOSITE])
        search = c["gamma"] * hunger * moves
        flight = c["beta"] * (y[:, _OPPOSITE] - y)
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


def make_module(
    species: str | None = None, greedy: bool = False, **coefficients: float
) -> LotkaVolterraModule:
    """A standalone module (no env spaces needed: the window size is read from the input)."""
    import gymnasium

    unknown = set(coefficients) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown Lotka–Volterra coefficient(s) {sorted(unknown)}; allowed: {sorted(DEFAULTS)}"
        )
    return LotkaVolterraModule(
        observation_space=gymnasium.spaces.Box(0.0, np.inf, (1,), np.float32),
        action_space=gymnasium.spaces.Discrete(5),
        model_config={**DEFAULTS, **coefficients, "species": species, "greedy": greedy},
    )


# ---------------------------------------------------------------------------------------------
# Fitting: `bioflux train --config configs/lotka_volterra.yaml`
# ---------------------------------------------------------------------------------------------
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402


class Params(BaseModel):
    """Coefficient search (the ``training`` section of a ``lotka_volterra`` experiment)."""

    model_config = ConfigDict(extra="forbid")

    fit_species: str = Field(
        "predator", pattern="^(predator|prey)$", description="whose coefficients are fitted"
    )
    opponent: str = Field("random", description="the other species' policy: built-in or path")
    num_samples: int = Field(24, ge=1, description="Ray Tune trials (coefficient sets)")
    episodes: int = Field(40, ge=1, description="evaluation episodes per trial")
    max_concurrent: int = Field(2, ge=1, description="trials running at once")
    bounds: dict[str, tuple[float, float]] = Field(
        {
            "alpha": (0.05, 5.0),
            "beta": (0.05, 5.0),
            "gamma": (0.01, 3.0),
            "delta": (0.05, 5.0),
            "temperature": (0.05, 2.0),
        },
        description="log-uniform search range per coefficient",
    )


def _trial(config: dict[str, Any]) -> None:
    """One Tune trial: evaluate a coefficient set against the fixed opponent."""
    from ray import tune

    from bioflux.evaluation import run_episodes, summarize
    from bioflux.policies import ModulePolicy, load_policy

    setup = config.pop("_setup")
    species = setup["species"]
    other = "prey" if species == "predator" else "predator"
    mine = ModulePolicy(make_module(species, **config), name="lotka_volterra")
    theirs = load_policy(setup["opponent"], other)
    pols = {species: mine, other: theirs}
    from bioflux.envs.config import EnvConfig

    records = run_episodes(
        pols["predator"],
        pols["prey"],
        EnvConfig(**setup["env"]),
        setup["episodes"],
        seed=setup["seed"],
    )
    m = summarize(records)
    tune.report(
        {
            "return": m[species]["return_mean"],
            "capture_rate": m[species]["capture_rate"],
            "success_rate": m[species]["success_rate"],
        }
    )


def train(
    exp: Any,
    output: Any,
    models: Any,
    resume: bool = False,
    address: str | None = None,
    log: Any = print,
    **_: Any,
) -> dict[str, Any]:
    """Fit the coefficients with Ray Tune; export the best as a loadable module checkpoint."""
    import json
    import shutil
    from pathlib import Path

    from ray import tune

    from bioflux.training import RunFolder, init_ray, plot_learning_curves

    p: Params = exp.params
    unknown = set(p.bounds) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"training.bounds: unknown coefficient(s) {sorted(unknown)}")
    run = RunFolder(Path(output) / exp.name)
    if run.summary.exists() and not resume:
        raise ValueError(
            f"run folder {run.root} already exists; pass --resume to continue it "
            "or choose another --output / name"
        )
    run.root.mkdir(parents=True, exist_ok=True)
    opponent = (
        p.opponent
        if p.opponent in ("random", "lotka_volterra")
        else str(Path(p.opponent).resolve())
    )
    setup = {
        "species": p.fit_species,
        "opponent": opponent,
        "env": exp.env_config.to_dict(),
        "episodes": p.episodes,
        "seed": exp.evaluation.seed,
    }
    space = {k: tune.loguniform(lo, hi) for k, (lo, hi) in p.bounds.items()}
    space["_setup"] = setup
    started = init_ray(address)
    import ray

    try:
        storage = str((run.root / "tune").resolve())
        trainable = tune.with_resources(_trial, {"cpu": 1})
        if resume and tune.Tuner.can_restore(f"{storage}/lv_fit"):
            log(f"resuming the coefficient search in {storage}/lv_fit")
            tuner = tune.Tuner.restore(
                f"{storage}/lv_fit", trainable=trainable, resume_errored=True
            )
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=space,
                tune_config=tune.TuneConfig(
                    metric="return",
                    mode="max",
                    num_samples=p.num_samples,
                    max_concurrent_trials=p.max_concurrent,
                ),
                run_config=tune.RunConfig(name="lv_fit", storage_path=storage, verbose=1),
            )
        grid = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    best = grid.get_best_result()
    coefficients = {k: float(best.config[k]) for k in p.bounds}
    df = grid.get_dataframe()
    rows = []
    best_so_far = float("-inf")
    for i, (_, r) in enumerate(df.sort_values("timestamp").iterrows(), start=1):
        best_so_far = max(best_so_far, float(r["return"]))
        row = {
            "iteration": i,
            "env_steps": i * p.episodes * exp.env_config.max_steps,
            "time_s": float(r.get("time_total_s", 0.0)),
            "capture_rate": r["capture_rate"],
            f"{p.fit_species}_return": float(r["return"]),
            "best_return": best_so_far,
            "predator_return" if p.fit_species == "prey" else "prey_return": None,
            **{k: float(r[f"config/{k}"]) for k in p.bounds},
        }
        rows.append(row)
        log(
            f"trial {i}/{len(df)} | {p.fit_species} return {row[f'{p.fit_species}_return']:.3f}"
            f" | capture rate {row['capture_rate']:.2f} | best {best_so_far:.3f}"
        )
    run.write_metrics(rows)
    plot_learning_curves(rows, run.curves, f"{exp.name}: Lotka–Volterra coefficient search")
    export = Path(models) / "lotka_volterra" / exp.name
    tmp = export.with_name(export.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for kind in ("final", "best"):
        for species in ("predator", "prey"):
            module = make_module(species, **(coefficients if species == p.fit_species else {}))
            folder = tmp / kind / species
            module.save_to_path(str(folder.resolve()))
            (folder / "bioflux.json").write_text(
                json.dumps(
                    {
                        "algorithm": "lotka_volterra",
                        "run": exp.name,
                        "kind": kind,
                        "species": species,
                        "env": exp.env_config.to_dict(),
                        "coefficients": module.coefficients,
                        "fitted": species == p.fit_species,
                        "opponent": p.opponent,
                    },
                    indent=2,
                )
            )
    shutil.rmtree(export, ignore_errors=True)
    tmp.rename(export)
    summary = {
        "name": exp.name,
        "algorithm": "lotka_volterra",
        "iterations": len(rows),
        "fit_species": p.fit_species,
        "opponent": p.opponent,
        "best": {
            "score": "return",
            "value": float(best.metrics["return"]),
            "coefficients": coefficients,
        },
        "run_dir": str(run.root),
        "models": {"final": str(export / "final"), "best": str(export / "best")},
        "learning_curves": str(run.curves),
        "metrics": str(run.metrics),
        "env_steps": rows[-1]["env_steps"] if rows else 0,
    }
    run.summary.write_text(json.dumps(summary, indent=2))
    return summary
