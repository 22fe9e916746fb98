"""The live view over HTTP: the page, its options and a WebSocket of frames.

``add_live_routes(app, get_sessions)`` adds to any FastAPI app:

- ``GET /``: the page (``bioflux/serve/page/index.html``: canvas and SVG, no external fetch);
- ``GET /v1/live/options``: policies from the registry, packaged worlds, limits;
- ``WS /v1/live/ws?world=&predator=&prey=&seed=&speed=[&height=&width=&n_predators=&n_prey=]
  [&paused=1]``: creates a session (``bioflux.serve.live``), sends its ``reset`` message, then
  a ``frame`` per step at ``speed`` steps/s. The page sends JSON control messages:
  ``{"type": "pause"}``, ``{"type": "play"}``, ``{"type": "step"}`` (one step),
  ``{"type": "reset"}``, ``{"type": "seed", "seed": 7}`` (reset with that seed),
  ``{"type": "speed", "speed": 20}``, ``{"type": "inspect", "slot": 3}`` (answered by an
  ``inspect`` message). A bad parameter or message is answered ``{"type": "error",
  "message": ...}``; bad session parameters also close the socket (code 1008).

The Ray Serve app (``bioflux.serve.app``) adds these routes with each replica's sessions;
``bioflux view`` runs them in a plain FastAPI app under uvicorn (``create_view_app``), no Ray.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

from bioflux.serve import settings
from bioflux.serve.live import PARAMS, LiveError, LiveSession, LiveSessions, parse_speed

logger = logging.getLogger("bioflux.live")

#: The page may load nothing from elsewhere: scripts and styles are inline, images data: URLs.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)


@cache
def page_html() -> str:
    return resources.files("bioflux.serve").joinpath("page/index.html").read_text("utf-8")


def _message(text: str) -> dict[str, Any]:
    if len(text) > settings.LIVE_MAX_MESSAGE_CHARS:
        raise LiveError(
            f"control message of {len(text)} characters; at most "
            f"{settings.LIVE_MAX_MESSAGE_CHARS} (settings.LIVE_MAX_MESSAGE_CHARS)"
        )
    try:
        msg = json.loads(text)
    except ValueError:
        raise LiveError("control message is not JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise LiveError('control message must be an object with a "type"')
    return msg


def _failed(what: str, err: BaseException) -> str:
    text = " ".join(str(err).split())[:300]
    logger.error("live %s failed: %s: %s", what, type(err).__name__, text)
    return f"{what} failed ({type(err).__name__}: {text}); paused"


async def _control(ws: WebSocket, session: LiveSession, msg: dict[str, Any]) -> None:
    """Apply one control message (pause, play, step, reset, seed, speed, inspect)."""
    kind = msg["type"]
    session.touch()
    if kind == "pause":
        session.paused = True
        await ws.send_json({"type": "paused", "paused": True})
    elif kind in ("play", "resume"):
        session.paused = False
        await ws.send_json({"type": "paused", "paused": False})
    elif kind == "step":
        if not session.paused:
            session.paused = True
            await ws.send_json({"type": "paused", "paused": True})
        await ws.send_json(await asyncio.to_thread(session.step))
    elif kind in ("reset", "seed"):
        seed = msg.get("seed") if kind == "seed" or "seed" in msg else None
        if kind == "seed" and seed is None:
            raise LiveError('a "seed" message needs a "seed" value')
        await ws.send_json(await asyncio.to_thread(session.reset, seed))
    elif kind == "speed":
        session.speed = parse_speed(msg.get("speed"))
        await ws.send_json({"type": "speed", "speed": session.speed})
    elif kind == "inspect":
        await ws.send_json(await asyncio.to_thread(session.inspect, msg.get("slot")))
    else:
        raise LiveError(
            f"unknown control message type {kind[:40]!r}; allowed: pause, play, step, reset, "
            "seed, speed, inspect"
        )


async def stream(ws: WebSocket, sessions: LiveSessions) -> None:
    """One page's session: frames at its speed, control messages in between."""
    await ws.accept()
    query = ws.query_params
    params = {k: query[k] for k in PARAMS if k in query}
    try:
        session = await asyncio.to_thread(sessions.create, params)
    except LiveError as err:
        await ws.send_json({"type": "error", "message": str(err), "fatal": True})
        await ws.close(code=1008)
        return
    session.paused = query.get("paused", "") in ("1", "true", "yes")
    receive: asyncio.Task | None = None
    try:
        await ws.send_json(session.reset_frame())
        next_at = time.monotonic()
        while True:
            if session.closed:
                await ws.send_json(
                    {
                        "type": "error",
                        "message": f"session closed after {sessions.idle_timeout_s:g} s idle",
                        "fatal": True,
                    }
                )
                await ws.close(code=1000)
                return
            now = time.monotonic()
            running = not session.paused and not session.done
            wait = max(0.0, next_at - now) if running else 1.0
            if receive is None:
                receive = asyncio.ensure_future(ws.receive_text())
            done, _ = await asyncio.wait({receive}, timeout=wait)
            if receive in done:
                text, receive = receive.result(), None
                try:
                    await _control(ws, session, _message(text))
                except LiveError as err:
                    await ws.send_json({"type": "error", "message": str(err)})
                except Exception as err:  # a policy failing on inspect: say so, keep going
                    await ws.send_json({"type": "error", "message": _failed("inspect", err)})
                next_at = max(next_at, time.monotonic())
                continue
            if running:
                try:
                    frame = await asyncio.to_thread(session.step)
                except Exception as err:  # a policy failing mid-episode: pause, say why
                    session.paused = True
                    await ws.send_json({"type": "error", "message": _failed("step", err)})
                    continue
                await ws.send_json(frame)
                next_at = max(next_at + 1.0 / session.speed, time.monotonic() - 0.5)
            else:
                sessions.sweep()
    except (WebSocketDisconnect, RuntimeError):  # the page went away
        pass
    finally:
        if receive is not None:
            receive.cancel()
        sessions.close(session.id)


def add_live_routes(app: FastAPI, get_sessions: Callable[[], LiveSessions]) -> FastAPI:
    """Add the live view's page, options and WebSocket to ``app``. ``get_sessions`` gives the
    ``LiveSessions`` of the process answering (a Serve replica's, or ``bioflux view``'s)."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def live_page() -> HTMLResponse:
        return HTMLResponse(
            page_html(),
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
        )

    @app.get("/v1/live/options")
    async def live_options() -> dict[str, Any]:
        return await asyncio.to_thread(get_sessions().options)

    @app.websocket("/v1/live/ws")
    async def live_ws(ws: WebSocket) -> None:
        await stream(ws, get_sessions())

    return app


def create_view_app(models_dir: str | Path, preload: bool = False) -> FastAPI:
    """A plain FastAPI app with only the live view (``bioflux view``; no Ray Serve)."""
    from bioflux.serve.inference import ModelInference

    sessions = LiveSessions(ModelInference(models_dir, preload=preload))
    app = FastAPI(title="BioFlux live view", version="1")
    app.state.live = sessions
    return add_live_routes(app, lambda: sessions)


def run_view(models_dir: str | Path, host: str = settings.HOST, port: int = settings.VIEW_PORT):
    """Serve the live view on ``host:port`` until interrupted (uvicorn, one process)."""
    import uvicorn

    uvicorn.run(create_view_app(models_dir), host=host, port=port, log_level="warning")
