"""Quiet logs: the Ray notices that ask nothing of the user are dropped
(``bioflux.artifacts.BENIGN_RAY_LOGS``), and nothing else is."""

from __future__ import annotations

import logging

import pytest

from bioflux.artifacts import BENIGN_RAY_LOGS, quiet_benign_ray_logs


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


@pytest.mark.parametrize(
    "logger, message",
    [
        ("ray._private.worker", "Started a local Ray instance."),
        ("ray.serve", 'Started Serve in namespace "serve".'),
        ("ray.serve", "Application 'bioflux' is ready at http://127.0.0.1:35385/."),
        ("ray.serve", "Throughput optimized Ray Serve enabled with the following configurations:"),
        (
            "ray.tune.trainable.trainable",
            "Trainable.setup took 110.2 seconds. If your trainable "
            "is slow to initialize, consider setting reuse_actors=True to reduce actor creation "
            "overheads.",
        ),
    ],
)
def test_benign_notices_are_dropped_and_others_kept(logger, message):
    quiet_benign_ray_logs()
    log = logging.getLogger(logger)
    collect = _Collect()
    log.addHandler(collect)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        log.info(message)
        log.warning("a replica failed its health check")
    finally:
        log.removeHandler(collect)
        log.setLevel(old_level)
    assert collect.seen == ["a replica failed its health check"]


def test_every_entry_names_a_logger_and_a_text():
    assert all(name.startswith("ray") and text for name, text in BENIGN_RAY_LOGS)


def test_tune_console_output_is_the_legacy_one_that_honours_verbose(monkeypatch):
    """Tune's new console output prints a configuration box and a tensorboard hint even with
    ``verbose=0``; the legacy one is silent there. A value the user set is kept."""
    import os

    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    quiet_benign_ray_logs()
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "1")
    quiet_benign_ray_logs()
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "1"
