"""The model registry: what can be served, discovered by scanning the models directory.

Layout: exported models as ``bioflux.artifacts`` writes and finds them
(``<models>/<algorithm>/<run>/<kind>/<species>/``, an RLlib module and its ``bioflux.json``).
Every module gets a full name and aliases:

- ``<algorithm>/<species>@<run>:<kind>`` — one exact module (``kind`` is ``final`` or ``best``);
- ``<algorithm>/<species>@<run>`` — that run's ``final`` (else ``best``);
- ``<algorithm>/<species>`` — the newest run's ``final``.

Built-ins are always there: ``random/predator``, ``random/prey``, ``lotka_volterra/...``. Their
names are never shadowed: a fitted Lotka–Volterra run is reached as
``lotka_volterra/<species>@<run>``, while ``lotka_volterra/<species>`` stays the built-in.
Ensembles defined in ``<models>/ensembles.yaml`` (``bioflux.ensembles``) are listed as
``<name>/<species>``, their members resolved at each scan; an ensemble whose members are
unknown, ensembles themselves, or see different observation windows is listed with an
``error`` and refused.

A module whose ``bioflux.json`` is not a readable JSON object (or describes an env that does
not validate) is listed with an ``error`` and never loaded; only that module is affected, and
aliases skip it while another candidate exists.

Security:

- **A checkpoint is code.** RLlib pickles modules (``class_and_ctor_args.pkl``,
  ``module_state.pkl``), and loading one runs whatever the pickle says. Only trusted users may
  write to the models directory; the server's limits below do not make a hostile checkpoint
  safe, they only keep requests from reaching files outside the directory.
- Names from requests are only ever looked up in the index built by the scan (and must match
  :data:`NAME_PATTERN` in full); they are never joined into paths.
- A module is refused (listed with an ``error``) when its folder or any file or folder in it
  resolves outside the models directory (symlinks) or is not a regular file or folder (FIFOs,
  devices): :func:`escaping_path`, checked at every scan and again right before a load.
- Folders whose names no request could address (outside ``[A-Za-z0-9_.-]``) are skipped.

Models from shared storage: ``models_dir`` may be a URI (``file:///abs/path``,
``s3://bucket/prefix``). The registry then mirrors it into a local cache folder
(``bioflux.serve.storage``: unsafe object keys refused, only module files copied) and indexes
that copy, with every check above. :meth:`ModelRegistry.sync` re-mirrors it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioflux.artifacts import EXPORT_KINDS, exported_modules, read_metadata
from bioflux.ensembles import EnsembleError, check_windows, read_ensembles
from bioflux.envs.config import SPECIES, EnvConfig
from bioflux.policies import BUILTINS
from bioflux.serve import settings
from bioflux.serve.storage import MirroredModels, is_uri

logger = logging.getLogger("ray.serve")

_PART = r"[A-Za-z0-9_.-]+"
#: What a policy name may look like, matched in full (anything else is rejected before any
#: lookup; ``fullmatch`` with ``\Z``, so a trailing newline does not slip through ``$``).
NAME_PATTERN = re.compile(
    rf"{_PART}/(?:{'|'.join(SPECIES)})(?:@{_PART}(?::(?:{'|'.join(EXPORT_KINDS)}))?)?\Z"
)
_PART_PATTERN = re.compile(rf"{_PART}\Z")
#: The env keys of ``bioflux.json`` that serving reads (the observation encoder's settings).
SERVED_ENV_KEYS = ("obs_radius", "capture_radius", "reproduce_energy", "ecology")


class UnknownModelError(KeyError):
    """No servable policy has this name."""

    def __str__(self) -> str:
        return str(self.args[0])


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages that echo client input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def valid_name(name: Any) -> bool:
    """Whether ``name`` is a well-formed policy name (:data:`NAME_PATTERN`, in full)."""
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None


@dataclass(frozen=True)
class ModelEntry:
    name: str  # full name
    algorithm: str
    species: str
    run: str | None = None
    kind: str | None = None
    path: Path | None = None  # None for built-ins
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    mtime: float = 0.0
    error: str | None = None  # why this module cannot be served (bad metadata, unsafe files)

    @property
    def builtin(self) -> bool:
        return self.path is None and self.ensemble is None

    @property
    def ensemble(self) -> dict[str, Any] | None:
        """An ensemble's ``combine``, ``members`` (full names) and ``weights``, else None."""
        value = self.metadata.get("ensemble")
        return value if isinstance(value, dict) else None


def escaping_path(folder: Path, root: Path) -> str | None:
    """Why ``folder`` may not be loaded, or None: the first path in it (itself included) that
    resolves outside ``root`` or is neither a regular file nor a folder. Symlinks inside
    ``root`` are followed (each real folder once)."""
    root = root.resolve()
    stack, seen, count = [folder], set(), 0
    while stack:
        path = stack.pop()
        try:
            real = path.resolve()
            if not real.is_relative_to(root):
                return f"{path} resolves outside the models directory ({real})"
            if real in seen:
                continue
            seen.add(real)
            children = list(path.iterdir())
        except (OSError, RuntimeError) as err:  # unreadable, symlink loop
            return f"{path} cannot be checked: {err}"
        for child in children:
            count += 1
            if count > settings.MAX_MODULE_FILES:
                return f"{folder} holds more than {settings.MAX_MODULE_FILES} files"
            try:
                real = child.resolve()
                if not real.is_relative_to(root):
                    return f"{child} resolves outside the models directory ({real})"
                if child.is_dir():
                    stack.append(child)
                elif not child.is_file():
                    return f"{child} is not a regular file"
            except (OSError, RuntimeError) as err:
                return f"{child} cannot be checked: {err}"
    return None


def metadata_problem(meta: dict[str, Any]) -> str | None:
    """Why a ``bioflux.json`` object cannot be served from, or None."""
    env = meta.get("env")
    if env is None:
        return None
    if not isinstance(env, dict):
        return "bioflux.json 'env' is not an object"
    try:
        cfg = EnvConfig.from_kwargs({k: env[k] for k in SERVED_ENV_KEYS if k in env})
    except (TypeError, ValueError, OverflowError) as err:
        return f"bioflux.json 'env' is invalid: {shown(str(err), 200)}"
    if cfg.obs_size > settings.MAX_OBSERVATION_SIDE:
        return (
            f"bioflux.json 'env.obs_radius'={cfg.obs_radius} gives a {cfg.obs_size}-cell window; "
            f"the server takes at most {settings.MAX_OBSERVATION_SIDE} "
            "(settings.MAX_OBSERVATION_SIDE)"
        )
    return None


class ModelRegistry:
    """Index of servable policies under ``models_dir`` (rescanned on demand).

    ``models_dir``: a local folder, or a URI (``file:///abs/path``, ``s3://bucket/prefix``)
    mirrored into ``<cache_dir>/<hash>`` first (default cache root:
    ``bioflux.serve.storage.default_cache_root``); the sync raises when it fails here."""

    def __init__(self, models_dir: str | Path, cache_dir: str | Path | None = None):
        #: The remote models folder and its local copy (None: ``models_dir`` is local).
        self.source = MirroredModels(str(models_dir), cache_dir) if is_uri(models_dir) else None
        if self.source is not None:
            self.source.sync()
        self.root = (self.source.local if self.source else Path(models_dir)).resolve()
        self.entries: dict[str, ModelEntry] = {}
        self.candidates: dict[str, list[str]] = {}
        self._scanned_at = float("-inf")
        #: Why ``ensembles.yaml`` as a whole cannot be read (None: fine or absent).
        self.ensembles_error: str | None = None
        self.scan()

    def _entry(self, module: Any) -> ModelEntry | None:
        """The entry of one exported module (with ``error`` set when it cannot be served)."""
        if not all(_PART_PATTERN.fullmatch(p) for p in (module.algorithm, module.run)):
            return None  # no request could name it
        name = f"{module.algorithm}/{module.species}@{module.run}:{module.kind}"
        args = (name, module.algorithm, module.species, module.run, module.kind)
        try:
            resolved = module.folder.resolve()
            mtime = module.metadata_file.stat().st_mtime
        except (OSError, RuntimeError):
            return None  # vanished or a symlink loop
        if not resolved.is_relative_to(self.root):
            return None  # the module folder is a symlink pointing outside the models directory
        problem = escaping_path(module.folder, self.root)
        if problem:
            return ModelEntry(*args, resolved, {}, mtime, f"refused: {problem}")
        try:
            meta = read_metadata(module.folder)
        except (ValueError, OSError) as err:
            return ModelEntry(*args, resolved, {}, mtime, str(err))
        return ModelEntry(*args, resolved, meta, mtime, metadata_problem(meta))

    def scan(self) -> None:
        entries: dict[str, ModelEntry] = {}
        for builtin in BUILTINS:
            for species in SPECIES:
                name = f"{builtin}/{species}"
                entries[name] = ModelEntry(name, builtin, species)
        found = [e for e in map(self._entry, exported_modules(self.root)) if e is not None]
        aliases: dict[str, list[str]] = {}
        # run alias → final, then best; algorithm alias → newest run's final first
        for entry in sorted(found, key=lambda e: (e.kind != "final", -e.mtime)):
            aliases.setdefault(f"{entry.algorithm}/{entry.species}@{entry.run}", []).append(
                entry.name
            )
        for entry in sorted(found, key=lambda e: (e.kind != "final", -e.mtime)):
            alias = f"{entry.algorithm}/{entry.species}"
            if alias not in entries:  # a built-in's name is never shadowed by a trained run
                aliases.setdefault(alias, []).append(entry.name)
        entries.update({e.name: e for e in found})
        self.entries, self.candidates = entries, aliases
        self._scanned_at = time.monotonic()
        self._add_ensembles()

    def _add_ensembles(self) -> None:
        """Index the ensembles of ``ensembles.yaml`` (members resolved now)."""
        specs, self.ensembles_error = read_ensembles(self.root)
        taken = {e.algorithm for e in self.entries.values()}
        entries = dict(self.entries)
        for name, spec in specs.items():
            if not _PART_PATTERN.fullmatch(name):
                continue
            for species in SPECIES:
                full = f"{name}/{species}"
                meta: dict[str, Any] = {}
                error = f"ensemble {name!r}: {spec}" if isinstance(spec, str) else None
                if error is None and name in taken:
                    error = f"ensemble {name!r}: the name is taken by a policy"
                if error is None:
                    try:
                        meta = self._ensemble_metadata(spec, species)
                    except (UnknownModelError, EnsembleError) as err:
                        error = f"ensemble {name!r}: {err}"
                entries[full] = ModelEntry(full, name, species, metadata=meta, error=error)
        self.entries = entries

    def _ensemble_metadata(self, spec: Any, species: str) -> dict[str, Any]:
        members = [self.resolve(m) for m in spec.member_names(species)]
        for m in members:
            if m.ensemble is not None:
                raise EnsembleError(f"member {m.name!r} is an ensemble")
            if m.error:
                raise EnsembleError(f"member {m.name!r} cannot be served: {m.error}")
        windows = [
            2 * int(env.get("obs_radius", EnvConfig.obs_radius)) + 1
            if isinstance(env := m.metadata.get("env"), dict)
            else None
            for m in members
        ]
        window = check_windows([m.name for m in members], windows)
        meta: dict[str, Any] = {
            "ensemble": {
                "combine": spec.combine,
                "members": [m.name for m in members],
                "weights": spec.weights,
            }
        }
        if window is not None:
            meta["env"] = {"obs_radius": (window - 1) // 2}
        return meta

    def sync(self, force: bool = True) -> bool:
        """Re-mirror a URI models folder (no-op for a local one; without ``force`` only when
        the last sync is ``settings.MODELS_SYNC_INTERVAL_S`` old). A failure is logged and
        kept in ``source.error``, the last good copy keeps serving. True: files changed."""
        src = self.source
        if src is None:
            return False
        if not force and time.monotonic() - src.synced_at < settings.MODELS_SYNC_INTERVAL_S:
            return False
        try:
            report = src.sync()
        except Exception as err:
            src.synced_at = time.monotonic()  # not again at once: the interval applies
            src.error = f"{type(err).__name__}: {shown(str(err), 300)}"
            logger.warning("models sync from %s failed: %s", src.display, src.error)
            return False
        return bool(report.downloaded or report.removed)

    def refresh(self) -> None:
        """Rescan unless the last scan is under ``settings.RESCAN_MIN_INTERVAL_S`` old (for the
        open listing endpoints, so a flood of them is not a flood of directory scans); a URI
        models folder is re-synced first when ``settings.MODELS_SYNC_INTERVAL_S`` has passed."""
        if self.sync(force=False):
            self.scan()
        elif time.monotonic() - self._scanned_at >= settings.RESCAN_MIN_INTERVAL_S:
            self.scan()

    @property
    def aliases(self) -> dict[str, str]:
        """Alias → the full name it points to when every module is healthy."""
        return {alias: names[0] for alias, names in self.candidates.items()}

    def resolve(self, name: str, unhealthy: Container[str] = ()) -> ModelEntry:
        """The entry for a full name or alias; rescans once before giving up (at most once per
        ``settings.RESCAN_MIN_INTERVAL_S`` for names not in the index).

        An alias skips modules listed in ``unhealthy`` (failed to load) or with an ``error``
        while another candidate exists, so a corrupt newest checkpoint does not take its alias
        down.
        """
        if not valid_name(name):
            raise UnknownModelError(
                f"invalid policy name {shown(name)}: expected '<algorithm>/<predator|prey>"
                f"[@<run>[:final|:best]]', e.g. 'ppo/predator' or 'random/prey'"
            )
        for attempt in range(2):
            entries = self.entries
            names = self.candidates.get(name, [name])
            full = next(
                (
                    n
                    for n in names
                    if n not in unhealthy and n in entries and entries[n].error is None
                ),
                names[0],
            )
            if full in entries:
                return entries[full]
            if (
                attempt == 0
                and time.monotonic() - self._scanned_at >= settings.RESCAN_MIN_INTERVAL_S
            ):
                self.scan()
        available = sorted(set(self.entries) | set(self.aliases))
        raise UnknownModelError(f"unknown policy {shown(name)}; available: {available}")
