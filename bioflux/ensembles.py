"""Ensembles of policies: several members' action probabilities combined into one policy.

``EnsemblePolicy`` is a ``Policy`` (``probabilities(obs)``) built from members that are
policies themselves:

- ``combine="average"``: the weighted mean of the members' probabilities;
- ``combine="vote"``: each member votes for its most likely action with its weight; the
  probabilities are the vote shares and the action is the argmax (``deterministic``), ties going
  to the action first in ``ACTION_NAMES`` order (stay, up, down, left, right), whatever the
  members' order.

``details(obs, actions)`` gives what serving reports besides the probabilities: the confidence
is the members' agreement (the weight share of members whose own most likely action is the
chosen one) and the reasoning lists every member's vote. Members must see the same observation
window: an ensemble whose members' windows differ is refused (``EnsembleError``).

Ensembles are defined in ``<models>/ensembles.yaml`` and served under ``<name>/<species>``
(``bioflux.serve.registry``), one per species, each member being ``<member>/<species>``::

    ensembles:
      mix:                      # served as mix/predator and mix/prey
        combine: average        # or vote
        members:                # policy names without the species, with weights
          ppo: 2.0
          lotka_volterra: 1.0   # ppo@<run> or ppo@<run>:best name one run's module
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bioflux.envs.config import ACTION_NAMES, SPECIES
from bioflux.policies import Policy

#: The file under the models directory that defines ensembles.
ENSEMBLES_FILE = "ensembles.yaml"
COMBINE = ("average", "vote")
_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")
_MEMBER = re.compile(r"[A-Za-z0-9_.-]+(?:@[A-Za-z0-9_.-]+(?::(?:final|best))?)?\Z")


class EnsembleError(ValueError):
    """An ensemble that cannot be built (bad definition, members' windows differ)."""


@dataclass(frozen=True)
class EnsembleSpec:
    """One ensemble of ``ensembles.yaml``: members are policy names without the species."""

    name: str
    combine: str
    members: tuple[tuple[str, float], ...]

    def member_names(self, species: str) -> list[str]:
        """The members' full policy names for ``species`` (``ppo@run`` → ``ppo/prey@run``)."""
        out = []
        for member, _ in self.members:
            algorithm, at, run = member.partition("@")
            out.append(f"{algorithm}/{species}{at}{run}")
        return out

    @property
    def weights(self) -> list[float]:
        return [w for _, w in self.members]


def parse_ensemble(name: Any, value: Any) -> EnsembleSpec:
    """One ensemble's definition → ``EnsembleSpec`` (``EnsembleError`` naming the problem)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise EnsembleError(f"ensemble name {name!r} must match [A-Za-z0-9_.-]+")
    where = f"ensemble {name!r}"
    if not isinstance(value, dict):
        raise EnsembleError(f"{where}: expected a mapping with 'members' (and 'combine')")
    unknown = sorted(str(k) for k in value if k not in ("combine", "members"))
    if unknown:
        raise EnsembleError(f"{where}: unknown key(s) {unknown}; allowed: combine, members")
    combine = value.get("combine", "average")
    if combine not in COMBINE:
        raise EnsembleError(f"{where}: combine={combine!r}; allowed: {list(COMBINE)}")
    members = value.get("members")
    if isinstance(members, list):  # a list of names: equal weights
        members = {m: 1.0 for m in members} if all(isinstance(m, str) for m in members) else None
    if not isinstance(members, dict) or len(members) < 2:
        raise EnsembleError(f"{where}: 'members' must map at least 2 policy names to weights")
    out = []
    for member, weight in members.items():
        if not isinstance(member, str) or not _MEMBER.fullmatch(member):
            raise EnsembleError(
                f"{where}: member {member!r} must be a policy name without the species, e.g. "
                "'ppo', 'lotka_volterra' or 'ppo@<run>'"
            )
        if member.partition("@")[0] == name:
            raise EnsembleError(f"{where}: an ensemble cannot be its own member")
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not (math.isfinite(weight) and weight > 0)
        ):
            raise EnsembleError(f"{where}: member {member!r} weight {weight!r} must be > 0")
        out.append((member, float(weight)))
    return EnsembleSpec(name, combine, tuple(out))


def read_ensembles(models_dir: str | Path) -> tuple[dict[str, EnsembleSpec | str], str | None]:
    """The ensembles of ``<models_dir>/ensembles.yaml``: name → spec, or → why it is refused
    (one bad ensemble does not take the others down); and a problem with the whole file."""
    import yaml

    path = Path(models_dir) / ENSEMBLES_FILE
    if not path.is_file():
        return {}, None
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        return {}, f"{path}: cannot be read: {' '.join(str(err).split())[:200]}"
    if not isinstance(data, dict) or not isinstance(data.get("ensembles", {}), dict):
        return {}, f"{path}: expected 'ensembles:' mapping names to definitions"
    out: dict[str, EnsembleSpec | str] = {}
    for name, value in (data.get("ensembles") or {}).items():
        try:
            out[str(name)] = parse_ensemble(name, value)
        except EnsembleError as err:
            out[str(name)] = str(err)
    return out, None


def write_ensemble(models_dir: str | Path, spec: EnsembleSpec) -> str | None:
    """Add or replace ``spec`` in ``<models_dir>/ensembles.yaml`` (written atomically);
    returns the file's previous text (None: there was none), for ``restore_ensembles``."""
    import yaml

    path = Path(models_dir) / ENSEMBLES_FILE
    old = path.read_text("utf-8") if path.is_file() else None
    data = (yaml.safe_load(old) if old else None) or {}
    if not isinstance(data, dict) or not isinstance(data.get("ensembles", {}), dict):
        raise EnsembleError(f"{path} is not an 'ensembles:' mapping; fix it by hand first")
    data.setdefault("ensembles", {})
    data["ensembles"] = dict(data["ensembles"] or {})
    data["ensembles"][spec.name] = {"combine": spec.combine, "members": dict(spec.members)}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    tmp.replace(path)
    return old


def restore_ensembles(models_dir: str | Path, old: str | None) -> None:
    """Put back what ``write_ensemble`` replaced."""
    path = Path(models_dir) / ENSEMBLES_FILE
    if old is None:
        path.unlink(missing_ok=True)
    else:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(old, "utf-8")
        tmp.replace(path)


def check_windows(names: Sequence[str], windows: Sequence[int | None]) -> int | None:
    """The members' common observation window (None: any, all built-ins), or
    ``EnsembleError`` when they differ."""
    seen = {w for w in windows if w is not None}
    if len(seen) > 1:
        sizes = ", ".join(f"{n} {w}x{w}" for n, w in zip(names, windows) if w is not None)
        raise EnsembleError(
            f"the members' observation windows differ ({sizes}): an ensemble's members must "
            "see the same window"
        )
    return seen.pop() if seen else None


class EnsemblePolicy:
    """Members' probabilities combined by weighted averaging or weighted majority vote."""

    def __init__(
        self,
        name: str,
        members: Sequence[tuple[str, Policy, float]],
        combine: str = "average",
        windows: Sequence[int | None] | None = None,
    ):
        if combine not in COMBINE:
            raise EnsembleError(f"combine={combine!r}; allowed: {list(COMBINE)}")
        if len(members) < 2:
            raise EnsembleError(f"ensemble {name!r} needs at least 2 members")
        self.member_names = [m for m, _, _ in members]
        if windows is not None:
            check_windows(self.member_names, windows)
        weights = np.array([w for _, _, w in members], dtype=np.float64)
        if not (np.isfinite(weights).all() and (weights > 0).all()):
            raise EnsembleError(f"ensemble {name!r}: weights must be finite and > 0")
        self.name = name
        self.combine = combine
        self.members = [p for _, p, _ in members]
        self.weights = weights / weights.sum()
        self.deterministic = combine == "vote"

    def member_probabilities(self, obs: np.ndarray) -> np.ndarray:
        """``(K members, M, N_ACTIONS)``."""
        return np.stack([np.asarray(p.probabilities(obs), dtype=np.float64) for p in self.members])

    def _combine(self, member_probs: np.ndarray) -> np.ndarray:
        if self.combine == "average":
            return np.einsum("k,kma->ma", self.weights, member_probs)
        votes = member_probs.argmax(axis=2)  # (K, M)
        shares = np.zeros(member_probs.shape[1:])
        rows = np.arange(votes.shape[1])
        for k, w in enumerate(self.weights):
            shares[rows, votes[k]] += w
        return shares

    def probabilities(self, obs: np.ndarray) -> np.ndarray:
        return self._combine(self.member_probabilities(obs))

    def details(self, obs: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Per row: the agreement (weight share of members whose most likely action is
        ``actions[row]``) and a line listing every member's vote."""
        member_probs = self.member_probabilities(obs)
        votes = member_probs.argmax(axis=2)  # (K, M)
        actions = np.asarray(actions)
        agreement = (self.weights[:, None] * (votes == actions[None, :])).sum(axis=0)
        notes = []
        for j in range(len(actions)):
            parts = [
                f"{name} {ACTION_NAMES[votes[k, j]]} (p={member_probs[k, j, votes[k, j]]:.2f}, "
                f"w={self.weights[k]:.2f})"
                for k, name in enumerate(self.member_names)
            ]
            notes.append(
                f"{self.combine} of {len(parts)} members, agreement {agreement[j]:.2f}; votes: "
                + ", ".join(parts)
            )
        return agreement, notes


def build_ensemble(
    spec: EnsembleSpec,
    species: str,
    policies: Sequence[Policy],
    windows: Sequence[int | None] | None = None,
) -> EnsemblePolicy:
    """``spec``'s policy for ``species`` from its loaded members (in ``spec.members`` order)."""
    if species not in SPECIES:
        raise EnsembleError(f"species={species!r} is unknown; allowed: {SPECIES}")
    names = spec.member_names(species)
    if len(policies) != len(names):
        raise EnsembleError(f"ensemble {spec.name!r}: {len(names)} members, {len(policies)} given")
    members = [(n, p, w) for n, p, w in zip(names, policies, spec.weights)]
    return EnsemblePolicy(f"{spec.name}/{species}", members, spec.combine, windows)


__all__ = [
    "COMBINE",
    "ENSEMBLES_FILE",
    "EnsembleError",
    "EnsemblePolicy",
    "EnsembleSpec",
    "build_ensemble",
    "check_windows",
    "parse_ensemble",
    "read_ensembles",
]
