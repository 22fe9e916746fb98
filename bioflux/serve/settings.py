"""Serving defaults, each in one place: the CLI (``bioflux serve``), the app builder
(``build_app``, which ``serve_config.yaml`` calls) and ``start`` read them from here.

The request limits below are checked before any heavy work; a request over one gets a 4xx
that names the field (413 for the body size and the batch length, 422 otherwise).
"""

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
#: How often Serve's controller checks each replica (seconds; Serve's default is 10). A
#: SIGKILLed replica is noticed and replaced within about this much plus its start-up.
HEALTH_CHECK_PERIOD_S = 2.0
#: With ``--haproxy``: the failures after which HAProxy replays a request on another replica.
#: ``empty-response`` covers a replica that died mid-request; safe here because every request
#: that can reach a dying replica is idempotent (predictions; a load or delete repeated gives
#: the same state).
HAPROXY_RETRY_ON = "conn-failure empty-response response-timeout"

# ---------------------------------------------------------------------------- request limits
#: Largest request body in bytes (8 MiB: 1024 agents with 11x11 observations fit with room to
#: spare). Checked on ``Content-Length`` before the body is read, and while reading it.
MAX_BODY_BYTES = 8 * 1024 * 1024
#: Most agents one ``/v1/predict/batch`` request may carry.
MAX_REQUEST_AGENTS = 1024
#: Largest observation window side ``S`` (a window of S*S*4 values; 101 = ``obs_radius`` 50).
MAX_OBSERVATION_SIDE = 101
#: Most grid cells (``height * width``) of a raw state (a 512x512 world).
MAX_STATE_CELLS = 512 * 512
#: Longest policy name and agent ``id`` (characters).
MAX_NAME_CHARS = 256

# ---------------------------------------------------------------------------- admin
#: Environment variable holding the token of the admin endpoints (``POST
#: /v1/models/{name}/load``, ``DELETE /v1/models/{name}``), sent as ``Authorization: Bearer
#: <token>``. Without a token the admin endpoints are off (403).
ADMIN_TOKEN_ENV = "BIOFLUX_ADMIN_TOKEN"

# ---------------------------------------------------------------------------- model registry
#: Most files and folders looked at inside one module folder by the safety check that every
#: file of a module resolves inside the models directory (a module over it is refused).
MAX_MODULE_FILES = 10_000
#: Least time between two rescans of the models directory triggered by a name that is not in
#: the index or by the open listings (``/v1/models``, ``/readyz``), in seconds, so a flood of
#: them is not a flood of scans. ``POST /v1/models/{name}/load`` always rescans.
RESCAN_MIN_INTERVAL_S = 1.0

# ---------------------------------------------------------------------------- models from a URI
#: ``--models`` / ``models_dir`` may be ``file:///abs/path`` or ``s3://bucket/prefix``: the
#: registry mirrors it into a local cache (``bioflux.serve.storage``). Environment variable
#: naming the cache root (default ``$XDG_CACHE_HOME/bioflux/models``, i.e.
#: ``~/.cache/bioflux/models``; one sub-folder per URI).
MODELS_CACHE_ENV = "BIOFLUX_MODELS_CACHE"
#: Least time between two re-syncs of a URI models folder triggered by the listings
#: (``/v1/models``, ``/readyz``, ``/v1/ensembles``, ``/v1/live/options``), in seconds;
#: ``POST /v1/models/{name}/load`` always re-syncs.
MODELS_SYNC_INTERVAL_S = 60.0
#: How often each replica reloads the loaded modules whose files changed (seconds): a hot swap
#: (new files + an admin load on one replica) reaches every replica within this time.
MODEL_RELOAD_INTERVAL_S = 10.0
#: Most files a URI models folder may hold in module folders (a sync over it fails).
MAX_SYNC_FILES = 100_000

# ---------------------------------------------------------------------------- live view
#: Port of ``bioflux view`` (the live view without Ray Serve; it binds to ``HOST``).
VIEW_PORT = 8050
#: Packaged configs whose world the live view offers, and the one it opens with.
LIVE_WORLDS = ("demo", "ppo", "ecology")
LIVE_DEFAULT_WORLD = "ppo"
#: Most live sessions (one per open page) per process (Serve replica or ``bioflux view``).
LIVE_MAX_SESSIONS = 8
#: A session without a step or a control message for this long is closed (seconds).
LIVE_IDLE_TIMEOUT_S = 300.0
#: Steps per second streamed by default, and at most.
LIVE_DEFAULT_SPEED = 10.0
LIVE_MAX_SPEED = 60.0
#: Largest live world: grid cells (``height * width``) and agent slots (predators + prey).
LIVE_MAX_CELLS = 256 * 256
LIVE_MAX_AGENTS = 20_000
#: Longest control message a page may send over the WebSocket (characters).
LIVE_MAX_MESSAGE_CHARS = 2048
