"""Putting the Serve app on the network: Ray Serve's HTTP options (its proxy, the direct
ingress, HAProxy), deploying the app (:func:`start`), and the lifecycle of ``bioflux serve``
(:func:`serve_until_stopped`: Ray up, app deployed, wait for a signal, Ray down)."""

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from ray import serve

from bioflux.serve import settings
from bioflux.serve.app import build_app

#: Name of the Serve application ``start`` deploys (and ``bioflux serve`` removes on exit).
SERVE_APP_NAME = "bioflux"


def enable_direct_ingress(port: int) -> int:
    """Make the (single) replica itself listen on ``port``, skipping Serve's HTTP proxy hop.

    Uses Ray Serve 2.60's experimental direct ingress inside its documented
    ``RAY_SERVE_THROUGHPUT_OPTIMIZED`` mode (user code runs on the replica's main event loop
    instead of a second thread, no per-request log to stderr, GC frozen after start-up); must
    run before Ray starts in this process (the flags are read when Serve's actors start).
    Returns a free port for Serve's own ingress router (``http_options``), which stays
    available as a slower second door. With several replicas each would need its own port:
    use the proxy mode then.
    """
    import os
    import socket

    os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
    os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] = str(port)
    os.environ["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] = str(port + 1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def enable_haproxy_ingress() -> None:
    """Serve HTTP through Ray Serve 2.60's HAProxy ingress (experimental there), which replays
    a request on another replica when its replica dies without answering
    (``settings.HAPROXY_RETRY_ON``): with 2 or more replicas a SIGKILLed replica loses no
    request. HAProxy's Prometheus frontend (``:9101``, all interfaces) stays off (the app's own
    ``/metrics`` remains); its read-only stats page binds ``*:8404`` (Ray's template: firewall
    it). Must run before Ray starts in this process; on a cluster set the same variables in
    ``ray start``'s environment on every node."""
    import os

    os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    os.environ["RAY_SERVE_HAPROXY_RETRY_ON"] = settings.HAPROXY_RETRY_ON
    os.environ["RAY_SERVE_HAPROXY_METRICS_ENABLED"] = "0"


def start(
    models_dir: str | Path,
    host: str = settings.HOST,
    port: int = settings.PORT,
    max_batch_size: int = settings.MAX_BATCH_SIZE,
    batch_wait_timeout_s: float = settings.BATCH_WAIT_TIMEOUT_S,
    num_replicas: int = settings.NUM_REPLICAS,
    name: str = SERVE_APP_NAME,
    admin_token: str | None = None,
    models_cache: str | Path | None = None,
) -> None:
    """Start Serve on ``host:port`` and deploy the app (Ray must be initialised).

    ``admin_token``: bearer token of the admin endpoints (default ``$BIOFLUX_ADMIN_TOKEN``).
    ``models_dir``: a folder or a URI (``build_app``); ``models_cache``: where a URI is
    mirrored."""
    serve.start(
        http_options={"host": host, "port": port},
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
    )
    serve.run(
        build_app(
            {
                "models_dir": str(models_dir),
                "max_batch_size": max_batch_size,
                "batch_wait_timeout_s": batch_wait_timeout_s,
                "num_replicas": num_replicas,
                "admin_token": admin_token,
                "models_cache": str(models_cache) if models_cache else None,
            }
        ),
        name=name,
        route_prefix="/",
        blocking=False,
    )


def serve_until_stopped(
    models: str,
    *,
    address: str | None = None,
    host: str = settings.HOST,
    port: int = settings.PORT,
    replicas: int = settings.NUM_REPLICAS,
    direct_ingress: bool | None = None,
    haproxy: bool = False,
    max_batch_size: int = settings.MAX_BATCH_SIZE,
    batch_wait_timeout_s: float = settings.BATCH_WAIT_TIMEOUT_S,
    admin_token: str | None = None,
    announce: Callable[[str], None] = lambda line: print(line, flush=True),
) -> None:
    """``bioflux serve``: choose the ingress, start Ray (``address``/``RAY_ADDRESS``, or a local
    one), deploy the app on ``host:port`` and serve until SIGINT/SIGTERM; then remove the app
    from a shared cluster, or take the local Ray down (with Serve's controller, proxy and
    replicas, in ~1 s where ``serve.shutdown()`` waits for a graceful drain of 35-50 s).

    ``direct_ingress``: None picks it wherever it works (a local Ray, one replica, no HAProxy).
    """
    import ray

    local = not (address or os.environ.get("RAY_ADDRESS"))
    direct = direct_ingress
    if direct is None:  # the fast mode wherever it works: a local Ray with one replica
        direct = local and replicas == 1 and not haproxy
    if haproxy:
        if direct:
            raise ValueError("--haproxy and --direct-ingress exclude each other")
        if not local:
            raise ValueError(
                "--haproxy sets up a local Ray; on a cluster set RAY_SERVE_ENABLE_HA_PROXY=1 "
                "in `ray start`'s environment (README: Serving on the cluster)"
            )
        enable_haproxy_ingress()
    serve_port = port
    if direct:
        if not local or replicas != 1:
            raise ValueError("--direct-ingress needs a local Ray (no --address) and 1 replica")
        serve_port = enable_direct_ingress(port)
    from bioflux.ray_session import init_ray

    init_ray(address)  # as training does: the benign Ray notices are dropped everywhere
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        start(
            models,
            host=host,
            port=serve_port,
            max_batch_size=max_batch_size,
            batch_wait_timeout_s=batch_wait_timeout_s,
            num_replicas=replicas,
            admin_token=admin_token,
        )
        announce(
            f"serving {models} on http://{host}:{port} (docs: /docs; "
            f"{'direct ingress' if direct else 'HAProxy' if haproxy else 'Serve proxy'}); "
            "Ctrl-C stops"
        )
        stop.wait()
    finally:
        if address:  # a shared cluster: remove our app, leave the cluster running
            serve.delete(SERVE_APP_NAME)
        ray.shutdown()
