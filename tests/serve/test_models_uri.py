"""Models from a shared-storage URI (issue #18, serving on a cluster): ``file:///abs/path`` and
``s3://bucket/prefix`` mirrored into a local cache, with every local safety check on the copy.

The S3 test runs moto's S3 server as a real subprocess on 127.0.0.1 and ``bioflux serve
--models s3://...`` as a user would, credentials and endpoint from the environment."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from bioflux.serve.storage import key_parts, servable
from tests.serve.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    TouchOnUnpickle,
    export,
    free_port,
    spawn,
    stop,
)

OBS = np.zeros((5, 5, 4), dtype=np.float32)
OBS[2, 2, 1] = 1.0
OBS[..., 3] = 1.0
OBS[0, 2, 2] = 1.0  # a prey two cells straight up
META = {"algorithm": "lv", "env": {"obs_radius": 2}}


def export_lv(models: Path, run: str) -> Path:
    """A Lotka–Volterra run ``lv/<run>`` (both species) exported the way training does."""
    from bioflux.algorithms.lotka_volterra import make_module

    modules = {s: make_module(s) for s in ("predator", "prey")}
    return export(models, "lv", run, "final", modules, {**META, "run": run})


@pytest.fixture
def remote(tmp_path) -> Path:
    models = tmp_path / "remote" / "models"
    export_lv(models, "fit")
    (models / "notes").mkdir()
    (models / "notes" / "big.bin").write_bytes(b"\0" * 1000)  # not a module file: not copied
    return models


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------- keys
@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/b/", "a\\..\\b", "a/\x00b"],
)
def test_object_keys_that_could_leave_the_cache_are_refused(key):
    with pytest.raises(ValueError):
        key_parts(key)


def test_only_module_files_and_ensembles_yaml_are_mirrored():
    assert key_parts("ppo/run/final/prey/module_state.pkl") == (
        "ppo",
        "run",
        "final",
        "prey",
        "module_state.pkl",
    )
    assert servable(key_parts("ppo/run/final/prey/module_state.pkl"))
    assert servable(key_parts("ppo/run/best/predator/sub/x.pt"))
    assert servable(("ensembles.yaml",))
    assert not servable(key_parts("ppo/run/checkpoints/final/learner_group/x.pkl"))
    assert not servable(key_parts("ppo/run/final/wolf/module_state.pkl"))
    assert not servable(key_parts("notes/big.bin"))


# ---------------------------------------------------------------------------- file:// locally
def test_file_uri_is_mirrored_resynced_and_pruned(remote, tmp_path):
    from bioflux.serve import ModelInference

    cache = tmp_path / "cache"
    inf = ModelInference(f"file://{remote}", cache_dir=cache)
    local = inf.registry.root
    assert local.is_relative_to(cache.resolve()) and local != remote.resolve()
    assert files(local) == {f for f in files(remote) if not f.startswith("notes")}
    # the copy keeps the files' times: "the newest run" means the same on both sides
    meta = "lv/fit/final/predator/bioflux.json"
    assert (local / meta).stat().st_mtime_ns == (remote / meta).stat().st_mtime_ns
    here = ModelInference(remote).predict("lv", "predator", OBS)
    there = inf.predict("lv", "predator", OBS)
    assert there["action_name"] == here["action_name"] == "up"
    assert there["probabilities"] == here["probabilities"]

    export_lv(remote, "fit2")  # a new run: served after an admin load re-syncs
    assert inf.load("lv/predator@fit2", sync=True).entry.name == "lv/predator@fit2:final"
    assert (local / "lv/fit2/final/prey/module_state.pkl").is_file()
    report = inf.registry.source.sync()
    assert report.downloaded == 0 and report.removed == 0 and report.kept == len(files(local))

    shutil.rmtree(remote / "lv" / "fit")  # gone remotely: gone from the copy and the index
    (local / "lv" / "fit2" / "final" / "stray.txt").write_text("not remote")
    assert inf.registry.sync() is True
    inf.registry.scan()
    assert not (local / "lv" / "fit").exists()
    assert files(local) == files(remote) - {"notes/big.bin"}
    names = {m["name"] for m in inf.list_models()}
    assert "lv/predator@fit2:final" in names and "lv/predator@fit:final" not in names


def test_a_symlink_leaving_the_source_is_never_copied_nor_unpickled(remote, tmp_path):
    from bioflux.serve import ModelInference
    from bioflux.serve.inference import ModelLoadError

    outside = tmp_path / "outside"
    outside.mkdir()
    marker = tmp_path / "UNPICKLED"
    (outside / "evil.pkl").write_bytes(pickle.dumps(TouchOnUnpickle(str(marker))))
    prey = export_lv(remote, "evil") / "prey"
    (prey / "class_and_ctor_args.pkl").unlink()
    (prey / "class_and_ctor_args.pkl").symlink_to(outside / "evil.pkl")

    inf = ModelInference(f"file://{remote}", cache_dir=tmp_path / "cache", preload=True)
    refused = inf.registry.source.last.refused
    assert any("class_and_ctor_args.pkl" in r and "outside" in r for r in refused), refused
    assert not (inf.registry.root / "lv/evil/final/prey/class_and_ctor_args.pkl").exists()
    with pytest.raises(ModelLoadError):
        inf.get("lv/prey@evil")
    assert not marker.exists(), "the pickle outside the source folder was unpickled"
    assert inf.predict("lv", "prey", OBS, run="fit")["policy"] == "lv/prey@fit:final"


def test_a_failed_resync_keeps_the_last_copy_serving(remote, tmp_path):
    from bioflux.serve import ModelInference

    inf = ModelInference(f"file://{remote}", cache_dir=tmp_path / "cache")
    moved = remote.with_name("moved")
    remote.rename(moved)
    try:
        assert inf.registry.sync() is False
        assert "not a folder" in inf.models_sync()["error"]
        assert inf.predict("lv", "predator", OBS, run="fit")["action_name"] == "up"
    finally:
        moved.rename(remote)
    inf.registry.sync()
    assert inf.models_sync()["error"] is None


def test_unsupported_or_unreachable_uris_are_refused_before_anything_starts(tmp_path):
    from bioflux.cli import main
    from bioflux.serve.app import build_app

    for uri in ("ftp://host/models", "file://host/models", "s3:///no-bucket"):
        with pytest.raises(ValueError):
            build_app({"models_dir": uri})
    assert main(["serve", "--models", f"file://{tmp_path}/missing"]) == 2
    assert main(["serve", "--models", "gs://bucket/models"]) == 2


# ---------------------------------------------------------------------------- file:// over HTTP
@pytest.fixture
def uri_server(ray_session, remote, tmp_path):
    from ray import serve

    from bioflux.serve.app import start

    port = free_port()
    start(
        f"file://{remote}",
        host="127.0.0.1",
        port=port,
        name="bioflux_uri",
        admin_token=ADMIN_TOKEN,
        models_cache=tmp_path / "cache",
    )
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def test_file_uri_served_over_http(uri_server, remote, tmp_path):
    url = uri_server
    r = requests.post(
        url + "/v1/predict", json={"policy": "lv/predator", "observation": OBS.tolist()}, timeout=30
    )
    assert r.status_code == 200, r.text
    assert r.json()["policy"] == "lv/predator@fit:final" and r.json()["action_name"] == "up"
    ready = requests.get(url + "/readyz", timeout=30).json()
    sync = ready["models_sync"]
    assert sync["uri"] == f"file://{remote}" and sync["error"] is None
    assert Path(sync["local"]).is_relative_to((tmp_path / "cache").resolve())

    export_lv(remote, "fit2")  # uploaded while serving: an admin load re-syncs and serves it
    r = requests.post(url + "/v1/models/lv/prey@fit2/load", headers=ADMIN, timeout=60)
    assert r.status_code == 200 and r.json()["loaded"] == "lv/prey@fit2:final", r.text
    r = requests.post(
        url + "/v1/predict",
        json={"policy": "lv/prey@fit2", "observation": OBS.tolist()},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["policy"] == "lv/prey@fit2:final", r.text
    r = requests.post(
        url + "/v1/ensembles",
        json={"name": "mix", "members": {"lv": 1, "random": 1}},
        headers=ADMIN,
        timeout=30,
    )
    assert r.status_code == 422 and "ensembles.yaml" in r.text, r.text


# ---------------------------------------------------------------------------- s3:// (moto)
def wait_http(url: str, proc: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            pass
        if proc.poll() is not None:
            raise AssertionError(
                f"{proc.args[:4]} exited with {proc.returncode}: {log.read_text()[-3000:]}"
            )
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {seconds} s: {log.read_text()[-3000:]}")


@pytest.fixture
def moto_s3(tmp_path):
    """moto's S3 server on a free 127.0.0.1 port: ``(endpoint URL, env with credentials)``."""
    import moto.server  # noqa: F401  (moto[server] is in the test extra: missing fails, never skips)

    port = free_port()
    log = tmp_path / "moto.log"
    proc = spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log)
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "bioflux-test",
        "AWS_SECRET_ACCESS_KEY": "bioflux-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    try:
        wait_http(endpoint + "/moto-api/", proc, log, 60)
        yield endpoint, env
    finally:
        stop(proc)


def upload(client, bucket: str, prefix: str, folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())


def test_s3_uri_served_by_bioflux_serve_from_a_local_s3_server(moto_s3, remote, tmp_path):
    import boto3

    endpoint, aws = moto_s3
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
        region_name=aws["AWS_DEFAULT_REGION"],
    )
    bucket, prefix = "bioflux-models", "team/models"
    s3.create_bucket(Bucket=bucket)
    upload(s3, bucket, prefix, remote)
    evil = ["../../escaped.txt", "lv/fit/final/prey/../../../../../../escaped.pkl"]
    for key in evil:  # keys that would leave the cache folder
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=b"not a model")

    cache = tmp_path / "cache"
    port = free_port()
    log = tmp_path / "serve.log"
    proc = spawn(
        [sys.executable, "-m", "bioflux", "serve", "--port", str(port),
         "--models", f"s3://{bucket}/{prefix}"],
        log,
        env={**os.environ, **aws, "RAY_ADDRESS": "", "BIOFLUX_MODELS_CACHE": str(cache),
             "BIOFLUX_ADMIN_TOKEN": ADMIN_TOKEN},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", proc, log)
        r = requests.post(
            url + "/v1/predict",
            json={"policy": "lv/predator", "observation": OBS.tolist()},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert r.json()["policy"] == "lv/predator@fit:final" and r.json()["action_name"] == "up"
        sync = requests.get(url + "/readyz", timeout=30).json()["models_sync"]
        assert sync["uri"] == f"s3://{bucket}/{prefix}" and sync["error"] is None
        assert len(sync["refused"]) == len(evil), sync
        local = Path(sync["local"])
        assert local.is_relative_to(cache.resolve())
        assert files(local) == {f for f in files(remote) if not f.startswith("notes")}

        export_lv(remote, "fit2")  # a new run uploaded while serving
        upload(s3, bucket, f"{prefix}/lv/fit2", remote / "lv" / "fit2")
        r = requests.post(url + "/v1/models/lv/predator@fit2/load", headers=ADMIN, timeout=60)
        assert r.status_code == 200 and r.json()["loaded"] == "lv/predator@fit2:final", r.text
        r = requests.post(
            url + "/v1/predict/batch",
            json={
                "agents": [
                    {"policy": "lv/predator@fit2", "observation": OBS.tolist()},
                    {"policy": "lv/prey@fit", "observation": OBS.tolist()},
                ]
            },
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert [o["policy"] for o in r.json()] == ["lv/predator@fit2:final", "lv/prey@fit:final"]
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert not list(tmp_path.rglob("escaped*")), "an object key left the cache folder"
