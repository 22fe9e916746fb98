"""The live view inside the Ray Serve app: the page, the options and a WebSocket of frames
through Serve's proxy, next to the unchanged prediction and admin routes."""

from __future__ import annotations

import json

import requests


def test_the_serve_app_streams_the_live_view(server):
    from websockets.sync.client import connect

    page = requests.get(server + "/", timeout=30)
    assert page.status_code == 200 and "<canvas" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    options = requests.get(server + "/v1/live/options", timeout=30).json()
    assert "lotka_volterra/predator" in options["policies"]["predator"]

    ws_url = server.replace("http://", "ws://") + "/v1/live/ws"
    with connect(ws_url + "?world=demo&speed=60&seed=1", open_timeout=30) as ws:
        reset = json.loads(ws.recv(timeout=30))
        assert reset["type"] == "reset" and (reset["height"], reset["width"]) == (24, 24)
        frames = []
        while len(frames) < 20:
            msg = json.loads(ws.recv(timeout=30))
            if msg["type"] == "frame":
                frames.append(msg)
        assert [f["step"] for f in frames] == list(range(1, 21))
        ws.send(json.dumps({"type": "pause"}))
        ws.send(json.dumps({"type": "inspect", "slot": frames[-1]["prey_slots"][0]}))
        while (msg := json.loads(ws.recv(timeout=30)))["type"] != "inspect":
            pass
        assert abs(sum(msg["probabilities"].values()) - 1) < 1e-6
        assert msg["reasoning"].startswith("chose ")
    with connect(ws_url + "?world=mars", open_timeout=30) as ws:
        msg = json.loads(ws.recv(timeout=30))
        assert msg["type"] == "error" and "world 'mars' is unknown" in msg["message"]

    # the other routes and the admin rules are as they were
    assert requests.get(server + "/healthz", timeout=30).json() == {"status": "ok"}
    load = requests.post(server + "/v1/models/random/prey/load", timeout=30)
    assert load.status_code == 401
