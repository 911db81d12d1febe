"""cluster.yaml and cluster-local.yaml pass Ray's own launcher validation, offline."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _validate(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def test_aws_cluster_validates_with_cpu_head_and_spot_gpu_workers():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    prepared = _validate(cfg)
    assert prepared["provider"]["type"] == "aws"
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("CPU") == 0  # no trials on the head
    gpu = types["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1
    assert gpu["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert re.match(r"^g|^p", gpu["node_config"]["InstanceType"])
    setup = " ".join(cfg["setup_commands"])
    assert "ray[default" in setup and "pip install" in setup and "-e" in setup


def test_local_cluster_validates():
    prepared = _validate(yaml.safe_load((ROOT / "cluster-local.yaml").read_text()))
    assert prepared["provider"]["type"] == "local"


def test_validation_catches_a_typo():
    from jsonschema.exceptions import ValidationError

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg["available_node_types"]["gpu_worker"]["min_workerz"] = 0
    with pytest.raises(ValidationError):
        _validate(cfg)


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-local.yaml"])
def test_every_key_is_commented(name):
    """Each YAML key line is preceded by a comment line (or carries one)."""
    lines = (ROOT / name).read_text().splitlines()
    key_re = re.compile(r"^\s*(- )?[\"\w~./-]+:( |$)")
    for i, line in enumerate(lines):
        if not key_re.match(line) or line.strip().startswith("#"):
            continue
        prev = lines[i - 1].strip() if i else ""
        ok = prev.startswith("#") or "#" in line or prev.endswith(":") and \
            lines[i - 1].lstrip().startswith("- ")
        assert ok, f"{name}:{i + 1}: key without a comment: {line.strip()}"
