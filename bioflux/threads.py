"""Threads per process role, set deliberately in one place.

PyTorch starts one intra-op thread per core in every process. For BioFlux's small MLPs (a few
thousand rows through two layers of 128) extra threads buy little, and on a machine with other
work they spin and fight over the cores: a 10-seed ``bioflux simulate`` took minutes instead of
seconds on 2 busy cores. So each kind of process uses what its work needs:

================================  ==========================================================
process                           torch intra-op threads
================================  ==========================================================
inference: ``evaluate``,          ``INFERENCE_THREADS`` (1), or ``$BIOFLUX_INFERENCE_THREADS``
``render``, ``simulate``,         (``use_inference_threads``, called by the CLI before the
``view``, the ``study`` driver    command runs, and by ``bioflux demo`` before it evaluates)
(cross-play), the demo's
evaluation
Serve replicas                    the same (``PolicyServer`` calls ``use_inference_threads``)
EnvRunners, Tune trials,          Ray sets ``OMP_NUM_THREADS`` to the actor's ``num_cpus``
remote learners                   (``resources.num_cpus_per_env_runner``, 1 by default;
                                  ``num_cpus_per_learner``)
the training driver (the          PyTorch's default, every core: with ``num_learners: 0``
learner when ``num_learners``     the driver is the learner, and synchronous sampling and
is 0)                             learning alternate, so the SGD step gets the cores while
                                  the EnvRunners wait
================================  ==========================================================

Setting ``OMP_NUM_THREADS`` yourself still applies to every process that does not call
``use_inference_threads``.
"""

from __future__ import annotations

import os

#: Intra-op threads of a process that only runs inference.
INFERENCE_THREADS = 1
#: Environment variable that overrides ``INFERENCE_THREADS``.
INFERENCE_THREADS_ENV = "BIOFLUX_INFERENCE_THREADS"


def inference_threads() -> int:
    """``$BIOFLUX_INFERENCE_THREADS`` when set to a positive integer, else 1."""
    value = os.environ.get(INFERENCE_THREADS_ENV, "")
    try:
        n = int(value)
    except ValueError:
        return INFERENCE_THREADS
    return n if n >= 1 else INFERENCE_THREADS


def use_inference_threads() -> int:
    """Give this process ``inference_threads()`` torch intra-op threads; returns the number."""
    import torch

    n = inference_threads()
    torch.set_num_threads(n)
    return n
