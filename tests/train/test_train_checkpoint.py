"""A corrupt checkpoint is moved aside and its run trained from scratch, not failed for ever."""

from __future__ import annotations

import math

import pytest

from raysweep.train.loop import train

TINY = {"size": "2x32", "data": "synthetic", "tokens": 20 * 8 * 64, "seq_len": 64,
        "eval_every": 10}


@pytest.mark.parametrize("garbage", [b"", b"PK\x03\x04 truncated zip", b"\x80\x04not a pickle"],
                         ids=["empty", "truncated", "garbled"])
def test_corrupt_checkpoint_is_moved_aside_and_the_run_restarts(tmp_path, garbage):
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    (ckpt / "state.pt").write_bytes(garbage)
    with pytest.warns(UserWarning, match="could not be loaded.*moved aside"):
        row = train({**TINY, "checkpoint_dir": str(ckpt)})
    fresh = train(TINY)
    assert row["status"] == "ok" and math.isfinite(row["loss"])
    assert row["loss"] == fresh["loss"]  # from scratch: the same run as without a checkpoint
    aside = [p for p in ckpt.iterdir() if p.name.startswith("state.pt.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == garbage  # kept for inspection


def test_a_checkpoint_missing_its_keys_is_corrupt_too(tmp_path):
    import torch

    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    torch.save({"step": 3}, ckpt / "state.pt")
    with pytest.warns(UserWarning, match="missing"):
        assert train({**TINY, "checkpoint_dir": str(ckpt)})["status"] == "ok"
