"""``ModelInference``: batched predictions with confidence and reasoning, no Serve needed.

The Serve app (``bioflux.serve.app``) wraps one ``ModelInference`` per replica, so the local
API and the HTTP endpoint give the same answers for the same inputs.

    from bioflux.serve import ModelInference
    inf = ModelInference("models/")
    inf.predict("ppo", "predator", obs)                     # obs: (11, 11, 4) or flattened
    inf.batch_predict([{"policy": "ppo/prey", "observation": obs2}, ...])

Observations are validated against the policy's env and may be given as raw state instead
(``bioflux.serve.observations``, whose names this module also exports).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bioflux.artifacts import module_mtime
from bioflux.envs.config import ACTION_NAMES, N_ACTIONS, SPECIES, EnvConfig
from bioflux.policies import BUILTINS, ModulePolicy, Policy, choose_actions
from bioflux.serve import settings
from bioflux.serve.observations import (
    STATE_KEYS,
    ObservationError,
    observation_from_state,
    observation_window,
    prepare_observation,
    validate_state,
    validate_world,
    world_from_state,
)
from bioflux.serve.registry import (
    ModelEntry,
    ModelRegistry,
    UnknownModelError,
    escaping_path,
    shown,
)
from bioflux.transfer import lineage_from_metadata, public_lineage


class PolicyOutputError(ObservationError):
    """The policy gave no valid action probabilities for this observation (a numerical
    failure: non-finite scores, e.g. from counts far outside anything the env produces)."""


class ModelLoadError(RuntimeError):
    """A checkpoint that exists but cannot be loaded (corrupt, incompatible, refused)."""


@dataclass
class LoadedModel:
    entry: ModelEntry
    policy: Policy
    loaded_at: float
    #: ``module_mtime`` of its files when the load started (0.0: built-in or ensemble).
    files_mtime: float = 0.0


def explain(
    obs: np.ndarray, probs: np.ndarray, action: int, drives: dict[str, np.ndarray] | None = None
) -> str:
    """A short human-readable reason: the choice, the alternatives, what dominates the view
    and, for interpretable policies (Lotka–Volterra), the drive values behind the choice."""
    order = np.argsort(-probs)
    alts = ", ".join(f"{ACTION_NAMES[i]} {probs[i]:.2f}" for i in order[:3] if i != action)
    parts = [f"chose {ACTION_NAMES[action]} (p={probs[action]:.2f}); next: {alts}"]
    if drives:
        parts.append(
            "drives for "
            + ACTION_NAMES[action]
            + ": "
            + ", ".join(
                f"{name} {values[action]:+.2f}"
                for name, values in drives.items()
                if np.any(values != 0)
            )
        )
    s = obs.shape[0] // 2
    for ch, label in ((1, "predator"), (2, "prey")):
        grid = obs[..., ch].copy()
        if label == "predator" and obs[s, s, 3] > 0:  # a predator counts itself
            grid[s, s] = max(grid[s, s] - 1, 0)
        rows, cols = np.nonzero(grid)
        if len(rows) == 0:
            parts.append(f"no {label} in view")
            continue
        d = np.maximum(np.abs(rows - s), np.abs(cols - s))
        k = int(np.argmin(d))
        dr, dc = int(rows[k] - s), int(cols[k] - s)
        where = (
            " ".join(
                w
                for w in (
                    f"{abs(dr)} {'down' if dr > 0 else 'up'}" if dr else "",
                    f"{abs(dc)} {'right' if dc > 0 else 'left'}" if dc else "",
                )
                if w
            )
            or "here"
        )
        parts.append(f"{int(grid.sum(dtype=np.float64))} {label} in view, nearest {where}")
    return "; ".join(parts)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def served_policy(models_dir: str | Path, name: str, species: str) -> Policy:
    """The policy ``bioflux serve`` would answer ``<name>/<species>`` with from ``models_dir``
    (``name``: e.g. an ensemble ``mix``, ``ppo`` or ``ppo@<run>``), for offline use."""
    algorithm, at, run = name.partition("@")
    try:
        return ModelInference(models_dir).get(f"{algorithm}/{species}{at}{run}").policy
    except (UnknownModelError, ModelLoadError) as err:
        raise ValueError(str(err)) from None


class ModelInference:
    """Load-on-demand cache of policies with batched, explained predictions (thread-safe)."""

    def __init__(
        self,
        models_dir: str | Path = "models",
        preload: bool = False,
        cache_dir: str | Path | None = None,
    ):
        """``models_dir``: a local folder or a URI (``file:///abs/path``,
        ``s3://bucket/prefix``) mirrored into a local cache under ``cache_dir``
        (``bioflux.serve.storage``)."""
        self.registry = ModelRegistry(models_dir, cache_dir=cache_dir)
        self._loaded: dict[str, LoadedModel] = {}
        #: full name → why it failed to load (never loaded since): aliases steer around it.
        self.failures: dict[str, str] = {}
        #: When each failed module's files were last changed at the time it failed.
        self._failed_mtime: dict[str, float] = {}
        #: full name → why its last reload failed while an older version kept serving.
        self.reload_errors: dict[str, str] = {}
        self._lock = threading.Lock()
        if preload:
            self.preload()

    # ------------------------------------------------------------ model cache
    def preload(self) -> None:
        """Try to load every discovered module; failures are recorded, not raised."""
        for name, entry in list(self.registry.entries.items()):
            if not entry.builtin:
                try:
                    self.load(name)
                except ModelLoadError:
                    pass

    def _load_policy(self, entry: ModelEntry) -> Policy:
        if entry.ensemble is not None and not entry.error:
            return self._load_ensemble(entry)
        if entry.builtin:
            return BUILTINS[entry.algorithm](entry.species)
        if entry.error:
            raise ValueError(entry.error)
        source = self.registry.source
        if source is None:
            return self._load_checkpoint(entry)
        with source.lock:  # no sync changes the files while they are read
            return self._load_checkpoint(entry)

    def _load_checkpoint(self, entry: ModelEntry) -> Policy:
        problem = escaping_path(entry.path, self.registry.root)  # again: files may have changed
        if problem:
            raise ValueError(f"refused: {problem}")
        return ModulePolicy.from_checkpoint(entry.path, name=entry.name)

    def _load_ensemble(self, entry: ModelEntry) -> Policy:
        """An ensemble from its members (loaded through this cache; reload the ensemble after
        reloading a member)."""
        from bioflux.ensembles import EnsemblePolicy

        spec = entry.ensemble
        members = []
        for name, weight in zip(spec["members"], spec["weights"]):
            try:
                members.append((name, self.get(name).policy, weight))
            except (ModelLoadError, UnknownModelError) as err:
                raise ValueError(f"ensemble member {name!r}: {err}") from None
        return EnsemblePolicy(entry.name, members, spec["combine"])

    def load(self, name: str, sync: bool = False) -> LoadedModel:
        """Load (or reload: hot swap) a policy; in-flight requests finish on the old one.

        A name that is an alias reloads the module the alias serves now. When a reload fails
        while an older version is loaded, that version keeps serving (and the alias stays
        on it); the failure is raised and shown in ``list_models`` as ``reload_error``.
        ``sync``: re-mirror a URI models folder first (``POST /v1/models/{name}/load``)."""
        if sync:
            self.registry.sync()
        self.registry.scan()
        entry = self.resolve(name)
        files_mtime = module_mtime(entry.path) if entry.path is not None else 0.0
        try:
            policy = self._load_policy(entry)
        except ValueError as err:
            msg = str(err.__cause__ or err)
            with self._lock:
                current = self._loaded.get(entry.name)
                if current is not None:
                    self.reload_errors[entry.name] = msg
                else:
                    self.failures[entry.name] = msg
                    if entry.path is not None:
                        self._failed_mtime[entry.name] = module_mtime(entry.path)
            if current is not None:
                raise ModelLoadError(
                    f"reloading policy {entry.name!r} failed: {msg}; the version loaded at "
                    f"{_when(current.loaded_at)} keeps serving"
                ) from None
            note = ""
            if name != entry.name:
                try:
                    note = f" (alias {name!r} now serves {self.resolve(name).name!r})"
                except (UnknownModelError, ModelLoadError):
                    pass
            raise ModelLoadError(f"policy {entry.name!r} failed to load: {msg}{note}") from None
        loaded = LoadedModel(entry, policy, time.time(), files_mtime)
        with self._lock:
            self._loaded[entry.name] = loaded  # atomic swap
            self.failures.pop(entry.name, None)
            self.reload_errors.pop(entry.name, None)
        return loaded

    def reload_changed(self) -> list[str]:
        """Reload every loaded module whose files changed since it was loaded, and return their
        names. This is how a hot swap reaches every replica: each one runs it every
        ``settings.MODEL_RELOAD_INTERVAL_S`` (an admin load reaches only the replica that
        answers it). A URI models folder is re-synced first when its interval has passed. A
        reload that fails keeps the old version serving, as an admin load does."""
        self.registry.refresh()
        reloaded = []
        for name, loaded in list(self._loaded.items()):
            path = loaded.entry.path
            if path is None or module_mtime(path) <= loaded.files_mtime:
                continue
            try:
                self.load(name)
            except (ModelLoadError, UnknownModelError):
                continue  # reload_errors / failures say why
            reloaded.append(name)
        return reloaded

    def unload(self, name: str) -> tuple[str, bool]:
        """Drop a policy from the cache (it loads again on demand). Returns the full name of
        the module unloaded (for an alias: the one it served) and whether it was loaded."""
        entry = self.resolve(name)
        with self._lock:
            was_loaded = self._loaded.pop(entry.name, None) is not None
            self.reload_errors.pop(entry.name, None)
        return entry.name, was_loaded

    def resolve(self, name: str) -> ModelEntry:
        """Registry lookup that steers aliases around checkpoints that failed to load."""
        return self.registry.resolve(name, unhealthy=self.failures)

    def is_loaded(self, name: str) -> bool:
        """Whether ``name`` answers from the cache (no load needed)."""
        return self.resolve(name).name in self._loaded

    def get(self, name: str) -> LoadedModel:
        entry = self.resolve(name)
        loaded = self._loaded.get(entry.name)
        if loaded is None:
            error = self.failures.get(entry.name)
            if (
                error
                and entry.path is not None
                and module_mtime(entry.path) != self._failed_mtime.get(entry.name)
            ):
                self.failures.pop(entry.name, None)  # its files changed since it failed: retry
                error = None
            error = error or entry.error
            if error:
                raise ModelLoadError(f"policy {entry.name!r} failed to load: {error}")
            loaded = self.load(entry.name)
        return loaded

    def define_ensemble(self, name: str, definition: dict[str, Any]) -> list[dict[str, Any]]:
        """Add (or replace) an ensemble in ``<models>/ensembles.yaml`` at run time; it is
        refused, and the file left as it was, when any species' ensemble cannot be built
        (unknown members, different observation windows). Returns its species' entries."""
        from bioflux.ensembles import (
            EnsembleError,
            parse_ensemble,
            restore_ensembles,
            write_ensemble,
        )

        spec = parse_ensemble(name, definition)
        if self.registry.source is not None:
            raise EnsembleError(
                f"the models come from {self.registry.source.display}: define ensembles in its "
                "ensembles.yaml (each replica's local copy is re-synced from there)"
            )
        with self._lock:
            old = write_ensemble(self.registry.root, spec)
            self.registry.scan()
            errors = [
                e.error
                for s in SPECIES
                if (e := self.registry.entries.get(f"{name}/{s}")) is not None and e.error
            ]
            if errors or f"{name}/{SPECIES[0]}" not in self.registry.entries:
                restore_ensembles(self.registry.root, old)
                self.registry.scan()
                raise EnsembleError(errors[0] if errors else f"ensemble {name!r} was not indexed")
            for s in SPECIES:  # a replaced definition must not keep serving the old members
                self._loaded.pop(f"{name}/{s}", None)
        return [e for e in self.list_ensembles() if e["name"].split("/")[0] == name]

    def list_ensembles(self) -> list[dict[str, Any]]:
        """Every ensemble the registry knows, per species, with its members and error."""
        self.registry.refresh()
        return [
            {"name": entry.name, **(entry.ensemble or {}), "error": entry.error}
            for entry in sorted(self.registry.entries.values(), key=lambda e: e.name)
            if entry.ensemble is not None or (entry.error or "").startswith("ensemble ")
        ]

    def models_sync(self) -> dict[str, Any] | None:
        """Where a URI models folder stands (URI, local copy, last sync, error, refused keys);
        None for a local folder."""
        source = self.registry.source
        return None if source is None else source.status()

    def unserved_names(self) -> list[str]:
        """The ``<algorithm>/<species>`` aliases none of whose modules can serve (readiness:
        a broken run does not count while the name clients use still has a healthy module)."""
        broken = {n for n, e in self.registry.entries.items() if e.error} | set(self.failures)
        return sorted(
            alias
            for alias, names in self.registry.candidates.items()
            if "@" not in alias and all(n in broken for n in names)
        )

    def list_models(self) -> list[dict[str, Any]]:
        self.registry.refresh()
        alias_of: dict[str, list[str]] = {}
        for alias, full in self.registry.aliases.items():
            alias_of.setdefault(full, []).append(alias)
        out = []
        for name, e in sorted(self.registry.entries.items()):
            iteration = e.metadata.get("iteration")
            out.append(
                {
                    "name": name,
                    "aliases": sorted(alias_of.get(name, [])),
                    "algorithm": e.algorithm,
                    "species": e.species,
                    "run": e.run,
                    "kind": e.kind,
                    "builtin": e.builtin,
                    "loaded": name in self._loaded,
                    "error": self.failures.get(name) or e.error,
                    "reload_error": self.reload_errors.get(name),
                    "iteration": iteration if isinstance(iteration, int) else None,
                    "observation_window": observation_window(e),
                    # where the module started (bioflux.transfer; None: built-in, ensemble)
                    "lineage": public_lineage(lineage_from_metadata(e.metadata, e.species)),
                }
            )
        return out

    # ------------------------------------------------------------ predictions
    def resolve_observation(
        self, name: str, observation: Any = None, state: dict[str, Any] | None = None
    ) -> tuple[ModelEntry, np.ndarray]:
        """Validate the input for ``name`` and return ``(entry, (S, S, 4) observation)``."""
        entry = self.resolve(name)
        if (observation is None) == (state is None):
            raise ObservationError("give exactly one of 'observation' or 'state'")
        if state is not None:
            return entry, observation_from_state(state, entry.species, entry)
        return entry, prepare_observation(observation, observation_window(entry))

    @staticmethod
    def _failure(full: str, err: Exception) -> Exception:
        """A policy's exception on one observation, as that item's answer: numerical trouble
        (``ValueError``, ``ArithmeticError``: e.g. NaN logits) becomes a
        :class:`PolicyOutputError`; anything else stays as it is (an internal error)."""
        if isinstance(err, (ValueError, ArithmeticError)) and not isinstance(err, ObservationError):
            return PolicyOutputError(
                f"policy {full!r} failed numerically on this observation ({type(err).__name__}:"
                " non-finite or invalid action scores); are its values realistic counts?"
            )
        return err

    def _answers(
        self, model: LoadedModel, full: str, obs: np.ndarray, rng: np.random.Generator, sample: bool
    ) -> list[Any]:
        """One forward pass for ``obs`` ``(M, S, S, 4)``: a result dict or an exception per
        row (rows without valid probabilities fail alone)."""
        probs = np.asarray(model.policy.probabilities(obs), dtype=np.float64)
        if probs.shape != (len(obs), N_ACTIONS):
            raise RuntimeError(
                f"policy {full!r} returned probabilities of shape {probs.shape}; "
                f"expected {(len(obs), N_ACTIONS)}"
            )
        valid = (
            np.isfinite(probs).all(axis=1)
            & (probs >= 0).all(axis=1)
            & (np.abs(probs.sum(axis=1) - 1) < 1e-3)
        )
        safe = np.where(valid[:, None], probs, 1.0 / N_ACTIONS)
        drives_fn = getattr(model.policy, "drives", None)
        drives = drives_fn(obs) if drives_fn else None
        actions = choose_actions(model.policy, safe, rng, greedy=not sample)
        # ensembles: the confidence is the members' agreement; the reasoning lists their votes
        details_fn = getattr(model.policy, "details", None)
        agreement, notes = details_fn(obs, actions) if details_fn else (None, None)
        out: list[Any] = []
        for j in range(len(obs)):
            if not valid[j]:
                out.append(
                    PolicyOutputError(
                        f"policy {full!r} produced no valid action probabilities for this "
                        "observation (non-finite scores); are its values realistic counts?"
                    )
                )
                continue
            try:
                a = int(actions[j])
                out.append(
                    {
                        "policy": full,
                        "action": a,
                        "action_name": ACTION_NAMES[a],
                        "confidence": float(probs[j, a] if agreement is None else agreement[j]),
                        "probabilities": {n: float(p) for n, p in zip(ACTION_NAMES, probs[j])},
                        "reasoning": explain(
                            obs[j], probs[j], a, drives and {k: v[j] for k, v in drives.items()}
                        )
                        + (f"; {notes[j]}" if notes else ""),
                        "degraded": False,
                    }
                )
            except Exception as err:
                out.append(self._failure(full, err))
        return out

    def predict_many(
        self,
        items: list[tuple[str, np.ndarray]],
        sample: bool = False,
        seed: int | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Predict for ``(policy name, validated observation)`` pairs: one forward per policy.

        Each item succeeds or fails on its own: when a shared forward pass raises, its items
        are retried one by one, so one observation that makes a policy fail numerically
        (:class:`PolicyOutputError`) fails alone. With ``return_exceptions`` an item's
        exception takes its place in the result list; otherwise the first one is raised."""
        rng = np.random.default_rng(seed)
        results: list[Any] = [None] * len(items)
        groups: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(items):
            try:
                groups.setdefault(self.resolve(name).name, []).append(i)
            except Exception as err:
                results[i] = err
        for full, idx in groups.items():
            try:
                model = self.get(full)
            except Exception as err:
                for i in idx:
                    results[i] = err
                continue
            by_shape: dict[tuple, list[int]] = {}
            for i in idx:
                by_shape.setdefault(items[i][1].shape, []).append(i)
            for sub in by_shape.values():
                obs = np.stack([items[i][1] for i in sub])
                try:
                    answers = self._answers(model, full, obs, rng, sample)
                except Exception as err:
                    if len(sub) == 1:
                        answers = [self._failure(full, err)]
                    else:  # find the item(s) that made the shared pass fail
                        answers = []
                        for j in range(len(sub)):
                            try:
                                answers += self._answers(model, full, obs[j : j + 1], rng, sample)
                            except Exception as one:
                                answers.append(self._failure(full, one))
                for i, answer in zip(sub, answers):
                    results[i] = answer
        if not return_exceptions:
            for r in results:
                if isinstance(r, Exception):
                    raise r
        return results

    def act_world(
        self,
        state: dict[str, Any],
        policies: dict[str, str],
        sample: bool = False,
        seed: int | None = None,
        details: bool = False,
    ) -> dict[str, Any]:
        """Every listed agent's action in one world state (``POST /v1/act``): the state is
        encoded by the batched core's own code, each species' policy runs once on all its
        agents. ``policies``: species → policy name (species without agents may be left out).
        With ``details``, each agent also gets its probabilities, confidence and reasoning."""
        s = validate_world(state)
        agents = len(s["predators"]) + len(s["prey"])
        if agents > settings.MAX_REQUEST_AGENTS:
            raise ObservationError(
                f"state lists {agents} agents; at most {settings.MAX_REQUEST_AGENTS} "
                "(settings.MAX_REQUEST_AGENTS)"
            )
        counts = {"predator": len(s["predators"]), "prey": len(s["prey"])}
        entries: dict[str, ModelEntry] = {}
        for species, name in policies.items():
            if species not in SPECIES:
                raise ObservationError(f"policies: unknown species {shown(species)}")
            entry = self.resolve(name)
            if entry.species != species:
                raise ObservationError(
                    f"policies.{species}: {entry.name!r} is a {entry.species} policy"
                )
            entries[species] = entry
        missing = [sp for sp in SPECIES if counts[sp] and sp not in entries]
        if missing:
            raise ObservationError(f"policies: no policy for the listed {missing[0]}")
        envs = {sp: e.metadata.get("env") for sp, e in entries.items() if e.metadata.get("env")}
        radii = {sp: int(env.get("obs_radius", EnvConfig.obs_radius)) for sp, env in envs.items()}
        if len(set(radii.values())) > 1:
            raise ObservationError(f"policies see different observation windows: {radii}")
        env = next(iter(envs.values()), {})
        world = world_from_state(s, env if isinstance(env, dict) else {})
        rng = np.random.default_rng(seed)
        out: dict[str, Any] = {}
        for species, entry in entries.items():
            n = counts[species]
            first = 0 if species == "predator" else world.n_pred_slots
            slots = np.arange(first, first + n)
            obs = world.observe(np.zeros(n, dtype=np.int64), slots)
            model = self.get(entry.name)
            answer: dict[str, Any] = {"policy": entry.name, "actions": []}
            if n:
                if details:
                    rows = self._answers(model, entry.name, obs, rng, sample)
                    bad = next((r for r in rows if isinstance(r, Exception)), None)
                    if bad is not None:
                        raise bad
                    answer["actions"] = [r["action"] for r in rows]
                    answer["details"] = rows
                else:
                    probs = np.asarray(model.policy.probabilities(obs), dtype=np.float64)
                    if not np.isfinite(probs).all():
                        raise PolicyOutputError(
                            f"policy {entry.name!r} produced no valid action probabilities "
                            "for this state (non-finite scores)"
                        )
                    actions = choose_actions(model.policy, probs, rng, greedy=not sample)
                    answer["actions"] = actions.astype(int).tolist()
            out[species] = answer
        return out

    def predict(
        self,
        algorithm: str,
        species: str,
        obs: Any = None,
        run: str | None = None,
        state: dict[str, Any] | None = None,
        sample: bool = False,
    ) -> dict[str, Any]:
        """One prediction for ``<algorithm>/<species>[@run]``."""
        if species not in SPECIES:
            raise ObservationError(f"species={species!r} is unknown; allowed: {SPECIES}")
        name = f"{algorithm}/{species}" + (f"@{run}" if run else "")
        entry, arr = self.resolve_observation(name, obs, state)
        return self.predict_many([(entry.name, arr)], sample=sample)[0]

    def batch_predict(
        self, requests: list[dict[str, Any]], sample: bool = False
    ) -> list[dict[str, Any]]:
        """Many agents, each ``{"policy": name, "observation": ... | "state": ...}``."""
        items = [
            self.resolve_observation(r["policy"], r.get("observation"), r.get("state"))
            for r in requests
        ]
        return self.predict_many([(e.name, o) for e, o in items], sample=sample)


__all__ = [
    "STATE_KEYS",
    "ModelInference",
    "ModelLoadError",
    "ObservationError",
    "PolicyOutputError",
    "UnknownModelError",
    "explain",
    "observation_from_state",
    "observation_window",
    "prepare_observation",
    "validate_state",
    "validate_world",
    "world_from_state",
]
