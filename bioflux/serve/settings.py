"""Serving defaults, each in one place: the CLI (``bioflux serve``), the app builder
(``build_app``, which ``serve_config.yaml`` calls) and ``start`` read them from here."""

from __future__ import annotations

#: Folder scanned for exported models.
MODELS_DIR = "models"
#: Interface the HTTP port binds to (loopback unless asked otherwise).
HOST = "127.0.0.1"
PORT = 8000
#: Most concurrent ``/v1/predict`` requests that share one forward pass.
MAX_BATCH_SIZE = 32
#: How long a batch waits for more requests before it runs (seconds).
BATCH_WAIT_TIMEOUT_S = 0.002
NUM_REPLICAS = 1
