"""Experiment configs: YAML files validated once, before Ray starts.

An experiment file has these sections (unknown keys anywhere are rejected, naming the key)::

    name: ppo_demo            # run name: runs/<name>/ and models/<algorithm>/<name>/
    algorithm: ppo            # a key of bioflux.algorithms.ALGORITHMS
    seed: 0
    env: {...}                # arguments of predator_prey_v0 (bioflux.envs.EnvConfig)
    training: {...}           # the algorithm's hyper-parameters (its ``Params`` model)
    resources: {...}          # EnvRunners, vectorised envs per runner, fault tolerance
    stop: {...}               # iterations / env_steps / episodes / time_s (first reached wins)
    checkpoint: {...}         # frequency, keep, score
    evaluation: {...}         # episodes and seed used by `bioflux evaluate` / `bioflux demo`
    stages: [...]             # optional curriculum: [{name, env: {...}, stop: {...}}, ...]
    lotka_volterra: {...}     # optional: the built-in LV policies' coefficients in this world

A curriculum (``stages``) trains stage after stage in one run folder, each stage in the world
``env`` updated with the stage's ``env`` (merged into the top-level ``env``, not into the
previous stage's) until the stage's ``stop`` (the top-level ``stop`` when it gives none); see
``bioflux.curriculum``. Every stage must keep stage 1's observation window (``obs_radius``).

``--set section.key=value`` overrides any value (the value is parsed as YAML).

``load_for_policies`` builds the experiment that ``evaluate``, ``render`` and ``simulate`` play
trained policies in: by default the env a model was trained in (``trained_env``), and it checks
that the world gives every model its observation window.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bioflux.envs.config import SPECIES, EnvConfig


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, validate_assignment=True)


class Resources(_Section):
    env_runner: Literal["batched", "columnar", "transitions", "multi_agent"] = Field(
        "batched",
        description="the sampler. batched: BatchedCoreEnvRunner (the batched numpy core, one "
        "episode object per agent trajectory; maddpg: its joint transitions); columnar (ppo): "
        "the same core, per-species columns with advantages computed on the EnvRunners, "
        "straight to the learner; transitions (epsilon_greedy): the same core, flat "
        "transitions into a flat replay (epsilon_greedy still reads 'columnar', its old name, "
        "as this); multi_agent: RLlib's MultiAgentEnvRunner over the RLlib env adapter",
    )
    env_device: Literal["cpu", "cuda"] | None = Field(
        None,
        description="PPO with env_runner columnar: step the worlds with the torch core on this "
        "device, in the learner's process, with the learner's own modules (cuda: needs "
        "num_gpus_per_learner >= 1; cpu: a GPU-free run of the same path). null: the numpy "
        "core on the EnvRunners. num_envs_per_env_runner is then the number of worlds",
    )
    num_env_runners: int = Field(1, ge=0, description="Ray workers that sample (0: the driver)")
    num_envs_per_env_runner: int = Field(1, ge=1, description="vectorised envs per EnvRunner")
    num_cpus_per_env_runner: float = Field(1.0, gt=0)
    restart_failed_env_runners: bool = Field(True, description="replace crashed EnvRunners")
    max_num_env_runner_restarts: int = Field(100, ge=0)
    num_learners: int = Field(
        0, ge=0, description="remote Learner workers (0: one learner in the driver; >1: DDP)"
    )
    num_gpus_per_learner: float = Field(
        0.0, ge=0, description="GPUs per Learner (with num_learners 0: the driver's learner)"
    )
    num_cpus_per_learner: float | None = Field(
        None, gt=0, description="CPUs per remote Learner (None: RLlib's default, 1)"
    )


class Stop(_Section):
    iterations: int | None = Field(None, ge=1)
    env_steps: int | None = Field(None, ge=1)
    episodes: int | None = Field(None, ge=1)
    time_s: float | None = Field(None, gt=0)

    def model_post_init(self, _context: Any) -> None:
        if all(v is None for v in self.model_dump().values()):
            raise ValueError("stop: give at least one of iterations, env_steps, episodes, time_s")


class Checkpointing(_Section):
    frequency: int = Field(5, ge=1, description="checkpoint every N iterations (and at the end)")
    keep: int = Field(3, ge=1, description="keep the last K periodic checkpoints (+ the best)")
    score: Literal["predator_return", "prey_return"] = "predator_return"


class Evaluation(_Section):
    episodes: int = Field(20, ge=1)
    seed: int = 1000


class Stage(_Section):
    """One stage of a curriculum (``stages:``): an env override and a stop criterion."""

    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]+$", description="default: stageN (N counts from 1)"
    )
    env: dict[str, Any] = Field(
        default_factory=dict, description="merged into the experiment's env for this stage"
    )
    stop: Stop | None = Field(
        None, description="when this stage ends, counted within the stage (default: stop)"
    )


class Experiment(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    algorithm: str
    seed: int = 0
    env: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    stop: Stop
    checkpoint: Checkpointing = Field(default_factory=Checkpointing)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    stages: list[Stage] | None = Field(
        None, description="a curriculum: train stage after stage (bioflux.curriculum)"
    )
    lotka_volterra: dict[str, dict[str, float]] | None = Field(
        None,
        description="coefficients of the built-in lotka_volterra policies when they play this "
        "world, per species, e.g. {predator: {temperature: 0.5}, prey: {beta: 1.2}}; the ones "
        "left out take bioflux.policy_modules.lotka_volterra.DEFAULTS",
    )

    @field_validator("env")
    @classmethod
    def _valid_env(cls, value: dict[str, Any]) -> dict[str, Any]:
        EnvConfig.from_kwargs(value)
        return value

    @field_validator("lotka_volterra")
    @classmethod
    def _valid_lotka_volterra(
        cls, value: dict[str, dict[str, float]] | None
    ) -> dict[str, dict[str, float]] | None:
        if value is not None:
            from bioflux.policy_modules.lotka_volterra import check_coefficients

            for species, coefficients in value.items():
                if species not in SPECIES:
                    raise ValueError(f"{species}: unknown species; allowed: {list(SPECIES)}")
                check_coefficients(coefficients, where=species)
        return value

    @property
    def env_config(self) -> EnvConfig:
        return EnvConfig.from_kwargs(self.env)

    @property
    def params(self) -> BaseModel:
        """The algorithm's validated hyper-parameters."""
        from bioflux.algorithms import get_algorithm

        training = {k: v for k, v in self.training.items() if k != "init_from"}
        return get_algorithm(self.algorithm).Params(**training)

    @property
    def init_from(self) -> dict[str, str]:
        """``training.init_from`` as ``{species: path}`` (``bioflux.transfer``); a plain path
        names every species."""
        from bioflux.transfer import init_from_spec

        return init_from_spec(self.training.get("init_from"), list(SPECIES))

    def to_dict(self) -> dict[str, Any]:
        """The experiment as a config dict (``stages`` and ``lotka_volterra`` left out when
        unset)."""
        unset = {k for k in ("stages", "lotka_volterra") if getattr(self, k) is None}
        return self.model_dump(mode="json", exclude=unset or None)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
    node[keys[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a copy of ``data``."""
    data = copy.deepcopy(data)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. training.lr=1e-3")
        _set_path(data, key.strip(), yaml.safe_load(raw))
    return data


def validate(data: dict[str, Any], source: str = "config") -> Experiment:
    """Validate a config dict (and the algorithm's hyper-parameters) or raise ``ConfigError``."""
    from bioflux.algorithms import ALGORITHMS

    try:
        exp = Experiment(**data)
    except ValidationError as err:
        raise ConfigError(f"{source}: " + _describe(err)) from None
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    if exp.algorithm not in ALGORITHMS:
        raise ConfigError(
            f"{source}: algorithm={exp.algorithm!r} is unknown; allowed: {sorted(ALGORITHMS)}"
        )
    try:
        exp.params  # noqa: B018 - validates the training section
    except ValidationError as err:
        raise ConfigError(f"{source}: " + _describe(err, prefix="training")) from None
    try:
        exp.init_from  # noqa: B018 - validates training.init_from
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    if exp.stages is not None:
        from bioflux.curriculum import check_stages

        try:
            check_stages(exp)
        except ValueError as err:
            raise ConfigError(f"{source}: {err}") from None
    return exp


def _describe(err: ValidationError, prefix: str = "") -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(e["loc"]))
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        msg = msg.removeprefix("Value error, ")
        if e["type"] == "missing":
            msg = "required key is missing"
        parts.append(f"{loc or '(top level)'}: {msg}")
    return "; ".join(parts)


def read_sections(path: Path) -> dict[str, Any]:
    """A config file's top-level mapping of sections, or ``ConfigError``."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def load(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    """Read, override and validate an experiment file.

    ``path`` may also be the name of a packaged config (``demo``, ``ppo``, ...).
    """
    path = resolve_path(path)
    data = read_sections(path)
    if "approaches" in data:
        raise ConfigError(f"{path} is a study config: run it with `bioflux study --config {path}`")
    return validate(apply_overrides(data, overrides), source=str(path))


def resolve_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    packaged = resources.files("bioflux.configs").joinpath(f"{Path(path).stem}.yaml")
    if packaged.is_file():
        return Path(str(packaged))
    raise ConfigError(f"config {str(path)!r} not found (a file, or one of: {packaged_names()})")


def packaged_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files("bioflux.configs").iterdir()
        if p.name.endswith(".yaml")
    )


# ---------------------------------------------------------------------------- the world of a model
def window(obs_radius: int) -> str:
    """``"an 11x11 window (obs_radius 5)"``: the observation window an ``obs_radius`` gives."""
    side = 2 * int(obs_radius) + 1
    article = "an" if str(side).startswith(("8", "11", "18")) else "a"
    return f"{article} {side}x{side} window (obs_radius {obs_radius})"


def trained_env(spec: str | Path, species: str) -> dict[str, Any] | None:
    """The env a trained policy (a path, as ``bioflux.policies.load_policy`` takes it) was
    trained in: its export's ``bioflux.json``, else the ``config.yaml`` of the run folder holding
    its checkpoint. None for built-ins, missing paths and modules with no record of their env."""
    from bioflux.artifacts import RunFolder, find_module_dir, read_metadata

    path = Path(spec)
    if not path.exists():
        return None  # a built-in, or an error that load_policy reports
    folder = find_module_dir(path, species)
    if folder is None:
        return None
    env = read_metadata(folder).get("env")
    if isinstance(env, dict):
        return env
    for parent in folder.resolve().parents:  # a checkpoint inside a run folder
        run = RunFolder(parent)
        if run.config.is_file() and run.checkpoints.is_dir():
            try:
                exp = load(run.config)
                if exp.stages:  # a curriculum's checkpoint: the last stage's world
                    from bioflux.curriculum import stage_env

                    return EnvConfig.from_kwargs(stage_env(exp, -1)).to_dict()
                return exp.env_config.to_dict()
            except ConfigError:
                return None
    return None


def load_for_policies(
    path: str | Path | None,
    overrides: list[str] | None,
    policies: dict[str, str | Path],
    default: str,
    env_updates: dict[str, Any] | None = None,
) -> tuple[Experiment, str | None]:
    """The experiment that ``evaluate``, ``render`` and ``simulate`` play ``policies``
    (species → spec) in, and a note to show the user (None when there is nothing to say).

    With ``path`` None (no ``--config``) and a trained policy among ``policies``, the world is
    the env that policy was trained in (the predator's when both are trained), updated with
    ``env_updates`` (e.g. ``{"ecology": True}`` for simulations); the other sections come from
    the packaged config ``default``. Without a trained policy, ``default`` is loaded as it is.
    ``overrides`` apply last. ``ConfigError`` when the predator and prey models were trained on
    different observation windows, or when the world's window is not a model's."""
    trained = {
        species: (str(spec), env)
        for species, spec in policies.items()
        if (env := trained_env(spec, species)) is not None
    }
    radius = {
        s: int(env.get("obs_radius", EnvConfig.obs_radius)) for s, (_, env) in trained.items()
    }
    if len(set(radius.values())) > 1:
        (s1, (p1, _)), (s2, (p2, _)) = trained.items()
        raise ConfigError(
            f"{p1} ({s1}) was trained with {window(radius[s1])} but {p2} ({s2}) with "
            f"{window(radius[s2])}: no world gives both"
        )
    note = None
    if path is None and trained:
        species, (spec, env) = next(iter(trained.items()))
        data = yaml.safe_load(resolve_path(default).read_text()) or {}
        data["env"] = {**env, **(env_updates or {})}
        exp = validate(apply_overrides(data, overrides), source=f"the env of {spec}")
        e = exp.env_config
        note = (
            f"playing in the world {spec} was trained in ({e.height}x{e.width}, "
            f"{e.n_predators} predators, {e.n_prey} prey, obs_radius {e.obs_radius}"
            + (", ecology mode" if env_updates and env_updates.get("ecology") else "")
            + "); --config chooses another"
        )
        source = f"the env of {spec}"
    else:
        exp = load(default if path is None else path, overrides)
        source = f"--config {default if path is None else path}"
    set_radius = [o for o in overrides or [] if o.partition("=")[0].strip() == "env.obs_radius"]
    if set_radius:
        source = f"--set {set_radius[-1]}"
    world = exp.env_config.obs_radius
    for spec, env in trained.values():
        r = int(env.get("obs_radius", EnvConfig.obs_radius))
        if r != world:
            side = 2 * world + 1
            raise ConfigError(
                f"{spec} was trained with {window(r)} but the world gives {side}x{side} "
                f"(obs_radius {world}, from {source})"
            )
    return exp, note
