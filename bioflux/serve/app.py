"""Ray Serve application: batched HTTP predictions from the models directory.

Run: ``bioflux serve --models models/ --host 127.0.0.1 --port 8000`` (OpenAPI at ``/docs``), or
``serve run serve_config.yaml`` / ``serve deploy serve_config.yaml`` on a cluster
(``import_path: bioflux.serve.app:build_app``).

Endpoints: ``POST /v1/predict``, ``POST /v1/predict/batch``, ``GET /v1/models``,
``POST /v1/models/{name}/load``, ``DELETE /v1/models/{name}``, ``GET /healthz``, ``GET /readyz``,
``GET /metrics`` (Prometheus text, per replica).

Concurrent ``/v1/predict`` requests meet in one ``@serve.batch`` method and share one forward
pass per policy (``max_batch_size``, ``batch_wait_timeout_s``). Bad input gets a 4xx with a
message: 404 unknown policy, 413 oversized batch, 422 malformed JSON / wrong observation,
503 a policy whose checkpoint failed to load (unless ``fallback=true``: then the built-in
random policy answers and the response says ``degraded: true``).
"""

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve

from bioflux.serve import settings
from bioflux.serve.inference import (
    ModelInference,
    ModelLoadError,
    ObservationError,
    UnknownModelError,
)

#: Most agents one /v1/predict/batch request may carry.
MAX_REQUEST_AGENTS = 1024


class AgentInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str = Field(description="policy name, e.g. 'ppo/predator' or 'random/prey'")
    observation: list | None = Field(None, description="(S, S, 4) nested list or flat S*S*4")
    state: dict[str, Any] | None = Field(
        None, description="raw state: height, width, predators, prey, [walls, energy], agent"
    )
    id: str | None = Field(None, description="echoed back (batch requests)")

    @model_validator(mode="after")
    def _one_input(self) -> "AgentInput":
        if (self.observation is None) == (self.state is None):
            raise ValueError("give exactly one of 'observation' or 'state'")
        return self


class PredictRequest(AgentInput):
    sample: bool = Field(False, description="sample the action instead of taking the argmax")
    fallback: bool = Field(False, description="answer with a safe default if the model is down")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agents: list[AgentInput] = Field(min_length=1)
    sample: bool = False
    fallback: bool = False


class Prediction(BaseModel):
    id: str | None = None
    policy: str
    action: int
    action_name: str
    confidence: float
    probabilities: dict[str, float]
    reasoning: str
    degraded: bool = False


class ServerMetrics:
    """Prometheus metrics of one replica."""

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


api = FastAPI(
    title="BioFlux policy server",
    version="1",
    description="Actions for predator and prey agents from trained BioFlux policies.",
)


@api.exception_handler(UnknownModelError)
async def _unknown(_: Request, err: UnknownModelError) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(err)})


@api.exception_handler(ObservationError)
async def _bad_obs(_: Request, err: ObservationError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": str(err)})


@api.exception_handler(ModelLoadError)
async def _load_failed(_: Request, err: ModelLoadError) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": str(err)})


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=256,  # let concurrent requests reach @serve.batch together
    logging_config={"enable_access_log": False, "log_level": "WARNING"},
)
@serve.ingress(api)
class PolicyServer:
    """One replica: a ``ModelInference`` cache behind the FastAPI routes."""

    def __init__(
        self,
        models_dir: str,
        max_batch_size: int = settings.MAX_BATCH_SIZE,
        batch_wait_timeout_s: float = settings.BATCH_WAIT_TIMEOUT_S,
        preload: bool = True,
    ):
        self.inference = ModelInference(models_dir, preload=preload)
        self.metrics = ServerMetrics()
        self._batched.set_max_batch_size(max_batch_size)
        self._batched.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch(
        max_batch_size=settings.MAX_BATCH_SIZE,
        batch_wait_timeout_s=settings.BATCH_WAIT_TIMEOUT_S,
    )
    async def _batched(self, items: list[tuple[str, np.ndarray, bool]]) -> list[Any]:
        self.metrics.batch.observe(len(items))
        out: list[Any] = [None] * len(items)
        for sample in (False, True):
            idx = [i for i, it in enumerate(items) if it[2] == sample]
            if not idx:
                continue
            try:
                res = self.inference.predict_many([items[i][:2] for i in idx], sample=sample)
            except Exception as err:  # e.g. a model unloaded mid-batch: answer each item
                res = [err] * len(idx)
            for i, r in zip(idx, res):
                out[i] = r
        return out

    async def _predict_one(
        self, agent: AgentInput, sample: bool, fallback: bool, endpoint: str
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        policy = agent.policy
        try:
            entry, obs = self.inference.resolve_observation(policy, agent.observation, agent.state)
            policy = entry.name
            degraded = False
            try:
                self.inference.get(policy)
            except ModelLoadError:
                if not fallback:
                    raise
                policy, degraded = f"random/{entry.species}", True
            result = await self._batched((policy, obs, sample))
            if isinstance(result, Exception):
                raise result
            result = {**result, "degraded": degraded, "id": agent.id}
            self.metrics.requests.labels(endpoint, policy, "ok").inc()
            self.metrics.latency.labels(policy).observe(time.perf_counter() - t0)
            return result
        except (UnknownModelError, ObservationError, ModelLoadError) as err:
            self.metrics.requests.labels(endpoint, policy, "error").inc()
            self.metrics.errors.labels(policy, type(err).__name__).inc()
            raise

    @api.post("/v1/predict", response_model=Prediction)
    async def predict(self, req: PredictRequest) -> dict[str, Any]:
        return await self._predict_one(req, req.sample, req.fallback, "predict")

    @api.post("/v1/predict/batch", response_model=list[Prediction])
    async def predict_batch(self, req: BatchRequest) -> Any:
        if len(req.agents) > MAX_REQUEST_AGENTS:
            return JSONResponse(
                status_code=413,
                content={
                    "detail": f"{len(req.agents)} agents in one request; at most "
                    f"{MAX_REQUEST_AGENTS}"
                },
            )
        return await asyncio.gather(
            *(self._predict_one(a, req.sample, req.fallback, "batch") for a in req.agents)
        )

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        return {"models": self.inference.list_models()}

    @api.post("/v1/models/{name:path}/load")
    async def load(self, name: str) -> dict[str, Any]:
        loaded = self.inference.load(name)
        return {"loaded": loaded.entry.name, "loaded_at": loaded.loaded_at}

    @api.delete("/v1/models/{name:path}")
    async def unload(self, name: str) -> dict[str, Any]:
        return {
            "unloaded": self.inference.registry.resolve(name).name,
            "was_loaded": self.inference.unload(name),
        }

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        models = self.inference.list_models()
        loaded = [m["name"] for m in models if m["loaded"]]
        failed = {m["name"]: m["error"] for m in models if m["error"]}
        ready = not failed
        return JSONResponse(
            status_code=200 if ready else 503,
            content={"ready": ready, "loaded": loaded, "failed": failed},
        )

    @api.get("/metrics", response_class=PlainTextResponse)
    async def metrics_text(self) -> str:
        return self.metrics.text()


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """Application builder (``serve run bioflux.serve.app:build_app models_dir=models``);
    arguments left out take the defaults of ``bioflux.serve.settings``."""
    args = dict(args or {})
    models_dir = str(Path(args.pop("models_dir", settings.MODELS_DIR)).resolve())
    replicas = int(args.pop("num_replicas", settings.NUM_REPLICAS))
    return PolicyServer.options(num_replicas=replicas).bind(
        models_dir,
        max_batch_size=int(args.pop("max_batch_size", settings.MAX_BATCH_SIZE)),
        batch_wait_timeout_s=float(args.pop("batch_wait_timeout_s", settings.BATCH_WAIT_TIMEOUT_S)),
        preload=bool(args.pop("preload", True)),
    )


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


def start(
    models_dir: str | Path,
    host: str = settings.HOST,
    port: int = settings.PORT,
    max_batch_size: int = settings.MAX_BATCH_SIZE,
    batch_wait_timeout_s: float = settings.BATCH_WAIT_TIMEOUT_S,
    num_replicas: int = settings.NUM_REPLICAS,
    name: str = "bioflux",
) -> None:
    """Start Serve on ``host:port`` and deploy the app (Ray must be initialised)."""
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
            }
        ),
        name=name,
        route_prefix="/",
        blocking=False,
    )
