"""Fault tolerance: a worker node dies mid-sweep; every trial still lands exactly once.

A Ray cluster of three nodes (head + 2 workers, 1 CPU each) is simulated on this
machine with ``ray.cluster_utils.Cluster`` in a child process (its own Ray), a
simulated study with a small sleep per trial runs on it, and one worker node is
removed after a few trials have finished. Trials running there die with the
node; Tune retries them (FailureConfig) on the surviving nodes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

DRIVER = r"""
import json, sys, threading, time
import ray
from ray.cluster_utils import Cluster
from raysweep.results import read_table
from raysweep.sweep.registry import Registry
from raysweep.sweep.study import parse_study
from raysweep.sweep.trials import expand
from raysweep.sweep.run import init_ray, run_study

out = sys.argv[1]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
cluster.wait_for_nodes()
init_ray(address=cluster.address)
study = parse_study({
    "version": 1, "name": "faults", "backend": "simulated", "sizes": ["2x32", "2x48"],
    "tokens_per_param": [10, 20, 40], "seeds": [0, 1, 2],
    "representations": [{"name": "dense"}],
    "simulated": {"sleep_s": 0.5}, "retries": 3}, "<faults>")
reg = Registry(f"{out}/faults")
removed = {}

def kill_a_worker():
    while len(reg.records()) < 4:
        time.sleep(0.05)
    removed["at"] = len(reg.records())
    cluster.remove_node(workers[0], allow_graceful=False)

threading.Thread(target=kill_a_worker, daemon=True).start()
summary = run_study(study, out, local=False, progress_every_s=1.0)
df = read_table(f"{out}/faults/results.parquet")
ids = {t["run_id"] for t in expand(study)}
ok = [r["run_id"] for r in reg.records() if r["status"] == "ok"]
report = {"n": len(ids), "rows": len(df), "unique": int(df["run_id"].nunique()),
          "missing": len(ids - set(df["run_id"])), "ok_records": len(ok),
          "ok_unique": len(set(ok)), "removed_at": removed.get("at"),
          "failed": summary["failed"]}
open(f"{out}/result.json", "w").write(json.dumps(report))
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.timeout(150)
def test_worker_node_loss_loses_and_duplicates_nothing(tmp_path):
    res = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path)], capture_output=True,
                         timeout=120, start_new_session=True)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    out = json.loads((tmp_path / "result.json").read_text())
    assert out["removed_at"] is not None and out["removed_at"] < out["n"]
    assert out["failed"] == 0
    assert out["rows"] == out["unique"] == out["n"] == 18 and out["missing"] == 0
    assert out["ok_records"] == out["ok_unique"] == 18
