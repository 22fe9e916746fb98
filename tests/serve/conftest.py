"""A trained tiny model directory (plus a corrupt one) and the Serve app on a free port."""

from __future__ import annotations

import copy
import shutil
import socket

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def models_dir(ray_session, tmp_path_factory):
    from bioflux import config, training
    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("serve")
    exp = config.validate(copy.deepcopy(TINY))
    training.train(exp, output=root / "runs", models=root / "models", log=lambda _: None)
    models = root / "models"
    broken = models / "ppo" / "broken" / "final" / "predator"
    shutil.copytree(models / "ppo" / "tiny" / "final" / "predator", broken)
    (broken / "module_state.pkl").write_bytes(b"\x80corrupt")
    outside = root / "outside" / "ppo" / "evil" / "final" / "prey"
    shutil.copytree(models / "ppo" / "tiny" / "final" / "prey", outside)
    (models / "ppo" / "evil").symlink_to(root / "outside" / "ppo" / "evil")
    return models


@pytest.fixture(scope="module")
def server(models_dir):
    from ray import serve

    from bioflux.serve.app import start

    port = free_port()
    start(
        models_dir,
        host="127.0.0.1",
        port=port,
        max_batch_size=16,
        batch_wait_timeout_s=0.005,
        name="bioflux_test",
    )
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
