"""CompressedLinear, its estimators and the converter."""

import copy

import pytest
import torch
from raysweep.formats import parse
from raysweep.formats.hadamard import rotate as block_hadamard
from torch import nn

from raysweep.errors import RaysweepError
from raysweep.train.layers import (
    CompressedLinear,
    compress,
    convert_linears,
    parse_estimator,
    rbbm_mask,
)

ALPHA4 = parse("int4").grid[2]  # QuEST alpha*(4) = 2.51393..., the paper's GMSE reference values


def _quest64(x: torch.Tensor, bits: int = 4, alpha: float = ALPHA4):
    """Float64 reference of the QuEST int grid: (x_hat, trust mask), per row."""
    x = x.double()
    s = x.pow(2).mean(-1, keepdim=True).sqrt()
    step = 2 * alpha / (2**bits - 1)
    t = (x / s).clamp(-alpha, alpha)
    q = (torch.round(t / step + 0.5) * step - step / 2) * s
    return q, (q - x).abs() <= step / 2 * s


def _linear(spec_w, spec_a, est="auto", backend="torch", seed=0, d_in=64, d_out=48):
    torch.manual_seed(seed)
    return CompressedLinear(d_in, d_out, spec_w, spec_a, estimator=est, backend=backend)


def test_trust_gradient_equals_float64_reference():
    layer = _linear("int4", "int4", "trust")
    x = torch.randn(10, 64) * 2
    x[:, 0] = 12.0                               # outliers: clipped, no gradient
    x.requires_grad_()
    with torch.no_grad():
        layer.weight[:, 5] = 1.0
    c = torch.randn(10, 48)
    (layer(x) * c).sum().backward()

    w64 = layer.weight.detach().double()
    xq, mx = _quest64(x.detach())
    wq, mw = _quest64(w64)
    gx = (c.double() @ wq) * mx                 # d/dx_hat, then the trust mask
    gw = (c.double().T @ xq) * mw
    assert not mx[:, 0].any() and not mw[:, 5].any()   # some gradients are masked
    torch.testing.assert_close(x.grad.double(), gx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad.double(), gw, rtol=1e-5, atol=1e-5)


def test_hadamard_trust_mask_is_applied_in_the_rotated_domain():

    rep = parse("int4@h")
    x = (torch.randn(6, 128) * 2).requires_grad_()

    g = torch.randn(6, 128)
    compress(x, rep, "trust", "torch").backward(g)
    xr = block_hadamard(x.detach(), 128)
    _, m = _quest64(xr)
    expect = block_hadamard((block_hadamard(g, 128).double() * m).float(), 128)
    torch.testing.assert_close(x.grad, expect, rtol=1e-5, atol=1e-5)
    assert not torch.equal(x.grad, g)


def test_ste_passes_every_gradient():
    layer = _linear("int2", "int2", "ste")
    x = torch.randn(5, 64).requires_grad_()
    layer(x).sum().backward()

    w_hat, _ = parse("int2").project(layer.weight.detach())
    torch.testing.assert_close(x.grad, torch.ones(5, 48) @ w_hat)


def test_bf16_layer_matches_nn_linear_step_for_step():
    torch.manual_seed(1)
    plain = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 16))
    comp = convert_linears(copy.deepcopy(plain), "bf16", "bf16")
    assert isinstance(comp[0], CompressedLinear) and isinstance(comp[2], CompressedLinear)
    opt_p = torch.optim.AdamW(plain.parameters(), lr=1e-2)
    opt_c = torch.optim.AdamW(comp.parameters(), lr=1e-2)
    for step in range(4):
        x = torch.randn(8, 32, generator=torch.Generator().manual_seed(step))
        for model, opt in ((plain, opt_p), (comp, opt_c)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        for p, q in zip(plain.parameters(), comp.parameters()):
            assert torch.equal(p, q), step


def test_converter_swaps_only_filtered_linears_and_shares_parameters():
    model = nn.ModuleDict({"blocks": nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)),
                           "head": nn.Linear(8, 4), "emb": nn.Embedding(10, 8)})
    w0 = model["blocks"][0].weight
    convert_linears(model, "int4", "int8", filter_fn=lambda m, name: name.startswith("blocks."),
                    estimator="ste", backend="torch")
    assert type(model["blocks"][0]) is CompressedLinear
    assert type(model["blocks"][2]) is CompressedLinear
    assert type(model["head"]) is nn.Linear and type(model["emb"]) is nn.Embedding
    assert model["blocks"][0].weight is w0
    assert model["blocks"][0].weights_spec == "int4" and model["blocks"][2].backend == "torch"


def test_weight_projection_runs_in_fp32_under_autocast():

    layer = _linear("int4", "bf16")
    x = torch.randn(4, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    w_hat, _ = parse("int4").project(layer.weight.detach().float())
    ref = torch.nn.functional.linear(x.bfloat16(), w_hat.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.equal(y, ref)


# ----------------------------------------------------------------------------- sparsity


def test_sparse_mask_estimator_backward_equals_forward_mask():

    x = torch.randn(4, 40).requires_grad_()
    y = compress(x, parse("sparse50"), "mask", "torch")
    keep = y.detach() != 0
    assert (keep.sum(-1) == 20).all()
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, keep.float())


WORKED_X = torch.tensor([[0.1, -0.3, 0.5, -0.7, 0.9, -1.1, 1.3, -1.5]])


def test_rbbm_worked_example():
    """sparse50 on 8 entries: RMS 0.92195, T_k = 0.7, Phi(T_k/RMS) = 0.77615.

    a = 0.5: T_a = RMS * Phi^-1(0.5 + 0.5 * 0.27615) = 0.32574, so the pruned
    0.1 and -0.3 get gradients, the band [0.32574, 0.7] (0.5, -0.7) does not.
    a = 0.25: T_a = 0.50244 lets 0.5 through as well.
    """
    keep = WORKED_X.abs() > 0.8
    m = rbbm_mask(WORKED_X, keep, 0.5)
    assert m.tolist() == [[True, True, False, False, True, True, True, True]]
    m = rbbm_mask(WORKED_X, keep, 0.25)
    assert m.tolist() == [[True, True, True, False, True, True, True, True]]
    m = rbbm_mask(WORKED_X, keep, 0.75)                       # T_a = 0.16035
    assert m.tolist() == [[True, False, False, False, True, True, True, True]]


def test_rbbm_endpoints():
    """a = 1 runs the formula (Phi^-1(0.5) = 0, so T_a = 0): exactly the baseline mask.
    Near a = 0 the formula passes every pruned entry but those equal to T_k."""
    x = torch.randn(16, 200)
    keep = x.abs() >= x.abs().kthvalue(100, -1, keepdim=True).values
    assert torch.equal(rbbm_mask(x, keep, 1.0), keep)          # a = 1: T_a = 0, baseline
    assert torch.equal(rbbm_mask(x, keep, 1 - 1e-12), keep)    # continuous there
    assert rbbm_mask(x, keep, 0.0).all()                       # a = 0: every gradient passes
    t_k = torch.where(keep, torch.zeros_like(x), x.abs()).amax(-1, keepdim=True)
    near0 = rbbm_mask(x, keep, 1e-12)
    assert (near0 | (x.abs() == t_k)).all()                    # band only at T_k itself
    assert near0[x.abs() < t_k * (1 - 1e-4)].all()


def test_rbbm_estimator_in_a_layer():

    x = WORKED_X.clone().requires_grad_()
    compress(x, parse("sparse50"), "rbbm:0.5", "torch").backward(torch.ones(1, 8))
    assert x.grad.tolist() == [[1, 1, 0, 0, 1, 1, 1, 1]]


def test_composite_chains_masks():
    """sparse50+int4: gradient = keep mask * trust mask of the pruned tensor."""

    x = (torch.randn(6, 64) * 2).requires_grad_()
    g = torch.randn(6, 64)
    compress(x, parse("sparse50+int4"), "auto", "torch").backward(g)
    xs, keep = parse("sparse50").project(x.detach())
    keep = keep if keep is not None else xs != 0
    _, trust = parse("int4").project(xs)
    assert torch.equal(x.grad, g * keep * trust)


# ----------------------------------------------------------------------------- backends, errors


def test_triton_backend_matches_torch_backend():
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(2)
    x = torch.randn(3, 2, 64, device=dev)
    for spec in ("int4", "2:4", "sparse50", "sparse50+int4"):
        a = _linear(spec, spec, backend="torch", d_in=64, d_out=16).to(dev)
        b = _linear(spec, spec, backend="triton", d_in=64, d_out=16).to(dev)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = a(xa), b(xb)
        assert torch.equal(ya, yb), spec
        ya.sum().backward()
        yb.sum().backward()
        assert torch.equal(xa.grad, xb.grad) and torch.equal(a.weight.grad, b.weight.grad), spec


@pytest.mark.parametrize("bad", ["rbbm", "rbbm:2", "rbbm:x", "quest", ""])
def test_bad_estimator_names_the_field(bad):
    with pytest.raises(RaysweepError, match="estimator"):
        parse_estimator(bad)


def test_bad_backend_names_the_field():
    with pytest.raises(RaysweepError, match="backend"):
        CompressedLinear(4, 4, "int4", "bf16", backend="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU with float8")
def test_fp8_forward_matches_bf16_path():
    from raysweep.train.layers import fp8_supported

    if not fp8_supported(torch.device("cuda")):
        pytest.skip("no float8 tensor cores")
    torch.manual_seed(3)
    base = nn.Linear(256, 128, bias=False, device="cuda")
    a = CompressedLinear.from_linear(base, "int4", "int4", backend="triton")
    b = CompressedLinear.from_linear(base, "int4", "int4", backend="triton", fp8_forward=True)
    x = torch.randn(64, 256, device="cuda") * 2
    g = torch.randn(64, 128, device="cuda", dtype=torch.bfloat16)
    grads = []
    for layer in (a, b):
        xi = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = layer(xi)
        y.backward(g)
        grads.append((y.detach().float(), xi.grad.clone(), base.weight.grad.clone()))
        base.weight.grad = None
    (ya, gxa, gwa), (yb, gxb, gwb) = grads
    torch.testing.assert_close(yb, ya, rtol=2e-2, atol=2e-2)   # fp32-exact vs bf16 operands
    torch.testing.assert_close(gxb, gxa, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(gwb, gwa, rtol=1e-2, atol=1e-2)
