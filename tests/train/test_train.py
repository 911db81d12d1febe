"""train(config, report): learning, the report/row contract, resume, divergence, bad configs."""

import json
import math
import subprocess
import sys

import pytest
import torch

from raysweep.cli import main
from raysweep.errors import RaysweepError
from raysweep.train.config import resolve_config
from raysweep.train.loop import ROW_KEYS, lr_at, optimizer_groups, train

# 40 steps of 8 x 64 tokens on the synthetic Markov chain: ~0.3 s
TINY = {"size": "2x32", "data": "synthetic", "tokens": 40 * 8 * 64, "seq_len": 64,
        "eval_every": 10}


def test_stdlib_run_beats_unigram_baseline():
    """~6 s of CPU training on the stdlib corpus ends far below the unigram entropy."""
    reports = []
    row = train({"size": "d32", "tokens": 300_000, "seed": 0}, reports.append)
    assert row["status"] == "ok" and row["error"] is None
    assert row["loss"] < 3.245 - 0.5  # unigram baseline 3.245 nats/byte (cpu-scale.md)
    assert reports[0]["val_loss"] > reports[-2]["val_loss"] > row["loss"] - 0.2
    assert row["n_params"] == 23_712 and row["data_hash"] and row["tokens"] >= 300_000
    assert row["flops"] == 6.0 * row["n_params"] * row["tokens"]


def test_row_and_report_contract():
    reports = []
    row = train(dict(TINY), reports.append)
    assert set(ROW_KEYS) <= set(row)
    assert row["tokens"] == 40 * 8 * 64 and row["steps"] == 40
    assert row["tokens_per_param"] == pytest.approx(row["tokens"] / row["n_params"])
    periodic, final = reports[:-1], reports[-1]
    assert [r["step"] for r in periodic] == [10, 20, 30]
    for r in periodic:
        assert {"step", "tokens", "train_loss", "val_loss", "tokens_per_s"} <= set(r)
    assert final["done"] is True and final["loss"] == row["loss"]
    assert row["loss"] < math.log(64) - 1.0  # the chain is learnable (entropy 1.11 nats)
    assert (row["gmse_weights"], row["bits_weights"]) == (0.0, 16.0)


def test_same_seed_same_result_other_seed_differs():
    a, b = train(dict(TINY)), train(dict(TINY))
    c = train({**TINY, "seed": 1})
    assert a["loss"] == b["loss"] and a["loss"] != c["loss"]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_resume_from_checkpoint_is_bit_exact(tmp_path, device):
    """Kill a run after its step-20 checkpoint; the rerun resumes and matches exactly
    (on CPU; on CUDA to within the run-to-run noise of GPU kernels)."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    full = train({**TINY, "device": device})

    class Killed(Exception):
        pass

    def die_at_20(r):
        if r["step"] == 20:
            raise Killed

    cfg = {**TINY, "checkpoint_dir": str(tmp_path), "device": device}
    with pytest.raises(Killed):
        train(cfg, die_at_20)
    assert (tmp_path / "state.pt").exists()
    steps_seen = []
    resumed = train(cfg, steps_seen.append)
    assert steps_seen[0]["step"] == 30  # started from step 20, not from scratch
    if device == "cpu":
        assert resumed["loss"] == full["loss"] and resumed["train_loss"] == full["train_loss"]
    else:
        assert resumed["loss"] == pytest.approx(full["loss"], rel=1e-2)
    with pytest.raises(RaysweepError, match="checkpoint_dir.*lr"):
        train({**cfg, "lr": 1e-3})


def test_divergence_is_a_status_not_a_crash():
    reports = []
    row = train({**TINY, "lr": 1e4}, reports.append)
    assert row["status"] == "diverged"
    assert math.isnan(row["loss"]) and math.isnan(row["train_loss"])
    assert "non-finite" in row["error"]
    assert reports[-1]["done"] is True and reports[-1]["status"] == "diverged"


def test_lr_schedule_and_decay_groups():
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.1)  # cosine ends at peak / 10
    from raysweep.train.model import GPT

    model = GPT(2, 32, 2, 64)
    decay, no_decay = optimizer_groups(model, 0.1)
    ids = {id(p) for p in decay["params"]}
    assert id(model.embed.weight) not in ids and id(model.norm.weight) not in ids
    assert id(model.head.weight) in ids and id(model.blocks[1].mlp.down.weight) in ids
    assert no_decay["weight_decay"] == 0.0


@pytest.mark.parametrize("config,match", [
    ({"size": "d32", "lrr": 1e-3}, "'lrr'.*allowed keys"),
    ({"size": "d32", "lr": -1}, "'lr'.*allowed"),
    ({"size": "d32", "batch_size": 2.5}, "'batch_size'"),
    ({"size": "d32", "tokens": 10, "tokens_per_param": 2}, "tokens"),
    ({"weights": "int4"}, "'size': missing"),
    ({"size": "d40"}, "size"),
    ({"size": "d32", "backend": "cuda"}, "'backend'.*auto, triton, torch"),
    ({"size": "d32", "estimator": "rbbm:2"}, "'estimator'.*rbbm"),
    ({"size": "d32", "warmup_frac": 1.0}, "'warmup_frac'"),
    ({"size": "d32", "compile": "yes"}, "'compile'"),
    ({"size": "d32", "n_heads": 3}, "'n_heads'"),
])
def test_bad_config_names_key_and_allowed(config, match):
    with pytest.raises(RaysweepError, match=match):
        resolve_config(config)


def test_bad_runtime_values():
    with pytest.raises(RaysweepError, match="seq_len"):
        train({**TINY, "seq_len": 10**7})
    with pytest.raises(RaysweepError, match="data"):
        train({**TINY, "data": "nowhere"})


def test_resolve_config_fills_defaults():
    c = resolve_config({"size": "d80"})
    assert (c["n_layers"], c["d_model"], c["n_heads"]) == (2, 80, 5)
    assert c["batch_size"] == 8 and c["seq_len"] == 128 and c["tokens_per_param"] == 20.0
    assert c["lr"] == pytest.approx(3e-3 * math.sqrt(128 / 80))
    assert resolve_config({"n_layers": 3, "d_model": 64})["size"] == "3x64"
    assert resolve_config({"size": "30M"})["lr"] == 1.2e-3


def test_cli_train_bad_key_exits_2(capsys):
    assert main(["train", "--size", "d32", "--set", "nope=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope'" in err


def test_cli_train_json_end_to_end():
    cmd = [sys.executable, "-m", "raysweep", "train", "--size", "2x32", "--data", "synthetic",
           "--tokens", "20480", "--seed", "3", "--set", "seq_len=64", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(ROW_KEYS) <= set(row)
    assert row["status"] == "ok" and row["seed"] == 3 and row["n_layers"] == 2
    assert row["loss"] < math.log(64)
    assert "step" in out.stderr  # progress goes to stderr, the row alone to stdout
