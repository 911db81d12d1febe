"""Scalar grids: the paper's GMSE reference values, rounding, the QuEST trust rule.

Paper: Panferov et al. 2025, "Unified Scaling Laws for Compressed Representations"
(sections: GMSE reference values; estimators).
"""

import numpy as np
import pytest
import torch
from raysweep.formats import parse
from raysweep.formats.scalar import fp_levels

# the paper's GMSE reference values section: bits -> (alpha*, GMSE)
PAPER = {1: (0.79788, 0.36338), 2: (1.49353, 0.11885), 3: (2.05107, 0.03744),
         4: (2.51393, 0.011543), 8: (3.8849, 8.78e-5)}


@pytest.mark.parametrize("bits", sorted(PAPER))
def test_int_reference_values(bits):
    alpha, gmse = PAPER[bits]
    rep = parse(f"int{bits}")
    g = rep.gmse()
    assert g.method == "exact" and g.stderr == 0.0
    assert g.value == pytest.approx(gmse, rel=2e-3)
    # the MSE is flat at its minimum: alpha* agrees to the paper's precision (int8: 1%)
    assert rep.grid[0] == "int" and rep.grid[1] == bits
    assert rep.grid[2] == pytest.approx(alpha, rel=1e-2 if bits == 8 else 1e-4)
    assert rep.gmse() is g  # computed once, then cached on the object
    assert rep.bits_per_element == float(bits)


def test_int4_exact_digits():
    assert round(parse("int4").gmse().value, 6) == 0.011543


def test_fp4_ternary_lloyd_reference():
    assert parse("fp4").gmse().value == pytest.approx(0.012685, abs=2e-6)
    t = parse("ternary")
    assert t.scale == pytest.approx(1.22401, abs=1e-4)
    assert t.gmse().value == pytest.approx(0.19017, abs=2e-5)
    # Lloyd-Max 1 bit = +-sqrt(2/pi), same as int1; 2 bits beats the uniform grid
    assert parse("lloyd1").gmse().value == pytest.approx(1 - 2 / np.pi, rel=1e-9)
    assert parse("lloyd2").gmse().value == pytest.approx(0.11748, abs=1e-5)


def test_fp_levels():
    pos = fp_levels(2, 1)[7:]
    assert pos.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    e4m3 = fp_levels(4, 3, fn=True)
    assert e4m3.max() == 448.0 and e4m3[e4m3 > 0].min() == 2.0**-9
    assert len(e4m3) == 2 * 127 - 1  # 127 non-negative codes (NaN dropped), 0 shared


def test_int_matches_midrise_formula_and_kernel_reference():
    from raysweep.kernels.reference import int_quant_ref

    x = torch.randn(8, 200, generator=torch.Generator().manual_seed(0))
    rep = parse("int3")
    x_hat, mask = rep.project(x)
    ref, ref_mask = int_quant_ref(x, 3, rep.grid[2])
    assert torch.equal(x_hat, ref) and torch.equal(mask, ref_mask)
    a = rep.grid[2]
    step = 2 * a / 7
    s = x.double().pow(2).mean(-1, keepdim=True).sqrt()
    manual = s * (torch.round(torch.clamp(x / s, -a, a) / step + 0.5) * step - step / 2)
    assert torch.allclose(x_hat.double(), manual, atol=1e-5)
    assert x_hat.unique().numel() <= 8 * 8  # 2^3 levels per row


def test_ties_round_half_to_even():
    # x = 0 sits exactly on a cell boundary of the mid-rise grid: r = round(0 / step + 1/2)
    # = round(0.5) = 0 under round-half-to-even, so 0 maps to the level -step/2 (not +step/2)
    rep = parse("int2")
    x = torch.tensor([[0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 1.5]])
    x_hat, _ = rep.project(x)
    a = rep.grid[2]
    s = float(x.pow(2).mean().sqrt())
    assert x_hat[0, 0] < 0
    assert float(x_hat[0, 0]) == pytest.approx(-(a / 3) * s, rel=1e-6)  # step/2 = a/3 at 2 bits


@pytest.mark.parametrize("bits", [2, 4])
def test_trust_mask_is_the_half_step_rule(bits):
    """Points just inside/outside the trust edge a + step/2 (in units of the row RMS)."""
    rep = parse(f"int{bits}")
    a = rep.grid[2]
    step = 2 * a / (2**bits - 1)
    edge = a + step / 2
    # u: the target values x / RMS(row) around the edge (both signs), the rest of the row
    # is +-1 and the edge values are solved for so that x / RMS(row) = u exactly
    u = torch.tensor([a + 0.4 * step, edge - 1e-3, edge + 1e-3, a + 0.6 * step],
                     dtype=torch.float64)
    u = torch.cat([u, -u])
    fill = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(252)
    n = u.numel() + fill.numel()
    # sum(x^2) = n RMS^2 with x_i = u_i RMS for the first 8, +-1 elsewhere: RMS^2 (n - |u|^2) = 504
    rms = (fill.numel() / (n - u.pow(2).sum())).sqrt()
    x = torch.cat([u * rms, fill])[None] * 7.0  # RMS 7.4: a scale-free mask would be wrong
    s = x.pow(2).mean().sqrt()
    assert torch.allclose(x[0, :8] / s, u, atol=1e-9)
    x_hat, mask = rep.project(x.float())
    assert mask[0, :8].tolist() == [True, True, False, False] * 2
    assert mask[0, 8:].all()  # +-1 are inside the grid (|1 / RMS| < a)
    # and on random rows the mask is exactly |x_hat - x| <= step/2 RMS away from the edge
    xr = torch.randn(16, 512, generator=torch.Generator().manual_seed(1)) * 1.5
    xr_hat, mr = rep.project(xr)
    sr = xr.double().pow(2).mean(-1, keepdim=True).sqrt()
    d = (xr_hat.double() - xr.double()).abs() / sr
    far = (d - step / 2).abs() > 1e-5
    assert torch.equal(mr[far], (d <= step / 2)[far])
    assert mr[(xr / sr).abs() <= a].all()


def test_int1_trust_is_wider_only_with_hadamard():
    # estimators section: "1-bit uses a wider trust region (scale 1.30 with Hadamard)"
    a = parse("int1").grid[2]  # levels +-a, step 2a: half a step = 2a beyond 0 ... edge at 2a
    u = 2.15 * a  # beyond half a step (2a), inside the 1.30x radius (a + 1.3a = 2.3a)
    v = u * (255 / (256 - u * u)) ** 0.5  # so that v / RMS(row) = u with 255 entries of +-1
    x = torch.tensor([[v] + [1.0, -1.0] * 127 + [1.0]])
    s = float(x.double().pow(2).mean().sqrt())
    assert abs(v / s - u) < 1e-4
    _, plain = parse("int1").project(x)
    assert not plain[0, 0] and plain[0, 1:].all()  # no @h: half a step, as for every int
    inner = parse("int1@h").inner  # the layer applies the inner mask in the rotated domain
    assert inner.rotated and inner.spec == "int1"
    _, wide = inner.project(x)
    assert wide[0, 0] and wide.all()
    _, far = inner.project(torch.tensor([[3 * v] + [1.0, -1.0] * 127 + [1.0]]))
    assert not far[0, 0]
    # the rotation does not touch grids of other widths
    _, m4 = parse("int4@h").inner.project(x)
    _, m4p = parse("int4").project(x)
    assert torch.equal(m4, m4p)


def test_groups_and_absmax():
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(2))
    rep = parse("int4@g32")
    assert rep.bits_per_element == 4.5 and rep.grid is None
    x_hat, _ = rep.project(x)
    first, _ = parse("int4").project(x[:, :32])
    assert torch.equal(x_hat[:, :32], first)  # a group is projected like a row
    am, _ = parse("int4@absmax").project(x)
    assert torch.allclose(am.abs().amax(-1), x.abs().amax(-1))  # top level = max |x|
    assert parse("int4@g32@absmax").spec == "int4@absmax@g32"
    with pytest.raises(ValueError, match="multiple of the group size"):
        rep.project(torch.randn(2, 48))
    # absmax is far worse than RMS scaling at low bits (GMSE reference values section)
    assert parse("int2@absmax").gmse().value > 1.5 * parse("int2").gmse().value


@pytest.mark.parametrize("n", [1, 3, 100, 4096, 70000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_int_path_is_bit_identical_to_kernel_reference(n, dtype):
    from raysweep.formats.fastint import int_rms_project
    from raysweep.kernels.reference import int_quant_ref

    g = torch.Generator().manual_seed(n)
    x = (torch.randn(37, n, generator=g) * torch.rand(37, 1, generator=g) * 10).to(dtype)
    x[3] = 0.0
    for bits in (1, 2, 4, 8):
        ref = int_quant_ref(x, bits, 1.7, 0.3)
        fast = int_rms_project(x, bits, 1.7, 0.3)
        assert torch.equal(ref[0], fast[0]) and torch.equal(ref[1], fast[1])
