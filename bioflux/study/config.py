"""Study configs: which approaches, on which world, with which shared budget and seeds.

A study file (``configs/study_demo.yaml``; unknown keys are rejected, naming the key)::

    name: study_demo
    env: {...}                    # the one world every approach trains and is evaluated on
    budget: {env_steps: 60000}    # the same for every approach: env_steps or episodes
    seeds: [0, 1]                 # training seeds (one trial per approach and seed)
    approaches:                   # label -> an experiment config (algorithm + hyper-parameters)
      ppo: {config: demo, set: ["training.train_batch_size=4000"]}
      lotka_volterra: {config: lotka_volterra}
      ppo_ft: {config: demo, set: [...], init_from: ppo}   # optional: transfer (see below)
    baselines: [random]           # built-in policies that join the cross-play
    ensembles:                    # optional: players combining the approaches' policies
      ppo_lv: {members: [ppo, lotka_volterra], combine: average, weights: [1, 1]}
    evaluation: {episodes: 100, seed: 900001}
    resources: {cpus_per_trial: 1, env_runners_per_trial: 0, max_concurrent: 2,
                gpus_per_trial: 0}
    ecology_realism: {enabled: true, size: 100, steps: 1200}   # optional (the default)
    transfer: {threshold: 0.4}    # optional: the Transfer section's capture-rate threshold

Each (approach, seed) becomes an ``Experiment``: the approach's config with the study's world,
seed, budget (as ``stop``) and evaluation section, and ``resources.env_runners_per_trial``
EnvRunners (default 0: a trial samples in its own process, on the CPU Tune gives it). Seeds
that pick a model (training seeds, the Lotka–Volterra coefficient search's ``selection_seed``)
never double as the evaluation seed. The Lotka–Volterra approach fits its ``fit_species``'
coefficients; its other species keeps the default coefficients.

Transfer approaches: ``init_from`` names another approach (each seed's trial starts from that
approach's same-seed final export; ``waves`` orders the trials so sources finish first) or a
model path (``training.init_from``); an approach's config may have ``stages:`` (a curriculum
whose last stage is the study's world and trains for the study's budget). Each is compared with
a from-scratch approach (``compare_to``, or the one with the same config and set) in the
report's Transfer section (``bioflux.study.transfer``).

An ensemble (``bioflux.ensembles``: weighted probability averaging or weighted majority vote)
trains nothing: for each training seed it is built at evaluation from that seed's exports of
its member approaches (baseline members are the built-ins), so it is a per-seed player like an
approach. Its members must be approaches or baselines of the study, its name none of theirs
(nor a built-in's); the members' observation windows are checked when the exports are loaded
(every approach trains on the study's one world, so they agree unless the exports were
changed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bioflux.config import (
    ConfigError,
    Experiment,
    apply_overrides,
    read_sections,
    resolve_path,
    validate,
)
from bioflux.config import _describe as describe_validation_error
from bioflux.ensembles import COMBINE
from bioflux.envs.config import EnvConfig
from bioflux.policies import BUILTINS


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Approach(_Section):
    config: str = Field(
        description="experiment config (packaged name or path): its algorithm "
        "and hyper-parameters; its env, seed, stop and evaluation are replaced"
    )
    set: list[str] = Field(default_factory=list, description="overrides, as `--set` takes them")
    init_from: str | None = Field(
        None,
        description="where this approach's modules start (transfer; docs/study.md): the label "
        "of another approach of the study (each seed's trial starts from that approach's "
        "same-seed final export, trained first) or a model path (training.init_from: an "
        "export, a run folder or a checkpoint); a label wins over a path of the same name",
    )
    compare_to: str | None = Field(
        None,
        description="the from-scratch approach a transfer approach (init_from, or stages in "
        "its config) is compared with in the report's Transfer section; default: the one "
        "approach with the same config and set (training.init_from left out) and no init_from",
    )


class Budget(_Section):
    env_steps: int | None = Field(None, ge=1, description="env steps per (approach, seed)")
    episodes: int | None = Field(None, ge=1, description="episodes per (approach, seed)")
    iterations: int | None = Field(
        None, ge=1, description="iterations (smoke tests only: not the same work per approach)"
    )

    def model_post_init(self, _context: Any) -> None:
        given = [k for k, v in self.model_dump().items() if v is not None]
        if len(given) != 1:
            raise ValueError(
                f"budget: give exactly one of env_steps, episodes, iterations; got {given}"
            )


class StudyEvaluation(_Section):
    episodes: int = Field(100, ge=1, description="episodes per (predator, prey) pairing")
    seed: int = Field(900_001, ge=0, description="episode seed shared by every pairing")
    workers: int | None = Field(
        None,
        ge=1,
        description="processes (Ray tasks, 1 CPU each) that share cross-play's pairings on "
        "the CPU path, each playing one predator's row; null: one per CPU of the Ray cluster",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="where cross-play runs: 'cpu' (the numpy core, 16 worlds at a time), "
        "'cuda' (the torch core: each pairing's episodes at once, world and policies on the "
        "GPU; bioflux.device_rollout), 'auto': cuda when the driver sees a GPU",
    )


class StudyResources(_Section):
    cpus_per_trial: float = Field(1.0, gt=0, description="CPUs Ray Tune reserves per trial")
    env_runners_per_trial: int = Field(
        0, ge=0, description="EnvRunners per trial, 1 CPU each (0: the trial samples itself)"
    )
    gpus_per_trial: float = Field(
        0.0,
        ge=0,
        description="GPUs Ray Tune reserves per trial; a fraction shares one GPU (0.25: four "
        "trials at once per GPU). Each learning approach's learner then trains on it "
        "(resources.num_gpus_per_learner); the Lotka-Volterra search has no learner",
    )
    max_concurrent: int | None = Field(
        None, ge=1, description="trials at once (None: as CPUs and GPUs allow)"
    )


class EcologyRealism(_Section):
    enabled: bool = Field(
        True,
        description="after cross-play, each approach's policies (first training seed) play the "
        "calibrated ecology world and the report gives their cycle statistics beside the "
        "lynx-hare data's (bioflux.study.realism)",
    )
    config: str = Field(
        "ecology_lynx_hare",
        description="the calibrated ecology world (packaged name or path), played at `size`",
    )
    size: int = Field(
        100, ge=10, description="side of the square world in cells; the config's densities"
    )
    steps: int = Field(1200, ge=100, description="steps per episode")
    burn_in: int = Field(200, ge=0, description="first steps left out of the statistics")
    seeds: int = Field(1, ge=1, description="seeds per player (0, 1, ...)")

    @model_validator(mode="after")
    def _burn_in(self) -> EcologyRealism:
        if self.burn_in >= self.steps - 50:
            raise ValueError(f"ecology_realism: burn_in={self.burn_in} leaves < 50 steps")
        return self


class StudyEnsemble(_Section):
    members: list[str] = Field(
        min_length=2,
        description="approach labels or baselines of the study (a label may repeat); for "
        "each training seed, that seed's exports of the approaches are combined",
    )
    combine: str = Field(
        "average", description="average (weighted mean of probabilities) or vote (majority)"
    )
    weights: list[float] | None = Field(
        None, description="one weight > 0 per member, in order (default: equal weights)"
    )

    @field_validator("combine")
    @classmethod
    def _combine(cls, value: str) -> str:
        if value not in COMBINE:
            raise ValueError(f"combine={value!r}; allowed: {list(COMBINE)}")
        return value

    @model_validator(mode="after")
    def _weights(self) -> StudyEnsemble:
        if self.weights is None:
            return self
        if len(self.weights) != len(self.members):
            raise ValueError(
                f"{len(self.members)} members but {len(self.weights)} weights; give one per member"
            )
        bad = [w for w in self.weights if not (math.isfinite(w) and w > 0)]
        if bad:
            raise ValueError(f"weights must be finite and > 0, got {bad}")
        return self

    def member_weights(self) -> list[float]:
        return list(self.weights) if self.weights is not None else [1.0] * len(self.members)


class TransferSettings(_Section):
    threshold: float | None = Field(
        None,
        gt=0,
        description="capture rate during training (the learning curves' smoothed "
        "capture_rate) whose first reach the Transfer section times in target agent-steps; "
        "null: 1.5 x the random-vs-random capture rate of the study's cross-play (needs the "
        "random baseline)",
    )


class StudyConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    env: dict[str, Any] = Field(default_factory=dict)
    budget: Budget
    seeds: list[int] = Field([0, 1], min_length=1)
    approaches: dict[str, Approach] = Field(min_length=1)
    baselines: list[str] = Field(["random"])
    ensembles: dict[str, StudyEnsemble] = Field(default_factory=dict)
    evaluation: StudyEvaluation = Field(default_factory=StudyEvaluation)
    resources: StudyResources = Field(default_factory=StudyResources)
    ecology_realism: EcologyRealism = Field(default_factory=EcologyRealism)
    transfer: TransferSettings = Field(
        default_factory=TransferSettings,
        description="the report's Transfer section (transfer approaches vs from-scratch ones)",
    )

    @field_validator("env")
    @classmethod
    def _valid_env(cls, value: dict[str, Any]) -> dict[str, Any]:
        EnvConfig.from_kwargs(value).require_agent_identity("a study")
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value) or min(value) < 0:
            raise ValueError(f"seeds must be distinct and >= 0, got {value}")
        return value

    @field_validator("baselines")
    @classmethod
    def _builtins(cls, value: list[str]) -> list[str]:
        unknown = set(value) - set(BUILTINS)
        if unknown:
            raise ValueError(f"unknown baseline(s) {sorted(unknown)}; allowed: {sorted(BUILTINS)}")
        return value

    @field_validator("approaches")
    @classmethod
    def _labels(cls, value: dict[str, Approach]) -> dict[str, Approach]:
        for label in value:
            if not label.replace("_", "").isalnum():
                raise ValueError(f"approach label {label!r}: letters, digits and '_' only")
        return value

    def model_post_init(self, _context: Any) -> None:
        clash = set(self.approaches) & set(self.baselines)
        if clash:
            raise ValueError(
                f"{sorted(clash)} is both an approach and a baseline; rename the approach"
            )
        for name, ensemble in self.ensembles.items():
            where = f"ensemble {name!r}"
            if not name.replace("_", "").isalnum():
                raise ValueError(f"{where}: letters, digits and '_' only")
            taken = (
                "an approach"
                if name in self.approaches
                else "a baseline"
                if name in self.baselines
                else "a built-in policy"
                if name in BUILTINS
                else None
            )
            if taken:
                raise ValueError(f"{where}: the name is taken by {taken}; rename the ensemble")
            players = [*self.approaches, *self.baselines]
            unknown = [m for m in ensemble.members if m not in players]
            if unknown:
                raise ValueError(
                    f"{where}: member(s) {unknown} are not approaches or baselines of this "
                    f"study; allowed: {players}"
                )

        self._check_sources()

    def _check_sources(self) -> None:
        """``init_from`` naming an approach: not itself, no cycle; ``compare_to``: another
        approach (which approach labels and paths are told apart in ``load_study``)."""
        labels = list(self.approaches)
        for label, approach in self.approaches.items():
            if approach.init_from == label:
                raise ValueError(
                    f"approach {label!r}: init_from names the approach itself; give another "
                    f"approach ({[a for a in labels if a != label]}) or a model path"
                )
            if approach.compare_to is not None and approach.compare_to not in labels:
                raise ValueError(
                    f"approach {label!r}: compare_to={approach.compare_to!r} is not an "
                    f"approach of this study; allowed: {[a for a in labels if a != label]}"
                )
            if approach.compare_to == label:
                raise ValueError(f"approach {label!r}: compare_to names the approach itself")
        for label in labels:
            chain, at = [label], self.source(label)
            while at is not None:
                if at in chain:
                    cycle = " -> ".join([*chain[chain.index(at) :], at])
                    raise ValueError(f"init_from: a cycle of approaches ({cycle}); break it")
                chain.append(at)
                at = self.source(at)

    def source(self, label: str) -> str | None:
        """The approach whose same-seed model ``label`` starts from (None: none, or a path)."""
        init = self.approaches[label].init_from
        return init if init in self.approaches else None

    def waves(self) -> list[list[str]]:
        """The approaches in training order: wave 0 starts from no approach, wave k from one in
        wave k - 1 (a source's trials finish before its dependents start)."""
        depth: dict[str, int] = {}

        def of(label: str) -> int:
            if label not in depth:
                src = self.source(label)
                depth[label] = 0 if src is None else of(src) + 1
            return depth[label]

        for label in self.approaches:
            of(label)
        return [
            [a for a in self.approaches if depth[a] == k] for k in range(max(depth.values()) + 1)
        ]

    def trials(self) -> list[tuple[str, int]]:
        """Every (approach label, training seed), in a fixed order."""
        return [(label, seed) for label in self.approaches for seed in self.seeds]

    def experiment(self, label: str, seed: int, source_model: str | None = None) -> Experiment:
        """The ``Experiment`` that trains ``label`` with ``seed`` under the study's rules.

        An approach whose ``init_from`` names another approach starts from ``source_model``,
        that approach's same-seed final export (``bioflux.study.trials`` passes it once the
        source trial finished); without it the experiment starts from scratch, as ``--plan``
        times it. A model path in ``init_from`` is always ``training.init_from``. A config
        with ``stages`` (a curriculum) is trained in the trial; its last stage is the study's
        world and trains for the study's budget (``_check_curriculum``)."""
        approach = self.approaches[label]
        path = resolve_path(approach.config)
        data = apply_overrides(read_sections(path), approach.set)
        given = (data.get("training") or {}).get("init_from")
        if approach.init_from is not None and given is not None:
            raise ConfigError(
                f"study approach {label!r}: init_from is given twice, as the approach's "
                "init_from and as training.init_from in its config or set; keep one"
            )
        start = source_model if self.source(label) is not None else approach.init_from
        if start is not None:
            data["training"] = {**(data.get("training") or {}), "init_from": start}
        data.update(
            name=f"{self.name}_{label}_s{seed}",
            seed=seed,
            env=dict(self.env),
            stop={k: v for k, v in self.budget.model_dump().items() if v is not None},
            evaluation={"episodes": self.evaluation.episodes, "seed": self.evaluation.seed},
        )
        resources = dict(data.get("resources") or {})
        resources["num_env_runners"] = self.resources.env_runners_per_trial
        if self.resources.gpus_per_trial and data.get("algorithm") != "lotka_volterra":
            resources["num_gpus_per_learner"] = self.resources.gpus_per_trial
        data["resources"] = resources
        if data.get("algorithm") == "lotka_volterra":
            data.setdefault("training", {})["search"] = "serial"  # the trial is Tune's already
        exp = validate(data, source=f"study approach {label!r} ({path})")
        self._check_seeds(label, exp)
        if exp.stages:
            self._check_curriculum(label, exp)
        return exp

    def _check_curriculum(self, label: str, exp: Experiment) -> None:
        """A curriculum in a study ends in the study's world, for the study's budget: its last
        stage may change no env value and give no stop of its own (earlier stages may)."""
        from bioflux.curriculum import stage_env, stage_names

        last = exp.stages[-1]
        name = stage_names(exp)[-1]
        target = EnvConfig.from_kwargs(self.env).to_dict()
        final = EnvConfig.from_kwargs(stage_env(exp, -1)).to_dict()
        if final != target:
            changed = sorted(k for k in target if final.get(k) != target[k])
            raise ConfigError(
                f"study approach {label!r}: its curriculum's last stage ({name}) changes "
                f"{changed} of the study's world; the last stage must be the study's world "
                "(add a final stage with no env, e.g. {name: target})"
            )
        if last.stop is not None:
            raise ConfigError(
                f"study approach {label!r}: its curriculum's last stage ({name}) has a stop of "
                "its own; the last stage trains for the study's budget, so leave its stop out"
            )

    def is_transfer(self, label: str) -> bool:
        """Whether ``label`` starts from trained modules or trains a curriculum."""
        approach = self.approaches[label]
        if approach.init_from is not None:
            return True
        data = apply_overrides(read_sections(resolve_path(approach.config)), approach.set)
        return bool(data.get("stages")) or (data.get("training") or {}).get("init_from") is not None

    def counterpart(self, label: str) -> str | None:
        """The from-scratch approach ``label`` (a transfer approach) is compared with:
        ``compare_to``, else the one approach with the same config and set (any
        training.init_from entry left out) that is no transfer approach; None: none found."""
        approach = self.approaches[label]
        if approach.compare_to is not None:
            return approach.compare_to

        def plain(a: Approach) -> tuple[str, list[str]]:
            return a.config, [s for s in a.set if not s.strip().startswith("training.init_from")]

        same = [
            other
            for other, a in self.approaches.items()
            if other != label and plain(a) == plain(approach) and not self.is_transfer(other)
        ]
        return same[0] if len(same) == 1 else None

    def transfer_pairs(self) -> list[tuple[str, str]]:
        """(transfer approach, its from-scratch counterpart) for the report, in study order."""
        return [
            (label, self.counterpart(label))  # type: ignore[misc] - checked by load_study
            for label in self.approaches
            if self.is_transfer(label)
        ]

    def check_transfer(self) -> None:
        """One-line ``ConfigError`` for transfer approaches the study cannot run or report:
        a source approach of another algorithm or without RLlib modules, a transfer approach
        with no from-scratch counterpart, a counterpart that is a transfer approach, or no
        threshold and no random baseline to derive it from."""
        from bioflux.algorithms import get_algorithm

        seed = self.seeds[0]
        for label in self.approaches:
            if not self.is_transfer(label):
                continue
            exp = self.experiment(label, seed)
            src = self.source(label)
            if src is not None:
                src_exp = self.experiment(src, seed)
                if not get_algorithm(src_exp.algorithm).trains_through_rllib:
                    raise ConfigError(
                        f"study approach {label!r}: init_from={src!r} trains no RLlib modules "
                        f"({src_exp.algorithm}) to start from"
                    )
                if src_exp.algorithm != exp.algorithm:
                    raise ConfigError(
                        f"study approach {label!r} ({exp.algorithm}): init_from={src!r} is a "
                        f"{src_exp.algorithm} approach; a module starts only from its own "
                        "algorithm's"
                    )
            other = self.counterpart(label)
            if other is None:
                scratch = [a for a in self.approaches if not self.is_transfer(a)]
                raise ConfigError(
                    f"study approach {label!r} is a transfer approach but no approach trains "
                    f"the same config and set from scratch; name one with compare_to (allowed: "
                    f"{scratch})"
                )
            if self.is_transfer(other):
                raise ConfigError(
                    f"study approach {label!r}: compare_to={other!r} is itself a transfer "
                    "approach; compare with one that trains from scratch"
                )
        if (
            any(self.is_transfer(a) for a in self.approaches)
            and self.transfer.threshold is None
            and "random" not in self.baselines
        ):
            raise ConfigError(
                "transfer.threshold: give one (a capture rate), or keep the random baseline, "
                "whose random-vs-random capture rate sets the default (1.5x)"
            )

    def _check_seeds(self, label: str, exp: Experiment) -> None:
        picks = set(self.seeds)
        selection = getattr(exp.params, "selection_seed", None)
        if selection is not None:
            picks.add(selection)
        if self.evaluation.seed in picks:
            raise ConfigError(
                f"study: evaluation.seed={self.evaluation.seed} is also a seed that picks "
                f"{label!r}'s model; evaluate on a seed of its own"
            )


def load_study(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """Read, override (``--set key=value``) and validate a study file; every approach's
    experiment is built once here, so a bad approach fails before Ray starts."""
    path = resolve_path(path)
    data = apply_overrides(read_sections(path), overrides)
    try:
        study = StudyConfig(**data)
    except ValidationError as err:
        raise ConfigError(f"{path}: {describe_validation_error(err)}") from None
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None
    for label, approach in study.approaches.items():  # trials run in other working directories
        approach.config = str(resolve_path(approach.config).resolve())
        init = approach.init_from
        if init is not None and init not in study.approaches:
            if not Path(init).exists():
                others = [a for a in study.approaches if a != label]
                raise ConfigError(
                    f"{path}: approach {label!r}: init_from={init!r} is neither an approach of "
                    f"this study nor an existing model path; allowed approaches: {others}"
                )
            approach.init_from = str(Path(init).resolve())
    for label, seed in study.trials():
        study.experiment(label, seed)
    study.check_transfer()
    return study
