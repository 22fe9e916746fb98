"""Models from shared storage: a models folder given as a URI, mirrored into a local cache.

``bioflux serve --models URI`` (and ``build_app``'s ``models_dir``, ``serve_config.yaml``)
takes, besides a local folder (used in place, as always):

- ``file:///abs/path`` — a folder on a file system every replica's node mounts;
- ``s3://bucket/prefix`` — an S3 (or S3-compatible) prefix, through ``pyarrow.fs`` (the same
  file system layer RLlib's checkpoints use).

The registry never serves from the remote side directly: :class:`MirroredModels` copies the
files the registry can serve — ``<algorithm>/<run>/<final|best>/<species>/...`` and the top
``ensembles.yaml``, nothing else — into a local cache folder, then every local safety check
applies to that copy (names are never paths, no file may resolve outside the folder, symlinks
leaving it are refused). The cache folder is ``<root>/<sha256(URI)[:16]>``, ``<root>`` being
``build_app``'s ``models_cache``, else ``$BIOFLUX_MODELS_CACHE``, else
``$XDG_CACHE_HOME/bioflux/models`` (``~/.cache/bioflux/models``), on the replica's node.

A sync downloads what is new or changed (by size and modification time, which the copy keeps,
so "the newest run" means the same as on the remote side) and deletes local files that are
gone remotely. Refused, never written: object keys that are absolute, hold ``.``/``..``/empty
parts, a backslash or a NUL; for ``file://``, files that resolve (through symlinks) outside the
source folder. When it runs: when a replica starts (a failure there stops the replica: nothing
to serve), before every ``POST /v1/models/{name}/load`` (admin), and from the listings
(``/v1/models``, ``/readyz``, ``/v1/ensembles``, ``/v1/live/options``; off the event loop) at
most every ``settings.MODELS_SYNC_INTERVAL_S`` seconds. Predictions from loaded modules never
wait for a sync (a first load waits for one in progress), and a sync does not reload a loaded
module: its ``POST /v1/models/{name}/load`` does (hot swap), as for a local folder. A
later sync that fails keeps the last good copy serving and is shown by ``/readyz``
(``models_sync``).

Credentials and endpoints (S3): the AWS SDK's usual chain in the replica's environment —
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``), ``AWS_DEFAULT_REGION``
/ ``AWS_REGION``, ``~/.aws/credentials``, instance roles — and ``AWS_ENDPOINT_URL`` for an
S3-compatible server (MinIO, Ceph, moto); pyarrow's URI options work too, e.g.
``s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from bioflux.serve import settings

logger = logging.getLogger("ray.serve")

#: URI schemes a models folder may have.
SCHEMES = ("file", "s3")
#: The one file outside module folders that is mirrored.
_TOP_FILES = ("ensembles.yaml",)
_CHUNK = 1 << 20
#: A temp file of another sync (another replica on this node) younger than this is left alone.
_TEMP_PREFIX = ".bioflux-sync-"
_TEMP_GRACE_S = 600.0


def is_uri(models: Any) -> bool:
    """Whether ``models`` is given as a URI (``scheme://...``) rather than a local path."""
    return isinstance(models, str) and "://" in models


def redacted(uri: str) -> str:
    """``uri`` without credentials or query (for messages and logs)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{parts.path}"


def default_cache_root() -> Path:
    """``$BIOFLUX_MODELS_CACHE``, else ``$XDG_CACHE_HOME/bioflux/models`` (``~/.cache/...``)."""
    explicit = os.environ.get(settings.MODELS_CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "bioflux" / "models"


def cache_dir(uri: str, cache_root: str | Path | None = None) -> Path:
    """The local mirror of ``uri``: ``<cache root>/<sha256(uri)[:16]>``."""
    root = Path(cache_root).expanduser() if cache_root else default_cache_root()
    return root.resolve() / hashlib.sha256(uri.encode()).hexdigest()[:16]


def key_parts(key: str) -> tuple[str, ...]:
    """The parts of a relative object key, or ``ValueError`` when it could leave the folder
    it is copied into (absolute, ``.``/``..``/empty parts, backslash, NUL)."""
    if not key or key.startswith("/"):
        raise ValueError(f"{key!r} is empty or absolute")
    if "\\" in key or "\x00" in key:
        raise ValueError(f"{key!r} holds a backslash or a NUL")
    parts = tuple(key.split("/"))
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{key!r} has an empty, '.' or '..' part")
    return parts


def servable(parts: tuple[str, ...]) -> bool:
    """Whether a file is one the registry reads: inside an exported module folder
    (``<algorithm>/<run>/<final|best>/<species>/...``) or the top ``ensembles.yaml``."""
    from bioflux.artifacts import EXPORT_KINDS
    from bioflux.envs.config import SPECIES

    if parts in {(name,) for name in _TOP_FILES}:
        return True
    return len(parts) >= 5 and parts[2] in EXPORT_KINDS and parts[3] in SPECIES


def check_form(uri: str) -> None:
    """``ValueError`` unless ``uri`` is ``file:///abs/path`` or ``s3://bucket[/prefix]``
    (no I/O)."""
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"models URI {redacted(uri)!r}: scheme {parts.scheme!r} is not supported; use a local "
            "folder, file:///abs/path or s3://bucket/prefix"
        )
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or parts.query:
            raise ValueError(f"models URI {uri!r}: expected file:///abs/path")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ValueError(f"models URI {uri!r}: expected file:///abs/path")
    elif not parts.hostname:
        raise ValueError(f"models URI {redacted(uri)!r}: expected s3://bucket/prefix")


def open_source(uri: str) -> tuple[Any, str]:
    """``(pyarrow file system, base path)`` of a models URI (:func:`check_form` first)."""
    import pyarrow.fs as pafs

    check_form(uri)
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return pafs.LocalFileSystem(), os.path.normpath(unquote(parts.path))
    fs, base = pafs.FileSystem.from_uri(uri)
    return fs, base.rstrip("/")


@dataclass
class SyncReport:
    downloaded: int = 0
    kept: int = 0
    removed: int = 0
    refused: list[str] = field(default_factory=list)


class MirroredModels:
    """A models folder at ``uri`` and its local copy (``local``); :meth:`sync` refreshes it."""

    def __init__(self, uri: str, cache_root: str | Path | None = None):
        self.uri = uri
        self.display = redacted(uri)
        check_form(uri)
        self.local = cache_dir(uri, cache_root)
        #: Held while files change, and by loads that read them (no half-synced module).
        self.lock = threading.RLock()
        self.synced_at = float("-inf")
        self._wall_synced_at: float | None = None
        self.last: SyncReport | None = None
        #: Why the last sync failed (None: it worked); the previous copy keeps serving.
        self.error: str | None = None

    def status(self) -> dict[str, Any]:
        last = self.last
        return {
            "uri": self.display,
            "local": str(self.local),
            "synced_at": self._wall_synced_at,
            "error": self.error,
            "refused": [] if last is None else last.refused[:20],
        }

    def sync(self) -> SyncReport:
        """Mirror the remote folder into :attr:`local` (see the module docstring)."""
        fs, base = open_source(self.uri)
        import pyarrow.fs as pafs

        with self.lock:
            info = fs.get_file_info(base)
            if info.type != pafs.FileType.Directory:
                raise FileNotFoundError(f"models URI {self.display!r} is not a folder")
            report = SyncReport()
            remote = self._listing(fs, base, report)
            self.local.mkdir(parents=True, exist_ok=True, mode=0o700)
            for parts, (path, size, mtime_ns) in remote.items():
                if self._fetch(fs, path, parts, size, mtime_ns):
                    report.downloaded += 1
                else:
                    report.kept += 1
            report.removed = self._prune(set(remote))
            for key in report.refused:
                logger.warning("models sync %s: refused %s", self.display, key)
            self.last, self.error = report, None
            self.synced_at, self._wall_synced_at = time.monotonic(), time.time()
            return report

    # ------------------------------------------------------------------ steps
    def _listing(
        self, fs: Any, base: str, report: SyncReport
    ) -> dict[tuple[str, ...], tuple[str, int, int | None]]:
        """relative parts → (remote path, size, mtime in ns) of every servable file."""
        import pyarrow.fs as pafs

        local_source = isinstance(fs, pafs.LocalFileSystem)
        real_base = os.path.realpath(base) if local_source else ""
        prefix = base.rstrip("/") + "/"
        out: dict[tuple[str, ...], tuple[str, int, int | None]] = {}
        for info in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
            if info.type != pafs.FileType.File:
                continue
            key = info.path[len(prefix) :] if info.path.startswith(prefix) else info.path
            try:
                parts = key_parts(key)
            except ValueError as err:
                report.refused.append(f"key {err}")
                continue
            if not servable(parts):
                continue
            if local_source:
                real = os.path.realpath(info.path)
                if os.path.commonpath([real, real_base]) != real_base:
                    report.refused.append(f"{key!r} resolves outside {self.display} ({real})")
                    continue
            if len(out) >= settings.MAX_SYNC_FILES:
                raise ValueError(
                    f"models URI {self.display!r} holds more than {settings.MAX_SYNC_FILES} "
                    "servable files (settings.MAX_SYNC_FILES)"
                )
            out[parts] = (info.path, int(info.size), info.mtime_ns)
        return out

    def _fetch(
        self, fs: Any, path: str, parts: tuple[str, ...], size: int, mtime_ns: int | None
    ) -> bool:
        """Copy one file unless the local copy has its size and time; True when copied."""
        target = self.local.joinpath(*parts)
        folder = target.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not folder.resolve().is_relative_to(self.local.resolve()):
            raise ValueError(f"local cache folder {folder} resolves outside {self.local}")
        if target.is_symlink() or (target.exists() and not target.is_file()):
            _remove(target)
        elif target.is_file() and mtime_ns is not None:
            st = target.stat()
            if st.st_size == size and st.st_mtime_ns == mtime_ns:
                return False
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=_TEMP_PREFIX)
        try:
            written = 0
            with os.fdopen(fd, "wb") as out, fs.open_input_stream(path) as src:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    if written > size:
                        break
                    out.write(chunk)
            if written != size:
                raise OSError(f"{path}: read {written} bytes, expected {size}")
            if mtime_ns is not None:
                os.utime(tmp, ns=(mtime_ns, mtime_ns))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def _prune(self, keep: set[tuple[str, ...]]) -> int:
        """Delete local files (and then empty folders) that are not in ``keep``."""
        removed = 0
        now = time.time()
        for folder, dirs, files in os.walk(self.local, topdown=False):
            here = Path(folder)
            rel = here.relative_to(self.local).parts
            for name in files + [d for d in dirs if (here / d).is_symlink()]:
                path = here / name
                if (rel + (name,)) in keep and not path.is_symlink():
                    continue
                if name.startswith(_TEMP_PREFIX) and not path.is_symlink():
                    try:
                        if now - path.stat().st_mtime < _TEMP_GRACE_S:
                            continue  # another replica's sync in progress
                    except OSError:
                        continue
                _remove(path)
                removed += 1
            if here != self.local:
                try:
                    here.rmdir()  # only when empty
                except OSError:
                    pass
        return removed


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def check_source(uri: str) -> None:
    """Fail fast (``ValueError``) when a models URI is malformed or not a reachable folder
    (``bioflux serve`` calls it before Ray starts)."""
    import pyarrow.fs as pafs

    try:
        fs, base = open_source(uri)
        info = fs.get_file_info(base)
    except OSError as err:
        raise ValueError(f"models URI {redacted(uri)!r} cannot be read: {err}") from None
    if info.type != pafs.FileType.Directory:
        raise ValueError(f"models URI {redacted(uri)!r} is not a folder (or is empty)")


__all__ = [
    "MirroredModels",
    "SyncReport",
    "cache_dir",
    "check_form",
    "check_source",
    "is_uri",
    "key_parts",
    "open_source",
    "redacted",
    "servable",
]
