"""Triton kernels == torch references, bit for bit, at awkward shapes.

On CPU the kernels run under TRITON_INTERPRET=1 (tests/conftest.py); with CUDA
the same tests run compiled on the GPU. Shapes stay small: an interpreted
program instance costs milliseconds.
"""

import pytest
import torch
from raysweep.kernels import int_quant, masked_grad, nm_mask, topk_mask
from raysweep.kernels.reference import int_quant_ref, rms_scale

DEV = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = [(3, 129), (17, 300), (2, 3, 64), (1, 1), (4, 2), (2, 9000)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
GRIDS = [(1, 0.79788), (2, 1.49353), (4, 2.51393), (8, 3.8849)]


def _data(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 3.0
    x.view(-1, shape[-1])[0] = 0.0  # a row of zeros
    return x.to(device=DEV, dtype=dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_int_quant_matches_reference(shape, dtype):
    x = _data(shape, dtype)
    for bits, clip in GRIDS:
        y_t, m_t = int_quant(x, bits, clip, backend="triton")
        y_r, m_r = int_quant(x, bits, clip, backend="torch")
        assert y_t.dtype == dtype and m_t.dtype == torch.bool and y_t.shape == x.shape
        assert torch.equal(y_t, y_r), (bits, (y_t != y_r).sum().item())
        assert torch.equal(m_t, m_r), (bits, (m_t != m_r).sum().item())


def test_int_quant_grid_semantics():
    """The reference is the documented QuEST mid-rise quantizer: 2^b levels, half-step trust."""
    x = _data((8, 256), torch.float32, seed=1)[1:]
    y, m = int_quant_ref(x, 4, 2.51393)
    s = rms_scale(x)
    levels = torch.unique(torch.round(y / s * 1e4))
    assert len(levels) <= 16
    step = 2 * 2.51393 / 15
    q = y / s / step + 0.5                           # integer codes -7 .. 8
    assert torch.allclose(q, q.round(), atol=1e-3)
    assert q.min() >= -7 - 1e-3 and q.max() <= 8 + 1e-3
    inside = (x / s).abs() <= 2.51393
    assert m[inside].all()                           # unclipped points always trusted
    far = (x / s).abs() > 2.51393 + step / 2 + 1e-4
    assert not m[far].any()                          # clipped by > half a step: no gradient


def test_int_quant_tie_rounds_half_to_even():
    """Points exactly on a grid midpoint round like torch.round (half to even)."""
    x = torch.tensor([[1.0, -1.0, 1.0, -1.0]], device=DEV)  # RMS 1: t/step + 1/2 = 4/3.. no tie
    # int1 with clip 1: step = 2, u = t/2 + 1/2 in {0, 1}: t = +-1 gives exact 1.0 / 0.0
    y_t, _ = int_quant(x, 1, 1.0, backend="triton")
    y_r, _ = int_quant(x, 1, 1.0, backend="torch")
    assert torch.equal(y_t, y_r)
    # int2, clip 1.5: step 1, u = t + 0.5; t = 0.5 -> u = 1.0 (exact), t = 1.5 -> 2.0
    x2 = torch.tensor([[0.5, -0.5, 1.5, -1.5] * 8], device=DEV) / (1.25 ** 0.5)
    y_t, _ = int_quant(x2, 2, 1.5, backend="triton")
    y_r, _ = int_quant(x2, 2, 1.5, backend="torch")
    assert torch.equal(y_t, y_r)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_grad_matches_reference(dtype):
    g = _data((17, 300), dtype)
    m = torch.rand(17, 300, generator=torch.Generator().manual_seed(2)).to(DEV) > 0.3
    out = masked_grad(g, m, backend="triton")
    assert torch.equal(out, masked_grad(g, m, backend="torch"))
    assert torch.equal(out, g * m)


@pytest.mark.parametrize("shape", [(3, 129), (17, 300), (2, 3, 64), (4, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_topk_mask_matches_reference(shape, dtype):
    x = _data(shape, dtype)
    n = shape[-1]
    for k in sorted({1, n // 3, n // 2, n - 1}):
        if not 0 < k < n:
            continue
        m_t = topk_mask(x, k, backend="triton")
        m_r = topk_mask(x, k, backend="torch")
        assert torch.equal(m_t, m_r), k
        counts = m_t.reshape(-1, n).sum(-1)
        assert (counts[1:] >= k).all()               # ties (bf16) may keep more, never fewer


def test_topk_mask_exact_count_on_distinct_values():
    g = torch.Generator().manual_seed(3)
    sign = torch.randint(0, 2, (300,), generator=g) * 2 - 1
    x = ((torch.randperm(300, generator=g) + 1) * sign).float().to(DEV)  # distinct |x|
    m = topk_mask(x.reshape(3, 100), 25, backend="triton")
    assert torch.equal(m.sum(-1).cpu(), torch.tensor([25, 25, 25]))
    thr = x.reshape(3, 100).abs().topk(25, -1).values[:, -1:]
    assert torch.equal(m, x.reshape(3, 100).abs() >= thr)


@pytest.mark.parametrize("nm", [(2, 4), (1, 4), (4, 8), (3, 6)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nm_mask_matches_reference(nm, dtype):
    n, m = nm
    x = _data((5, 24 * 7), dtype)
    x[1, :12] = 1.0                                  # ties: earlier entries win
    k_t = nm_mask(x, n, m, backend="triton")
    k_r = nm_mask(x, n, m, backend="torch")
    assert torch.equal(k_t, k_r)
    assert (k_t.reshape(5, -1, m).sum(-1) == n).all()  # exactly n per group, ties included
    if n == 2 and m == 4:
        assert k_t[1, :4].tolist() == [True, True, False, False]


def test_bad_backend_is_an_error():
    from raysweep.errors import RaysweepError

    with pytest.raises(RaysweepError, match="backend"):
        int_quant(torch.zeros(2, 4), 4, 2.5, backend="cuda")


@pytest.mark.parametrize("shape", [(3, 129), (17, 300)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int_codes_match_reference(shape, dtype):
    """FP8 codes r - 1/2 and row scales step * s, and codes * scale == x_hat (fp32)."""
    from raysweep.kernels.quant import int_quant_triton
    from raysweep.kernels.reference import int_codes_ref

    x = _data(shape, dtype)
    y, m, c, sc = int_quant_triton(x, 4, 2.51393, codes=True)
    c_r, sc_r = int_codes_ref(x, 4, 2.51393)
    assert torch.equal(c.float(), c_r.float()) and torch.equal(sc, sc_r)
    assert torch.equal((y, m)[1], int_quant(x, 4, 2.51393, backend="torch")[1])
    assert set(c.float().unique().tolist()) <= {k + 0.5 for k in range(-8, 8)}
    y32, _ = int_quant(x.float(), 4, 2.51393, backend="torch")
    torch.testing.assert_close(c.float() * sc, y32.reshape(c.shape), rtol=1e-6, atol=0)
    y_bf, _ = int_quant_triton(x, 4, 2.51393, out_dtype=torch.bfloat16)
    assert torch.equal(y_bf, int_quant(x, 4, 2.51393, backend="torch")[0].bfloat16())


def test_backend_switch_is_defined_once():
    from raysweep.kernels import BACKENDS, check_backend, use_triton

    from raysweep.errors import RaysweepError

    assert BACKENDS == ("auto", "triton", "torch")
    assert [check_backend(b) for b in BACKENDS] == list(BACKENDS)
    cpu = torch.zeros(1)
    assert use_triton("triton", cpu) and not use_triton("torch", cpu)
    assert use_triton("auto", cpu) is False
    for bad in ("cuda", "", None, "Triton"):
        with pytest.raises(RaysweepError, match="backend.*auto, triton, torch"):
            use_triton(bad, cpu)
