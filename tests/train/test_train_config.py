"""The frozen TrainConfig: resolved once, never written to; its dict (run ids,
checkpoint fingerprints) is the one the trainer has always hashed."""

import copy
import dataclasses

import pytest
import torch

from raysweep.results import run_id
from raysweep.train.config import KEYS, OPTIONAL_KEYS, TrainConfig, resolve_config
from raysweep.train.loop import Reps, _fingerprint, train

TINY = {"size": "2x32", "data": "synthetic", "tokens": 20 * 8 * 64, "seq_len": 64,
        "eval_every": 10}


def test_train_config_is_frozen():
    cfg = TrainConfig.resolve({"size": "d32"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.device = "cpu"
    assert dataclasses.replace(cfg, seed=3).seed == 3 and cfg.seed == 0


def test_fields_are_the_keys_and_to_dict_is_resolve_config():
    assert [f.name for f in dataclasses.fields(TrainConfig)] == list(KEYS)
    raw = {"size": "d80", "weights": "int4", "tokens": "1e6", "run_id": "x"}
    cfg = TrainConfig.resolve(raw)
    assert cfg.to_dict() == resolve_config(raw)
    # the WSD keys (OPTIONAL_KEYS) only when set, so cosine configs hash as before
    assert list(cfg.to_dict()) == [k for k in KEYS if k not in OPTIONAL_KEYS]
    assert TrainConfig.resolve(cfg) is cfg
    assert cfg.tokens == 1_000_000 and cfg.n_heads == 5 and cfg.device is None


def test_run_id_and_fingerprint_unchanged():
    """Ids and checkpoint fingerprints written before TrainConfig existed still match."""
    config = {"size": "2x32", "weights": "int4", "activations": "bf16", "seed": 0,
              "backend": "auto", "tokens": 5120, "data": "synthetic", "seq_len": 64}
    assert run_id(resolve_config(config)) == "265468859d3d5567"
    assert run_id(resolve_config({"size": "d32"})) == "50a5dd6adf29b37b"
    cfg = TrainConfig.resolve({**config, "device": "cpu", "threads": 2, "eval_every": 3})
    fp = _fingerprint(cfg, Reps.of(cfg))
    assert list(fp) == ["size", "n_layers", "d_model", "n_heads", "weights", "activations",
                        "estimator", "backend", "tokens", "tokens_per_param", "seed", "data",
                        "lr", "batch_size", "seq_len", "warmup_frac", "weight_decay",
                        "grad_clip", "final_eval_batches", "compile", "_w_identity",
                        "_a_identity"]
    assert fp == {**{k: v for k, v in resolve_config(config).items() if k in fp},
                  "_w_identity": False, "_a_identity": True}


def test_train_leaves_the_callers_config_untouched(tmp_path):
    config = {**TINY, "checkpoint_dir": str(tmp_path / "ckpt")}  # device left to train()
    before = copy.deepcopy(config)
    row = train(config)
    assert config == before and row["status"] == "ok"
    assert row["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    frozen = TrainConfig.resolve(TINY)
    snapshot = frozen.to_dict()
    again = train(frozen)
    assert frozen.to_dict() == snapshot and frozen.device is None
    assert again["loss"] == train(dict(TINY))["loss"]
