"""The Ray session of a BioFlux process: connect to a cluster or start a local Ray
(:func:`init_ray`), with the same string-hash seed in every worker (``TRAINING_HASH_SEED``) and
Ray's benign log lines dropped (``BENIGN_RAY_LOGS``)."""

from __future__ import annotations

import logging
import os

#: Ray log lines that every normal run prints and that need no action: (logger, text).
BENIGN_RAY_LOGS = (
    # Ray 2.60's RLModule.__init__ itself builds the deprecated RLModuleConfig, so every module
    # (ours included, built with observation_space/action_space/model_config) triggers it once
    ("ray._common.deprecation", "RLModule(config=[RLModuleConfig object])"),
    # a notice that RLlib's default (the new API stack) is in use
    ("ray.rllib.algorithms.algorithm_config", "on the new API stack! This is the new default"),
    ("ray.tune.utils.util", "Install gputil for GPU system monitoring"),
    # the local Ray that BioFlux starts has token authentication on (the safe default); a
    # cluster *without* it is still reported
    ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled"),
    # every command that starts Ray said so; BioFlux prints its own progress instead
    ("ray._private.worker", "Started a local Ray instance"),
    # Tune's advice to reuse actors: trials here are one-off trainings, there is nothing to reuse
    ("ray.tune.trainable.trainable", "consider setting reuse_actors=True"),
    # Tune's bookkeeping after every search; the run folder already says where results are
    ("ray.tune.tune", "Wrote the latest version of all result files"),
    # Ray Serve's start-up notices (`bioflux serve` prints the one address it listens on;
    # "ready at" names Serve's internal router port, which the user never chose)
    ("ray.serve", "Throughput optimized Ray Serve enabled"),
    ("ray.serve", "Started Serve in namespace"),
    ("ray.serve", "Connecting to existing Serve app in namespace"),
    ("ray.serve", "is ready at http"),
)


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_benign_ray_logs() -> None:
    """Drop ``BENIGN_RAY_LOGS`` from this process's logging (also run in every Ray worker
    that ``init_ray`` starts, as its setup hook), and Ray Tune's console reporter: Tune 2.60's
    new output prints a "Configuration for experiment" box and a ``tensorboard --logdir`` hint
    whatever ``verbose`` says; its legacy output honours ``verbose=0``, which BioFlux's
    searches and studies use (they print their own progress lines). A value you set is kept."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name, text in BENIGN_RAY_LOGS:
        logger = logging.getLogger(name)
        if not any(getattr(f, "text", None) == text for f in logger.filters):
            logger.addFilter(_DropMessage(text))


#: ``PYTHONHASHSEED`` of every process that trains: RLlib iterates sets of agent IDs (e.g. the
#: agents to act), whose order follows the string-hash seed; fixed, a seed gives the same run.
TRAINING_HASH_SEED = "0"


def init_ray(
    address: str | None = None, num_cpus: int | None = None, log_to_driver: bool = True
) -> bool:
    """Connect to ``address``/``RAY_ADDRESS`` or start a local Ray; True if we started it.

    ``log_to_driver=False`` keeps the workers' stdout/stderr out of this process's output
    (they stay in Ray's session logs), for callers that log to files of their own."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    quiet_benign_ray_logs()
    workers = {
        # the hook's path from before this module existed: it resolves in every BioFlux
        # version (``artifacts`` forwards it here), so workers may run an older install
        "worker_process_setup_hook": "bioflux.artifacts.quiet_benign_ray_logs",
        "env_vars": {"PYTHONHASHSEED": TRAINING_HASH_SEED},
    }
    if address:
        ray.init(address=address, log_to_driver=log_to_driver, runtime_env=workers)
    else:
        ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            log_to_driver=log_to_driver,
            runtime_env=workers,
        )
    return True
