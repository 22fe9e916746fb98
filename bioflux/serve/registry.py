"""The model registry: what can be served, discovered by scanning the models directory.

Layout: exported models as ``bioflux.artifacts`` writes and finds them
(``<models>/<algorithm>/<run>/<kind>/<species>/``, an RLlib module and its ``bioflux.json``).
Every module gets a full name and aliases:

- ``<algorithm>/<species>@<run>:<kind>`` — one exact module (``kind`` is ``final`` or ``best``);
- ``<algorithm>/<species>@<run>`` — that run's ``final`` (else ``best``);
- ``<algorithm>/<species>`` — the newest run's ``final``.

Built-ins are always there: ``random/predator``, ``random/prey``.

Security: names from requests are only ever looked up in the index built by the scan; they
are never joined into paths, and modules whose resolved path leaves the models directory
(symlinks) are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioflux.artifacts import EXPORT_KINDS, exported_modules, read_metadata
from bioflux.envs.config import SPECIES
from bioflux.policies import BUILTINS

#: What a policy name may look like (anything else is rejected before any lookup).
NAME_PATTERN = re.compile(
    rf"^[A-Za-z0-9_.-]+/({'|'.join(SPECIES)})(@[A-Za-z0-9_.-]+(:({'|'.join(EXPORT_KINDS)}))?)?$"
)


class UnknownModelError(KeyError):
    """No servable policy has this name."""

    def __str__(self) -> str:
        return str(self.args[0])


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

    @property
    def builtin(self) -> bool:
        return self.path is None


class ModelRegistry:
    """Index of servable policies under ``models_dir`` (rescanned on demand)."""

    def __init__(self, models_dir: str | Path):
        self.root = Path(models_dir).resolve()
        self.entries: dict[str, ModelEntry] = {}
        self.candidates: dict[str, list[str]] = {}
        self.scan()

    def scan(self) -> None:
        entries: dict[str, ModelEntry] = {}
        for builtin in BUILTINS:
            for species in SPECIES:
                name = f"{builtin}/{species}"
                entries[name] = ModelEntry(name, builtin, species)
        found: list[ModelEntry] = []
        for module in exported_modules(self.root):
            try:
                resolved = module.folder.resolve()
                mtime = module.metadata_file.stat().st_mtime
            except OSError:
                continue
            if not resolved.is_relative_to(self.root):
                continue  # a symlink pointing outside the models directory
            try:
                meta = read_metadata(module.folder)
            except ValueError:
                meta = {}
            name = f"{module.algorithm}/{module.species}@{module.run}:{module.kind}"
            found.append(
                ModelEntry(
                    name,
                    module.algorithm,
                    module.species,
                    module.run,
                    module.kind,
                    resolved,
                    meta,
                    mtime,
                )
            )
        aliases: dict[str, list[str]] = {}
        # run alias → final, then best; algorithm alias → newest run's final first
        for entry in sorted(found, key=lambda e: (e.kind != "final", -e.mtime)):
            aliases.setdefault(f"{entry.algorithm}/{entry.species}@{entry.run}", []).append(
                entry.name
            )
        for entry in sorted(found, key=lambda e: (e.kind != "final", -e.mtime)):
            aliases.setdefault(f"{entry.algorithm}/{entry.species}", []).append(entry.name)
        entries.update({e.name: e for e in found})
        self.entries, self.candidates = entries, aliases

    @property
    def aliases(self) -> dict[str, str]:
        """Alias → the full name it points to when every module is healthy."""
        return {alias: names[0] for alias, names in self.candidates.items()}

    def resolve(self, name: str, unhealthy: Container[str] = ()) -> ModelEntry:
        """The entry for a full name or alias; rescans once before giving up.

        An alias skips modules listed in ``unhealthy`` (failed to load) while another
        candidate exists, so a corrupt newest checkpoint does not take its alias down.
        """
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise UnknownModelError(
                f"invalid policy name {name!r}: expected '<algorithm>/<predator|prey>"
                f"[@<run>[:final|:best]]', e.g. 'ppo/predator' or 'random/prey'"
            )
        for attempt in range(2):
            names = self.candidates.get(name, [name])
            full = next((n for n in names if n not in unhealthy), names[0])
            if full in self.entries:
                return self.entries[full]
            if attempt == 0:
                self.scan()
        raise UnknownModelError(
            f"unknown policy {name!r}; available: {sorted(self.entries) + sorted(self.aliases)}"
        )
