"""Sizes without torch: paper presets, the size dial, LxD, counts and default LR."""

import math
import sys

import pytest

from raysweep.errors import RaysweepError
from raysweep.train.sizes import count_params, default_lr, group_counts, mlp_hidden, resolve_size

PRESET_N = {"30M": 30_482_560, "50M": 49_556_736, "100M": 102_777_856, "200M": 203_188_480}


@pytest.mark.parametrize("name,n", PRESET_N.items())
def test_paper_presets_count(name, n):
    n_layers, d_model, n_heads = resolve_size(name, 32000)
    assert count_params(n_layers, d_model, n_heads, 32000) == n
    assert d_model // n_heads == 128


def test_30m_matches_paper_table():
    assert resolve_size("30M", 32000) == (6, 640, 5)
    assert mlp_hidden(640) == 1792  # 256 * ceil(1706.7 / 256)
    assert resolve_size("30m") == (6, 640, 5)


@pytest.mark.parametrize("size,shape,n", [
    ("d32", (2, 32, 2), 23_712),    # cpu-scale.md table, head dim 16
    ("d48", (2, 48, 3), 55_536),
    ("d80", (2, 80, 5), 151_440),
    ("2x128", (2, 128, 8), 389_760),
    ("d256", (4, 256, 4), 3_410_176),   # gpu.md planning point 256 x 4 (3.4M)
    ("d384", (6, 384, 6), 10_621_824),  # gpu.md 384 x 6 (10.6M)
    (80, (2, 80, 5), 151_440),
])
def test_dial_and_lxd_sizes(size, shape, n):
    assert resolve_size(size, 256) == shape
    assert count_params(*shape, 256) == n


def test_groups_add_up_and_exclude_embeddings():
    g = group_counts(2, 32, 256)
    assert g["non_embedding"] == g["attention"] + g["mlp"] + g["norm"]
    assert g["embedding"] == g["head"] == 256 * 32
    assert g["total"] == g["non_embedding"] + 2 * 256 * 32


@pytest.mark.parametrize("bad", ["31M", "d40", "0x64", "x", "2x", "d8", "3x33"])
def test_bad_sizes_raise(bad):
    with pytest.raises(RaysweepError, match="size|d_model"):
        resolve_size(bad)


def test_default_lr():
    assert default_lr("30M") == 1.2e-3 and default_lr("200M") == 3e-4
    assert default_lr("d32") == pytest.approx(3e-3 * math.sqrt(4))
    assert default_lr(d_model=128) == pytest.approx(3e-3)


def test_sizes_is_torch_free():
    import subprocess

    code = "import raysweep.train.sizes, raysweep.train.config, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
