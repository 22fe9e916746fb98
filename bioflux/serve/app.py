"""Ray Serve application: batched HTTP predictions from the models directory.

Run: ``bioflux serve --models models/ --host 127.0.0.1 --port 8000`` (OpenAPI at ``/docs``), or
``serve run serve_config.yaml`` / ``serve deploy serve_config.yaml`` on a cluster
(``import_path: bioflux.serve.app:build_app``). The models folder may be a URI
(``file:///abs/path``, ``s3://bucket/prefix``): each replica mirrors it into a local cache
and serves that copy (``bioflux.serve.storage``).

Endpoints: ``POST /v1/predict``, ``POST /v1/predict/batch``, ``POST /v1/act`` (a whole world
state → every agent's action), ``GET /v1/models``,
``POST /v1/models/{name}/load``, ``DELETE /v1/models/{name}``, ``GET /healthz``, ``GET /readyz``,
``GET /metrics`` (Prometheus text, per replica); the live view: ``GET /`` (the page),
``GET /v1/live/options``, ``WS /v1/live/ws`` (``bioflux.serve.live_routes``; sessions live in
the replica that accepted the WebSocket).

Concurrent ``/v1/predict`` requests meet in one ``@serve.batch`` method and share one forward
pass per policy (``max_batch_size``, ``batch_wait_timeout_s``); each item still succeeds or
fails on its own. Within one ``POST /v1/predict/batch`` request the first failing agent
fails the whole request by default (its status, as ``/v1/predict`` would answer it); with
``"partial": true`` the request answers 200 with one entry per agent, in order: a prediction,
or for an agent that failed ``{"id", "policy", "error": {"status", "detail"}}`` with the
status that agent alone would have got (404, 422, 503, 500). Schema errors (a missing field, a
wrong type, too many agents) still reject the whole request before anything runs.

Bad input gets a 4xx with a message that names the field: 404 unknown policy,
413 oversized body or batch, 422 malformed JSON / wrong observation / a policy that fails
numerically on the observation, 503 a policy whose checkpoint failed to load (unless
``fallback=true``: then the built-in random policy answers and the response says
``degraded: true``). The limits live in ``bioflux.serve.settings`` and are checked before any
heavy work; raw states are encoded off the event loop. An unexpected error answers 500 and
logs one line.

Ensembles: ``GET /v1/ensembles`` lists them; ``POST /v1/ensembles`` (admin) defines one at run
time, written to ``<models>/ensembles.yaml`` and refused (422, file unchanged) when it cannot be
built, or when the models come from a URI (define them in its ``ensembles.yaml`` then).

Admin endpoints (``POST /v1/models/{name}/load``, ``DELETE /v1/models/{name}``,
``POST /v1/ensembles``) need
``Authorization: Bearer <token>``; the token is the deployment's ``admin_token`` (``build_app``
argument, ``start(admin_token=...)``) or ``$BIOFLUX_ADMIN_TOKEN``. Without one they answer 403;
a wrong or missing token gets 401. Everything else is open (read-only).
"""

import asyncio
import hmac
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import serve

from bioflux.serve import settings
from bioflux.serve.inference import (
    ModelInference,
    ModelLoadError,
    ObservationError,
    PolicyOutputError,
    UnknownModelError,
)
from bioflux.serve.live import LiveSessions
from bioflux.serve.live_routes import add_live_routes
from bioflux.serve.schemas import (
    ActRequest,
    AgentInput,
    BatchItemError,
    BatchRequest,
    EnsembleRequest,
    Prediction,
    PredictRequest,
)
from bioflux.serve.storage import check_form, is_uri
from bioflux.threads import use_inference_threads

logger = logging.getLogger("ray.serve")

#: The Prometheus label of every policy name that is not a known module.
UNKNOWN_POLICY = "unknown"


class ServerMetrics:
    """Prometheus metrics of one replica. The ``policy`` label only ever holds a known
    module's full name or ``unknown`` (never a client's string), so its cardinality is bounded
    by the models directory."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bioflux_requests",
            "requests by endpoint, policy and status",
            ["endpoint", "policy", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "bioflux_errors",
            "errors by policy and kind",
            ["policy", "kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bioflux_request_latency_seconds",
            "latency by policy",
            ["policy"],
            registry=self.registry,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
        )
        self.batch = Histogram(
            "bioflux_batch_size",
            "requests per batched forward pass",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )

    def text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:limit]}"


def error_status(err: BaseException) -> int:
    """The HTTP status of an agent's failure, as the exception handlers answer it alone."""
    if isinstance(err, HTTPException):
        return err.status_code
    if isinstance(err, UnknownModelError):
        return 404
    if isinstance(err, ObservationError):
        return 422
    if isinstance(err, ModelLoadError):
        return 503
    return 500


async def _send_json(send: Any, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Outermost own layer (pure ASGI): a body over ``settings.MAX_BODY_BYTES`` gets 413 before
    it is read (``Content-Length``) or as soon as the streamed bytes pass the limit; an
    unexpected exception answers 500 and logs one line (no traceback per request)."""

    def __init__(self, app: Any, max_body_bytes: int = settings.MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for key, value in scope.get("headers", ()):
            if key.lower() == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    await _send_json(send, 400, "invalid Content-Length header")
                    return
                if size > limit:
                    await _send_json(
                        send,
                        413,
                        f"request body is {size} bytes; at most {limit} (settings.MAX_BODY_BYTES)",
                    )
                    return
        received = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(
                        413,
                        f"request body is over {limit} bytes (settings.MAX_BODY_BYTES)",
                    )
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except Exception as err:
            logger.error("500 on %s %s: %s", scope.get("method"), scope.get("path"), _one_line(err))
            if not started:
                await _send_json(send, 500, f"internal error ({type(err).__name__}); logged")


api = FastAPI(
    title="BioFlux policy server",
    version="1",
    description="Actions for predator and prey agents from trained BioFlux policies.",
)
api.add_middleware(GuardMiddleware)


@api.exception_handler(RequestValidationError)
async def _invalid_request(_: Request, err: RequestValidationError) -> JSONResponse:
    """422 naming each bad field; the client's input is not echoed (it may hold NaN/inf,
    which JSON cannot carry, or be large)."""
    detail = [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", ""))[:300],
            "type": str(e.get("type", "")),
        }
        for e in err.errors()[:20]
    ]
    return JSONResponse(status_code=422, content={"detail": detail})


@api.exception_handler(UnknownModelError)
async def _unknown(_: Request, err: UnknownModelError) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(err)})


@api.exception_handler(ObservationError)
async def _bad_obs(_: Request, err: ObservationError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": str(err)})


@api.exception_handler(ModelLoadError)
async def _load_failed(_: Request, err: ModelLoadError) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": str(err)})


def _replica_live_sessions() -> LiveSessions:
    """The live sessions of the replica answering (``PolicyServer.live``)."""
    return serve.get_replica_context().servable_object.live


add_live_routes(api, _replica_live_sessions)


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=256,  # let concurrent requests reach @serve.batch together
    health_check_period_s=settings.HEALTH_CHECK_PERIOD_S,
    logging_config={"enable_access_log": False, "log_level": "WARNING"},
)
@serve.ingress(api)
class PolicyServer:
    """One replica: a ``ModelInference`` cache behind the FastAPI routes.

    ``admin_token``: the bearer token of the admin endpoints (default
    ``$BIOFLUX_ADMIN_TOKEN`` in the replica's environment; none: admin endpoints off).
    ``models_dir`` may be a URI (``file:///abs/path``, ``s3://bucket/prefix``), mirrored into
    a local cache under ``models_cache`` (``bioflux.serve.storage``)."""

    def __init__(
        self,
        models_dir: str,
        max_batch_size: int = settings.MAX_BATCH_SIZE,
        batch_wait_timeout_s: float = settings.BATCH_WAIT_TIMEOUT_S,
        preload: bool = True,
        admin_token: str | None = None,
        models_cache: str | None = None,
        reload_interval_s: float = settings.MODEL_RELOAD_INTERVAL_S,
    ):
        use_inference_threads()  # small-MLP inference: one torch thread (bioflux/threads.py)
        self.inference = ModelInference(models_dir, preload=preload, cache_dir=models_cache)
        threading.Thread(
            target=self._reload_changed_modules, args=(reload_interval_s,), daemon=True
        ).start()
        self.metrics = ServerMetrics()
        self.live = LiveSessions(self.inference)
        self._admin_token = admin_token or os.environ.get(settings.ADMIN_TOKEN_ENV) or None
        self._batched.set_max_batch_size(max_batch_size)
        self._batched.set_batch_wait_timeout_s(batch_wait_timeout_s)

    # ------------------------------------------------------------------ helpers
    def _reload_changed_modules(self, interval_s: float) -> None:
        """Background thread: the hot swaps other replicas were asked for reach this one."""
        while True:
            time.sleep(interval_s)
            try:
                for name in self.inference.reload_changed():
                    logger.warning("reloaded %s: its files changed", name)
            except Exception as err:  # never let the thread die; the next round retries
                logger.warning("reloading changed modules failed: %s", _one_line(err))

    def _label(self, name: str | None) -> str:
        """A policy's metrics label: a known full name, else ``unknown``."""
        return name if name in self.inference.registry.entries else UNKNOWN_POLICY

    def _require_admin(self, request: Request) -> None:
        if not self._admin_token:
            raise HTTPException(
                403,
                "admin endpoints are disabled: no admin token is configured. Set "
                f"${settings.ADMIN_TOKEN_ENV} (or build_app's admin_token / bioflux serve "
                "--admin-token) and send 'Authorization: Bearer <token>'",
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("latin-1", "replace"), self._admin_token.encode("utf-8")
        )
        if not ok:
            raise HTTPException(
                401,
                "admin endpoint: missing or wrong 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @serve.batch(
        max_batch_size=settings.MAX_BATCH_SIZE,
        batch_wait_timeout_s=settings.BATCH_WAIT_TIMEOUT_S,
    )
    async def _batched(self, items: list[tuple[str, np.ndarray, bool]]) -> list[Any]:
        """One forward pass per (policy, sample) group; each item gets its own answer or
        exception (an item that makes the policy fail numerically fails alone)."""
        self.metrics.batch.observe(len(items))
        out: list[Any] = [None] * len(items)
        for sample in (False, True):
            idx = [i for i, it in enumerate(items) if it[2] == sample]
            if not idx:
                continue
            try:
                res = self.inference.predict_many(
                    [items[i][:2] for i in idx], sample=sample, return_exceptions=True
                )
            except Exception as err:  # not expected: predict_many answers per item
                res = [err] * len(idx)
            for i, r in zip(idx, res):
                out[i] = r
        return out

    async def _predict_one(
        self, agent: AgentInput, sample: bool, fallback: bool, endpoint: str
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        label = UNKNOWN_POLICY
        try:
            if agent.state is not None:  # encoding a world: off the event loop
                entry, obs = await asyncio.to_thread(
                    self.inference.resolve_observation, agent.policy, None, agent.state
                )
            else:
                entry, obs = self.inference.resolve_observation(
                    agent.policy, agent.observation, None
                )
            policy = entry.name
            label = self._label(policy)
            degraded = False
            try:
                if not self.inference.is_loaded(policy):  # a load reads files: off the loop
                    await asyncio.to_thread(self.inference.get, policy)
            except ModelLoadError:
                if not fallback:
                    raise
                policy, degraded = f"random/{entry.species}", True
            result = await self._batched((policy, obs, sample))
            if isinstance(result, PolicyOutputError) and fallback and not degraded:
                self.metrics.errors.labels(label, type(result).__name__).inc()
                policy, degraded = f"random/{entry.species}", True
                result = await self._batched((policy, obs, sample))
            if isinstance(result, Exception):
                raise result
            label = self._label(result["policy"])
            result = {**result, "degraded": degraded, "id": agent.id}
            self.metrics.requests.labels(endpoint, label, "ok").inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - t0)
            return result
        except (UnknownModelError, ObservationError, ModelLoadError) as err:
            self.metrics.requests.labels(endpoint, label, "error").inc()
            self.metrics.errors.labels(label, type(err).__name__).inc()
            raise
        except Exception:
            self.metrics.requests.labels(endpoint, label, "error").inc()
            self.metrics.errors.labels(label, "internal").inc()
            raise

    # ------------------------------------------------------------------ routes
    @api.post("/v1/predict", response_model=Prediction)
    async def predict(self, req: PredictRequest) -> dict[str, Any]:
        return await self._predict_one(req, req.sample, req.fallback, "predict")

    @api.post("/v1/predict/batch", response_model=list[Prediction | BatchItemError])
    async def predict_batch(self, req: BatchRequest) -> Any:
        """One prediction per agent, in order. ``partial``: failed agents get an ``error``
        entry instead of failing the request (see ``BatchRequest.partial``)."""
        if len(req.agents) > settings.MAX_REQUEST_AGENTS:
            return JSONResponse(
                status_code=413,
                content={
                    "detail": f"agents: {len(req.agents)} agents in one request; at most "
                    f"{settings.MAX_REQUEST_AGENTS} (settings.MAX_REQUEST_AGENTS)"
                },
            )
        jobs = (self._predict_one(a, req.sample, req.fallback, "batch") for a in req.agents)
        if not req.partial:
            return await asyncio.gather(*jobs)
        results = await asyncio.gather(*jobs, return_exceptions=True)
        out: list[dict[str, Any]] = []
        for i, (agent, result) in enumerate(zip(req.agents, results)):
            if isinstance(result, dict):
                out.append(result)
                continue
            if not isinstance(result, Exception):  # cancelled: the request is going away
                raise result
            status = error_status(result)
            if status >= 500 and not isinstance(result, (HTTPException, ModelLoadError)):
                logger.error("500 on POST /v1/predict/batch agent %d: %s", i, _one_line(result))
                detail = f"internal error ({type(result).__name__}); logged"
            else:
                detail = str(result.detail if isinstance(result, HTTPException) else result)
            error = {"status": status, "detail": detail}
            out.append({"id": agent.id, "policy": agent.policy, "error": error})
        return out

    @api.post("/v1/act")
    async def act(self, req: ActRequest) -> dict[str, Any]:
        return await asyncio.to_thread(
            self.inference.act_world,
            req.state,
            dict(req.policies),
            req.sample,
            req.seed,
            req.details,
        )

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        # off the event loop: the listing may re-sync a URI models folder
        return {"models": await asyncio.to_thread(self.inference.list_models)}

    @api.post("/v1/models/{name:path}/load")
    async def load(self, name: str, request: Request) -> dict[str, Any]:
        self._require_admin(request)
        loaded = await asyncio.to_thread(self.inference.load, name, True)
        return {"loaded": loaded.entry.name, "loaded_at": loaded.loaded_at}

    @api.delete("/v1/models/{name:path}")
    async def unload(self, name: str, request: Request) -> dict[str, Any]:
        self._require_admin(request)
        unloaded, was_loaded = self.inference.unload(name)
        return {"unloaded": unloaded, "was_loaded": was_loaded}

    @api.get("/v1/ensembles")
    async def ensembles(self) -> dict[str, Any]:
        return {"ensembles": await asyncio.to_thread(self.inference.list_ensembles)}

    @api.post("/v1/ensembles")
    async def define_ensemble(self, req: EnsembleRequest, request: Request) -> dict[str, Any]:
        self._require_admin(request)
        from bioflux.ensembles import EnsembleError

        definition = {"combine": req.combine, "members": req.members}
        try:
            defined = await asyncio.to_thread(self.inference.define_ensemble, req.name, definition)
        except EnsembleError as err:
            return JSONResponse(status_code=422, content={"detail": str(err)[:500]})
        return {"defined": defined}

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        models = await asyncio.to_thread(self.inference.list_models)
        loaded = [m["name"] for m in models if m["loaded"]]
        failed = {m["name"]: m["error"] for m in models if m["error"]}
        unserved = self.inference.unserved_names()
        ready = not unserved  # a broken module does not matter while its name still serves
        content = {"ready": ready, "loaded": loaded, "failed": failed, "unserved": unserved}
        sync = self.inference.models_sync()
        if sync is not None:  # models from a URI: where the local copy stands
            content["models_sync"] = sync
        return JSONResponse(status_code=200 if ready else 503, content=content)

    @api.get("/metrics", response_class=PlainTextResponse)
    async def metrics_text(self) -> str:
        return self.metrics.text()


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """Application builder (``serve run bioflux.serve.app:build_app models_dir=models``);
    arguments left out take the defaults of ``bioflux.serve.settings``. ``admin_token``
    defaults to ``$BIOFLUX_ADMIN_TOKEN`` where the app is built (else where the replica runs).
    ``models_dir``: a local folder (made absolute here) or a URI (``file:///abs/path``,
    ``s3://bucket/prefix``) that each replica mirrors into ``models_cache`` (default
    ``$BIOFLUX_MODELS_CACHE``, else ``~/.cache/bioflux/models``, on the replica's node)."""
    args = dict(args or {})
    models_dir = str(args.pop("models_dir", settings.MODELS_DIR))
    if is_uri(models_dir):
        check_form(models_dir)  # a scheme or form that is not supported fails here
    else:
        models_dir = str(Path(models_dir).resolve())
    models_cache = args.pop("models_cache", None)
    replicas = args.pop("num_replicas", None)
    # No num_replicas: the deployment's own count (1), or the autoscaling_config a Serve config
    # file gives it (serve_config.yaml); code-set replicas would override autoscaling.
    deployment = (
        PolicyServer if replicas is None else PolicyServer.options(num_replicas=int(replicas))
    )
    admin_token = args.pop("admin_token", None) or os.environ.get(settings.ADMIN_TOKEN_ENV)
    return deployment.bind(
        models_dir,
        max_batch_size=int(args.pop("max_batch_size", settings.MAX_BATCH_SIZE)),
        batch_wait_timeout_s=float(args.pop("batch_wait_timeout_s", settings.BATCH_WAIT_TIMEOUT_S)),
        preload=bool(args.pop("preload", True)),
        admin_token=str(admin_token) if admin_token else None,
        models_cache=str(models_cache) if models_cache else None,
        reload_interval_s=float(args.pop("reload_interval_s", settings.MODEL_RELOAD_INTERVAL_S)),
    )


#: Names that lived here before (the ingress launchers) → ``bioflux.serve.ingress``; ``from
#: bioflux.serve.app import start`` and the like still work.
_MOVED = ("SERVE_APP_NAME", "enable_direct_ingress", "enable_haproxy_ingress", "start")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module("bioflux.serve.ingress"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
