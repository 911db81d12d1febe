"""The fused block-scaled kernel (MX, NVFP4) == formats' projection, bit for bit.

On CPU the kernel runs under TRITON_INTERPRET=1 (tests/conftest.py); with CUDA
it runs compiled on the GPU and is compared with formats on CPU. "Bit for bit":
float32 bit patterns (so -0 differs from +0), NaN where NaN, and the trust mask.
"""

import dataclasses

import pytest
import torch
from raysweep.formats import parse
from raysweep.kernels import block_quant
from raysweep.kernels.reference import block_element, block_quant_ref

from raysweep.errors import RaysweepError

DEV = "cuda" if torch.cuda.is_available() else "cpu"
# the interpreter computes with numpy, which warns on the inf arithmetic of the non-finite rows
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")
RTN_SPECS = ["mxfp4", "mxfp6", "mxfp6e3m2", "mxfp8", "mxint8", "nvfp4", "nvfp4@46", "mxfp4@q",
             "mxint8@q"]
ELEMENTS = {"mxfp4": "e2m1", "mxfp6": "e2m3", "mxfp6e3m2": "e3m2", "mxfp8": "e4m3fn",
            "mxint8": "int8"}


def _hard_data(rows=24, cols=100, seed=0):
    """Gaussian, heavy-tailed, zero, tiny, huge, tie and non-finite rows; 100 columns make
    a partial last block for MX (32) and NVFP4 (16)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g)
    x[1] = torch.randn(cols, generator=g) ** 5                 # heavy tails
    x[2] = torch.randn(cols, generator=g) / torch.rand(cols, generator=g)  # Cauchy-like
    x[3] = 0.0                                                  # all-zero blocks
    x[4, :48] = 0.0                                             # zero blocks in a live row
    x[4, 96:] = 0.0                                             # a zero partial block
    x[5] *= 1e-38                                               # subnormal territory
    x[6] *= 1e-44                                               # float32 subnormals
    x[7] *= 1e37                                                # near the float32 top
    x[8] *= 3e38
    # round-to-nearest ties of E2M1 at scale 1 (amax 6): 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5
    ties = torch.tensor([6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -2.5, -5.0, 0.0])
    x[9, :32] = ties.repeat(3)[:32]
    x[10, :32] = ties.repeat(3)[:32] * 2.0**-100                # the same ties, tiny scale
    x[11, :16] = torch.tensor([448.0 * 6] * 2 + [1.0] * 14)     # NVFP4 scale at 448
    x[12] = torch.randn(cols, generator=g).abs() * -1e-3        # negative, rounds to -0
    x[13, 5] = float("nan")
    x[14, 40] = float("inf")
    x[15, 70] = -float("inf")
    x[16, :] = 1.0                                              # equal values (4/6 ties)
    x[17] = (torch.randn(cols, generator=g) * 4).round() / 4    # on/near grid levels
    return x


# NVFP4's tensor scale couples the rows (a 3e38 row kills every Gaussian block), so its
# tests also run the rows in groups of like magnitude, each group a tensor of its own.
_GROUPS = [[0, 1, 2, 3, 4, 9, 10, 11, 12, 16, 17], [5], [6], [7], [8], [13, 14, 15, 0]]


def _pieces(spec, x):
    if not spec.startswith("nvfp4"):
        return [x]
    return [x] + [x[rows] for rows in _GROUPS]


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.float().cpu(), b.float().cpu()
    na, nb = torch.isnan(a), torch.isnan(b)
    return bool(torch.equal(na, nb)
                and torch.equal(a.view(torch.int32)[~na], b.view(torch.int32)[~nb]))


def _assert_same(got, want, what):
    (y, m), (y_r, m_r) = got, want
    assert y.dtype == y_r.dtype and y.shape == y_r.shape, what
    bad = (y.float().cpu().view(torch.int32) != y_r.float().view(torch.int32)) & ~(
        torch.isnan(y.float().cpu()) & torch.isnan(y_r.float()))
    assert _bits_equal(y, y_r), (what, bad.sum().item(), bad.nonzero()[:4].tolist())
    assert m.dtype == torch.bool and torch.equal(m.cpu(), m_r.cpu()), (
        what, (m.cpu() != m_r.cpu()).sum().item())


def _kernel(rep, x, u=None):
    blk = rep.plan.block
    assert blk is not None, rep.spec
    xd = x.to(DEV)
    return block_quant(xd, blk.kind, blk.element, blk.four_six,
                       None if u is None else u.to(DEV), blk.headroom, backend="triton")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("spec", RTN_SPECS)
def test_block_kernel_equals_formats_rtn(spec, dtype):
    rep = parse(spec)
    for x in _pieces(spec, _hard_data().to(dtype)):
        got = _kernel(rep, x)
        _assert_same(got, rep.project(x), spec)
        _assert_same(got, block_quant(x, *_args(rep), backend="torch"), spec)


def _args(rep):
    blk = rep.plan.block
    return blk.kind, blk.element, blk.four_six, None, blk.headroom


@pytest.mark.parametrize("spec", ["mxfp4", "mxint8", "nvfp4"])
def test_block_kernel_shapes_and_fp16(spec):
    """1-D, 3-D, rows shorter than a block, one element, strided, fp16, empty."""
    rep = parse(spec)
    g = torch.Generator().manual_seed(1)
    cases = [torch.randn(77, generator=g), torch.randn(2, 3, 40, generator=g),
             torch.randn(5, 7, generator=g), torch.randn(1, 1, generator=g),
             torch.randn(48, 6, generator=g).t(),                         # non-contiguous
             (torch.randn(9, 64, generator=g) * 100).half()]
    for x in cases:
        _assert_same(_kernel(rep, x), rep.project(x), (spec, tuple(x.shape), x.dtype))
    for shape in ((0, 32), (3, 0)):
        y, m = _kernel(rep, torch.zeros(shape))
        assert y.shape == m.shape == shape and m.dtype == torch.bool


def test_block_kernel_big_gaussian_tensor():
    """Several program instances (more blocks than one program holds under the interpreter)."""
    x = torch.randn(80, 1024, generator=torch.Generator().manual_seed(2))
    for spec in ("mxfp8", "nvfp4@46"):
        rep = parse(spec)
        _assert_same(_kernel(rep, x), rep.project(x), spec)


@pytest.mark.parametrize("spec", RTN_SPECS)
def test_block_kernel_sr_equals_reference_and_formats(spec):
    rep = parse(spec)
    sr = parse(spec + "@sr")
    assert sr.plan.block is not None and sr.plan.block.stochastic
    assert sr.plan.block == dataclasses.replace(rep.plan.block, stochastic=True)
    kind, element, four_six, _, headroom = _args(rep)
    g = torch.Generator().manual_seed(4)
    for x in _pieces(spec, _hard_data(seed=3)):
        u = torch.rand(x.shape, generator=g)
        got = _kernel(rep, x, u)
        _assert_same(got, block_quant_ref(x, kind, element, four_six, u, headroom), spec)
        _assert_same(got, sr.project_with_uniforms(x, u), spec + "@sr")
    # bf16 input, same uniforms
    xb = _hard_data(seed=3)[_GROUPS[0]].bfloat16()
    u = torch.rand(xb.shape, generator=g)
    _assert_same(_kernel(rep, xb, u), sr.project_with_uniforms(xb, u), spec + "@sr bf16")


@pytest.mark.parametrize("element", ["e2m1", "e4m3fn", "int8"])
def test_sr_reference_is_the_contract(element):
    """u = 0 rounds every off-grid magnitude up, u -> 1 rounds it down; on-grid stays."""
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(5))
    up, _ = block_quant_ref(x, "mx", element, u=torch.zeros_like(x))
    down, _ = block_quant_ref(x, "mx", element, u=torch.full_like(x, 1.0 - 2**-24))
    near, _ = block_quant_ref(x, "mx", element)
    assert (down.abs() <= x.abs()).all()                         # lo: never away from 0
    assert ((up.abs() >= x.abs()) | (up == down)).all()          # hi, or saturated (lo = hi)
    assert (up != down).any()
    assert ((near == up) | (near == down)).all()                 # RTN picks one neighbour
    assert torch.equal(torch.sign(up[up != 0]), torch.sign(x[up != 0]))
    # a value on the grid is returned as is, whatever u is (its block scale is unchanged)
    y, _ = block_quant_ref(near, "mx", element, u=torch.rand(x.shape))
    assert torch.equal(y, near)


@pytest.mark.parametrize("element", ["e2m1", "e2m3", "e3m2", "e4m3fn", "e5m2", "int8"])
def test_element_rounding_matches_its_level_table(element):
    """The one element rounding (kernels.reference) against independent oracles on the
    element's level table: the nearest level by brute force (ties to the even code,
    saturation at the top) and, with uniforms, formats' generic level-set SR rule."""
    import numpy as np
    from raysweep.formats import rounding
    from raysweep.kernels.reference import round_element_ref

    g = torch.Generator().manual_seed(11)
    e, m, fn, top, _ = block_element(element)
    v = torch.randn(20000, generator=g) * torch.logspace(-3, 2.5, 20000) * (top / 4)
    ties = (torch.arange(-4 * 2**m, 4 * 2**m) + 0.5) * 2.0 ** -m   # midpoints, one binade
    v = torch.cat([v, ties, ties * 2**-8, torch.tensor([0.0, -0.0, 1e-45, 3 * top])])
    u = torch.rand(v.shape, generator=g)
    if e == 0:
        pos = np.arange(128, dtype=np.float64)
    else:
        pos = np.asarray(rounding.positive_levels(e, m, fn), dtype=np.float64)
    a = np.minimum(np.abs(v.double().numpy()), pos[-1])
    d = np.abs(a[:, None] - pos[None, :])
    best = d.min(axis=1, keepdims=True)
    cand = np.where(d == best, np.arange(len(pos))[None, :], 10**9)
    even = np.where(cand % 2 == 0, cand, 10**9).min(axis=1)       # ties: the even code
    idx = np.where(even < 10**9, even, cand.min(axis=1))
    want = torch.from_numpy(np.copysign(pos[idx], v.double().numpy())).float()
    assert _bits_equal(round_element_ref(v, element), want)
    want_sr = rounding.stochastic_round_levels(v, torch.from_numpy(pos).float(), u)[0]
    assert _bits_equal(round_element_ref(v, element, u), want_sr)
    assert pos[-1] == top


def test_sr_is_unbiased():
    """E[SR(x)] = x inside the grid: the mean over draws approaches x."""
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(6))
    g = torch.Generator().manual_seed(7)
    draws = 400
    u = torch.rand((draws, *x.shape), generator=g)
    y, _ = block_quant(x.expand(draws, *x.shape).reshape(-1, 64), "mx", "e2m1",
                       u=u.reshape(-1, 64), backend="triton")
    mean = y.reshape(draws, *x.shape).mean(0)
    near, _ = block_quant_ref(x, "mx", "e2m1")
    err_sr = (mean - x).abs().mean()
    err_rtn = (near - x).abs().mean()
    assert err_sr < err_rtn / 4, (err_sr, err_rtn)


def test_plans_route_block_formats():
    from raysweep.formats.base import BlockScale

    assert parse("mxfp4").plan.block == BlockScale("mx", "e2m1")
    assert parse("mxfp8").plan.block == BlockScale("mx", "e4m3fn")
    assert parse("mxint8").plan.block == BlockScale("mx", "int8")
    assert parse("nvfp4@46").plan.block == BlockScale("nvfp4", "e2m1", four_six=True)
    assert parse("nvfp4@2d").plan.block is None                  # @2d: the torch path
    assert parse("mxfp4@q").plan.block == BlockScale("mx", "e2m1", headroom=0.75)
    for spec, element in ELEMENTS.items():
        assert parse(spec).plan.block.element == element
        e, m, fn, top, edge = block_element(element)
        assert edge == parse(spec).edge                          # the trust rule of formats


def test_bad_arguments_are_errors():
    x = torch.zeros(2, 32)
    with pytest.raises(RaysweepError, match="kind.*allowed: mx, nvfp4"):
        block_quant(x, "mxfp4", "e2m1", backend="triton")
    with pytest.raises(RaysweepError, match="element.*allowed: int8"):
        block_quant(x, "mx", "fp4", backend="torch")
    with pytest.raises(RaysweepError, match="nvfp4 takes e2m1"):
        block_quant(x, "nvfp4", "e4m3fn", backend="triton")
    with pytest.raises(RaysweepError, match="four_six"):
        block_quant(x, "mx", "e2m1", four_six=True, backend="triton")
    with pytest.raises(RaysweepError, match="uniforms must have x's shape"):
        block_quant(x, "mx", "e2m1", u=torch.zeros(2, 31), backend="triton")
    with pytest.raises(RaysweepError, match="headroom"):
        block_quant(x, "nvfp4", "e2m1", headroom=0.75, backend="torch")


def test_block_quant_op_traces_fullgraph():
    """raysweep::block_quant is a custom op with a fake implementation: no graph break."""
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(8)).to(DEV)

    def f(t):
        y, m = block_quant(t, "nvfp4", "e2m1", backend="triton")
        return y * m

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), f(x))
    # schema, fake (meta) implementation and AOT dispatch agree with the real kernel
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(9)).to(DEV)
    torch.library.opcheck(torch.ops.raysweep.block_quant.default,
                          (x.bfloat16(), "mx", "int8", False, u, 0.75))


@pytest.mark.parametrize("spec", ["mxfp4", "nvfp4@46", "mxfp8@sr", "mxfp4@q"])
def test_layer_routes_block_formats_to_the_kernel(spec, monkeypatch):
    """CompressedLinear with backend="triton" calls the kernel and matches backend="torch"."""
    from raysweep.kernels import block as block_mod

    from raysweep.train.layers import CompressedLinear

    calls = []
    real = block_mod.block_quant_triton
    monkeypatch.setattr(block_mod, "block_quant_triton",
                        lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    torch.manual_seed(9)
    lin = CompressedLinear(64, 32, weights=spec, activations=spec, backend="torch")
    lin_t = CompressedLinear(64, 32, weights=spec, activations=spec, backend="triton")
    lin_t.weight = lin.weight
    x = torch.randn(5, 64, requires_grad=True)
    x_t = x.detach().clone().requires_grad_(True)
    torch.manual_seed(10)
    y = lin(x)
    y.square().sum().backward()
    torch.manual_seed(10)
    y_t = lin_t(x_t)
    y_t.square().sum().backward()
    assert len(calls) == 2                                       # weight and activations
    # SR too: the layer draws formats.rounding.uniforms(x) where formats would, in order
    assert torch.equal(y, y_t)
    assert torch.equal(x.grad, x_t.grad)


_AOT = r"""
import os, sys
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from raysweep.kernels.block import _block_quant_kernel
from raysweep.kernels.reference import block_element
for kind, el, fs, sr, bf16, head in [("mx", "int8", False, True, True, 0.75),
                                     ("nvfp4", "e2m1", True, True, False, 1.0)]:
    e, m, fn, top, edge = block_element(el)
    k = 32 if kind == "mx" else 16
    xt = "*i16" if bf16 else "*fp32"
    sig = {"x_ptr": xt, "u_ptr": "*fp32", "s_ptr": "*fp32", "y_ptr": xt, "m_ptr": "*u8",
           "n_blocks": "i32", "n_cols": "i32", "nb": "i32", "stride_x": "i32"}
    const = dict(K=k, BLOCK_G=4096 // k, NV=kind == "nvfp4", E=e, M=m, TOP=top, EDGE=edge,
                 EMAX=0 if e == 0 else 1 << (e - 1), FOUR_SIX=fs, HEAD=head, SR=sr, BF16=bf16)
    sig.update(dict.fromkeys(const, "constexpr"))
    out = triton.compile(ASTSource(fn=_block_quant_kernel, signature=sig, constexprs=const),
                         target=GPUTarget("cuda", 90, 32),
                         options={"num_warps": 4, "enable_fp_fusion": False})
    ptx = out.asm["ptx"]
    bad = [w for w in (".ftz", "fma.rn.f32", "div.full", "div.approx") if w in ptx]
    print(kind, el, "div.rn.f32" in ptx, bad)
    sys.exit(1) if bad or "div.rn.f32" not in ptx else None
"""


@pytest.mark.slow  # a subprocess and two PTX compilations: 5-35 s cold, ~8 s with Triton's cache
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CUDA tests run the kernel itself")
def test_kernel_compiles_for_cuda_without_a_gpu():
    """The kernel compiles for sm_90 (no GPU needed): IEEE divisions, no FMA, no flush to zero."""
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    res = subprocess.run([sys.executable, "-c", _AOT], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert res.stdout.count("True []") == 2, res.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_backend_uses_the_kernel_on_cuda():
    x = _hard_data()
    for spec in ("mxfp4", "nvfp4@46"):
        rep = parse(spec)
        _assert_same(block_quant(x.cuda(), *_args(rep), backend="auto"), rep.project(x), spec)
