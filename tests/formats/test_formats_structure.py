"""Sparsity, composition, Hadamard, VQ, noise, the registry and malformed specs."""

import json
import subprocess
import sys

import pytest
import torch
from raysweep.formats import Composite, forms, parse
from raysweep.formats.hadamard import block_size, hadamard_matrix, rotate

from raysweep.errors import SpecError


def test_sparse_closed_form_and_keep_count():
    rep = parse("sparse50")
    assert rep.gmse().value == pytest.approx(0.0713, abs=5e-5)
    assert rep.gmse().method == "exact" and rep.sparsity == 0.5
    x = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    x_hat, keep = rep.project(x)
    assert (keep.sum(-1) == 50).all() and torch.equal(x_hat, x * keep)
    kept_min = x.abs().where(keep, torch.inf).amin(-1)
    dropped_max = x.abs().where(~keep, 0.0).amax(-1)
    assert (kept_min >= dropped_max).all()  # magnitude pruning
    assert parse("sparse0").gmse().value == 0.0


def test_sparse_tiny_rows_prune_per_tensor():
    x = torch.arange(1.0, 33.0).reshape(8, 4)  # rows of 4 < TINY_ROW: one threshold
    x_hat, keep = parse("sparse50").project(x)
    assert keep.sum() == 16 and not keep[:4].any() and keep[4:].all()


def test_nm():
    rep = parse("2:4")
    assert rep.nm == (2, 4) and rep.sparsity == 0.5 and rep.family == "sparse"
    x = torch.tensor([[4.0, -1.0, 3.0, 2.0, 1.0, 1.0, 1.0, 0.5]])
    x_hat, keep = rep.project(x)
    assert x_hat.tolist() == [[4.0, 0.0, 3.0, 0.0, 1.0, 1.0, 0.0, 0.0]]  # earlier wins ties
    with pytest.raises(SpecError, match="multiple of m=4"):
        rep.project(torch.randn(2, 6))
    # N:M is worse than unstructured pruning at the same sparsity
    assert rep.gmse().value > parse("sparse50").gmse().value


def test_composition_order_and_manual_application():
    x = torch.randn(6, 256, generator=torch.Generator().manual_seed(1))
    a, b = parse("sparse50+int4"), parse("int4+sparse50")
    assert isinstance(a, Composite) and [p.spec for p in a.parts] == ["sparse50", "int4"]
    xa, _ = a.project(x)
    xb, _ = b.project(x)
    assert not torch.equal(xa, xb)
    manual = parse("int4").project(parse("sparse50").project(x)[0])[0]
    assert torch.equal(xa, manual)
    assert a.family == "sparse+int" and a.bits_per_element == pytest.approx(1 + 0.5 * 4)
    assert a.gmse().method == "mc" and a.gmse().value != pytest.approx(b.gmse().value, rel=0.05)
    assert parse("bf16+int4").gmse() == parse("int4").gmse()


def test_hadamard_orthogonal_and_invertible():
    h = hadamard_matrix(128, "cpu", torch.float64)
    assert torch.allclose(h @ h.T, torch.eye(128, dtype=torch.float64), atol=1e-12)
    assert torch.equal(h, h.T)
    x = torch.randn(3, 384, dtype=torch.float64)
    y = rotate(x)
    assert torch.allclose(rotate(y), x, atol=1e-12)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1))
    assert block_size(384) == 128 and block_size(96) == 32 and block_size(7) == 1


def test_hadamard_option():
    rep = parse("int4@h")
    assert rep.hadamard == 128 and rep.grid is None and rep.inner.spec == "int4"
    assert rep.gmse() == parse("int4").gmse()  # rotation keeps i.i.d. Gaussians Gaussian
    x = torch.randn(2, 256, generator=torch.Generator().manual_seed(2))
    x_hat, mask = rep.project(x)
    expect = rotate(parse("int4").project(rotate(x))[0])
    assert torch.allclose(x_hat, expect) and mask is None
    # outliers: rotation spreads a spike, so the rotated grid represents it far better
    x[:, 0] = 40.0
    err_h = (rep.project(x)[0] - x).pow(2).mean()
    err = (parse("int4").project(x)[0] - x).pow(2).mean()
    assert err_h < err


def test_vq_codebook_and_bits():
    rep = parse("vq2x4")
    assert rep.bits_per_element == 2.0 and rep.family == "vq"
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(3))
    x_hat, mask = rep.project(x)
    assert x_hat.reshape(-1, 2).unique(dim=0).shape[0] <= 16 * 4
    # better than the scalar 2-bit product grid it started from
    assert rep.gmse().value < parse("lloyd2").gmse().value
    with pytest.raises(SpecError, match="multiple of d=2"):
        rep.project(torch.randn(2, 5))


def test_noise_is_exact_and_seeded():
    rep = parse("noise2")
    assert rep.gmse() == (0.0625, 0.0, "exact") and rep.family == "noise"
    x = torch.randn(4, 128)
    torch.manual_seed(0)
    a = rep.project(x)[0]
    b = rep.project(x)[0]
    torch.manual_seed(0)
    assert torch.equal(a, rep.project(x)[0]) and not torch.equal(a, b)


def test_identity_and_canonical_specs():
    assert parse("none") is parse("none")  # cached
    assert parse("none").spec == "bf16" and parse("bf16").is_identity
    x = torch.randn(3, 8)
    assert parse("bf16").project(x)[0] is x
    assert parse(" int4 ").spec == "int4"
    assert parse("sparse50.0").spec == "sparse50"


def test_every_form_is_registered():
    names = set(forms())
    assert names == {"int", "fp", "float", "lloyd", "ternary", "noise", "sparse", "nm", "vq",
                     "mx", "nvfp4", "intz"}
    examples = ["int4", "fp4", "e2m1", "lloyd2", "ternary", "noise2", "sparse50", "2:4", "vq2x4"]
    assert {type(parse(s)).__name__ for s in examples} >= {"ScalarGrid", "Sparse", "NM", "VQ"}


@pytest.mark.parametrize("spec,match", [
    ("", "empty"),
    ("foo", "unknown representation"),
    ("int0", "out of range"),
    ("int9", "out of range"),
    ("fp6", "fp6 unknown"),
    ("e6m2", "out of range"),
    ("e4m4", "exceeds 8"),
    ("lloyd9", "out of range"),
    ("int4@bogus", "unknown option"),
    ("int4@g1", "group size"),
    ("int4@gx", "unknown option"),
    ("int4@g32@g16", "twice"),
    ("sparse50@absmax", "scalar grids only"),
    ("noise2@h", "@h applies"),
    ("bf16@h", "no options"),
    ("4:2", "n < m"),
    ("0:4", "n < m"),
    ("sparse100", "out of range"),
    ("sparse-5", "unknown representation"),
    ("int4+", "dangling"),
    ("+int4", "dangling"),
    ("int4++fp4", "dangling"),
    ("vq2x11", "out of range"),
    ("vq9x4", "out of range"),
    ("vq1x9", "out of range"),
    ("noise0", "out of range"),
    ("int 4", "spaces"),
])
def test_malformed_specs(spec, match):
    with pytest.raises(SpecError, match=match) as e:
        parse(spec)
    assert "valid forms" in str(e.value) and "\n" not in str(e.value)


def test_cli_json_and_exit_code():
    ok = subprocess.run([sys.executable, "-m", "raysweep", "gmse", "int4", "none", "--json"],
                        capture_output=True, text=True, check=True)
    out = json.loads(ok.stdout)
    assert list(out) == ["int4", "none"]
    assert out["int4"] == {"gmse": pytest.approx(0.011543, abs=5e-7), "stderr": 0.0,
                           "method": "exact", "bits_per_element": 4.0, "family": "int"}
    table = subprocess.run([sys.executable, "-m", "raysweep", "gmse", "int2", "fp4"],
                           capture_output=True, text=True, check=True).stdout
    assert table.splitlines()[0].split() == ["spec", "gmse", "stderr", "method", "bits", "family"]
    bad = subprocess.run([sys.executable, "-m", "raysweep", "gmse", "int4", "int99"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "int99" in bad.stderr and bad.stdout == ""
