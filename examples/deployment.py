"""Deploy trained models with Ray Serve, call the HTTP API, and hot-swap a model.

    python examples/deployment.py [MODELS_DIR]    # default: outputs/demo/models (bioflux demo)

It starts a local Ray and the Serve app on a free port, asks for one agent's action
(``/v1/predict``) and a whole world's (``/v1/act``), reloads a model in place (the hot swap an
operator does after exporting a new run into the models folder: requests in flight finish on
the old module), and shuts everything down. ``bioflux serve`` is the same as a command.
"""

import socket
import sys
from pathlib import Path

import ray
import requests

from bioflux.artifacts import init_ray
from bioflux.serve.app import start

models = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/demo/models")
models.mkdir(parents=True, exist_ok=True)  # an empty folder still serves the built-ins
with socket.socket() as s:  # a free port for this example
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
url = f"http://127.0.0.1:{port}"
admin = {"Authorization": "Bearer example-token"}  # admin endpoints need the token

init_ray()
try:
    start(models, host="127.0.0.1", port=port, admin_token="example-token")
    print(f"serving {models} on {url} (OpenAPI docs: {url}/docs)")

    # Which policies are served: trained modules plus the built-ins random/* and lotka_volterra/*.
    served = requests.get(f"{url}/v1/models", timeout=60).json()["models"]
    names = {m["name"] for m in served} | {a for m in served for a in m["aliases"]}
    policy = "ppo/predator" if "ppo/predator" in names else "lotka_volterra/predator"
    print(f"{len(served)} policies; using {policy}")

    # One agent: a raw world state, encoded by the server with the environment's own code.
    state = {"height": 24, "width": 24, "predators": [[5, 5]], "prey": [[3, 6]], "agent": 0}
    answer = requests.post(
        f"{url}/v1/predict", json={"policy": policy, "state": state}, timeout=60
    ).json()
    print(f"predict: {answer['action_name']} (confidence {answer['confidence']:.2f})")

    # A whole world at once: every agent's action, one forward pass per species' policy.
    world = {"height": 24, "width": 24, "predators": [[5, 5]], "prey": [[3, 6], [9, 9]]}
    policies = {"predator": policy, "prey": "random/prey"}
    acted = requests.post(
        f"{url}/v1/act", json={"state": world, "policies": policies}, timeout=60
    ).json()
    print(f"act: {acted}")

    # Hot swap: reload the policy from the models folder (the newest files under its name).
    swapped = requests.post(f"{url}/v1/models/{policy}/load", headers=admin, timeout=120)
    print(f"hot swap: {swapped.status_code} {swapped.json()}")
    again = requests.post(f"{url}/v1/predict", json={"policy": policy, "state": state}, timeout=60)
    print(f"after the swap: {again.json()['action_name']}")
finally:
    ray.shutdown()  # takes the local Serve app down with it
