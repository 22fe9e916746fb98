"""cluster.yaml is a valid Ray cluster-launcher config (checked with Ray's own validator)."""

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_passes_ray_schema_validation(cluster):
    # What `ray up` does before touching the cloud: fill in the provider's defaults, then
    # validate against ray/autoscaler/ray-schema.json plus Ray's cross-field checks.
    validate_config(prepare_config(copy.deepcopy(cluster)))
    # The file as written (no defaults filled in) is valid against the schema too.
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster, schema)


def test_rejects_a_broken_config(cluster):
    """The validator is not a no-op: a misspelt key and bad bounds are caught."""
    bad = copy.deepcopy(cluster)
    bad["max_worker"] = bad.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    bad = copy.deepcopy(cluster)
    bad["available_node_types"]["worker"]["min_workers"] = bad["max_workers"] + 1
    with pytest.raises(ValueError, match="min_workers"):
        validate_config(prepare_config(bad))


def test_aws_head_and_autoscaling_workers(cluster):
    assert cluster["provider"]["type"] == "aws"
    types = cluster["available_node_types"]
    assert cluster["head_node_type"] in types
    workers = [t for name, t in types.items() if name != cluster["head_node_type"]]
    assert workers and all(0 <= t["min_workers"] <= t["max_workers"] for t in workers)
    assert max(t["max_workers"] for t in workers) <= cluster["max_workers"]
    assert cluster["max_workers"] > min(t["min_workers"] for t in workers)  # it can scale


def test_installs_bioflux_from_the_mounted_repository(cluster):
    mounts = cluster["file_mounts"]
    remote = next(r for r, local in mounts.items() if local == ".")
    assert any(
        "pip install" in cmd and f"-e {remote}" in " ".join(cmd.split())
        for cmd in cluster["setup_commands"]
    )
    assert ".gitignore" in cluster["rsync_filter"]  # no .venv, runs/, models/ uploaded
    # Every node runs Ray with token authentication, from the token copied to it.
    assert any(r.endswith(".ray/auth_token") for r in mounts)
    starts = cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
