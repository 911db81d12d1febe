"""Stochastic rounding (@sr), random-sign Hadamard (@rh{B}), kept outliers (@o{P}), the
zero-level int grid (intz{b}) and Quartet's MXFP4 headroom (@q): the rounding contract of
formats/rounding.py by hand and against its literal reference, unbiasedness, explicit
uniforms, spec text, bits, Monte Carlo GMSE, and a training step through the layer."""

import math

import numpy as np
import pytest
import torch
from raysweep.formats import parse
from raysweep.formats.hadamard import Rotated, random_signs, rotate
from raysweep.formats.rounding import (
    positive_levels,
    round_to_float,
    stochastic_round_float,
    stochastic_round_int,
    stochastic_round_levels,
)

from raysweep.errors import RaysweepError, SpecError

FLOATS = [(2, 1, False), (2, 3, False), (3, 2, False), (4, 3, True), (5, 2, False)]


def _points(pos: np.ndarray, n: int = 4000, seed: int = 0) -> torch.Tensor:
    """Levels, midpoints, near-levels, subnormals, saturation and random points (both signs)."""
    rng = np.random.default_rng(seed)
    mids = (pos[1:] + pos[:-1]) / 2
    pts = np.concatenate([pos, mids, pos * (1 + 1e-6), pos[1:] * (1 - 1e-6),
                          [pos[-1] * 1.01, pos[-1] * 3, 1e-30, 0.0, np.inf],
                          rng.random(n) * pos[-1] * 1.2,
                          np.exp(rng.uniform(np.log(pos[1] / 4), np.log(pos[-1]), n))])
    pts = pts.astype(np.float32)
    return torch.from_numpy(np.concatenate([pts, -pts]))


# ----------------------------------------------------------------------------- the contract


def test_stochastic_round_float_by_hand():
    v = torch.tensor([2.5, 2.5, 5.0, 5.0, 0.3, 0.3, 7.0, -2.75, 4.0, 0.0])
    u = torch.tensor([0.49, 0.5, 0.2, 0.7, 0.59, 0.61, 0.0, 0.74, 0.99, 0.0])
    q, a = stochastic_round_float(v, 2, 1, False, u)
    # 2.5 in [2, 3]: frac 0.5; 5 in [4, 6]: 0.5; 0.3 in [0, 0.5]: 0.6; 7 saturates;
    # -2.75: frac 0.75 -> -3 when u < 0.75; a level (4) stays; 0 stays
    assert q.tolist() == [3.0, 2.0, 6.0, 4.0, 0.5, 0.0, 6.0, -3.0, 4.0, 0.0]
    assert torch.equal(a, v.abs())


@pytest.mark.parametrize("e,m,fn", FLOATS)
def test_stochastic_round_float_is_the_contract(e, m, fn):
    """The bit-arithmetic version equals the literal lo/hi rule on every kind of point."""
    pos_np = np.array(positive_levels(e, m, fn))
    v = _points(pos_np)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        u = torch.rand(v.shape, generator=gen)
        got, _ = stochastic_round_float(v, e, m, fn, u)
        ref, _ = stochastic_round_levels(v, torch.tensor(pos_np, dtype=torch.float32), u)
        assert torch.equal(got, ref)
        assert torch.equal(got.signbit(), v.signbit())
    # u = 0 always rounds up off a level, u -> 1 down: the two neighbours
    up, _ = stochastic_round_float(v, e, m, fn, torch.zeros_like(v))
    down, _ = stochastic_round_float(v, e, m, fn, torch.full_like(v, 1 - 2**-24))
    rtn, _ = round_to_float(v, e, m, fn)
    assert ((rtn == up) | (rtn == down)).all()


def test_stochastic_round_int_is_the_contract():
    w = _points(np.arange(0.0, 128.0))
    u = torch.rand(w.shape, generator=torch.Generator().manual_seed(2))
    got, _ = stochastic_round_int(w, u, 127.0)
    ref, _ = stochastic_round_levels(w, torch.arange(0.0, 128.0), u)
    assert torch.equal(got, ref)
    q, _ = stochastic_round_int(torch.tensor([1.25, 1.25, -0.5, -0.5, 3.0]),
                                torch.tensor([0.24, 0.26, 0.4, 0.6, 0.0]))
    assert q.tolist() == [2.0, 1.0, -1.0, -0.0, 3.0]


def test_stochastic_round_is_unbiased_on_the_grid():
    v = torch.linspace(-5.9, 5.9, 301).repeat(20000, 1)
    u = torch.rand(v.shape, generator=torch.Generator().manual_seed(3))
    q, _ = stochastic_round_float(v, 2, 1, False, u)
    mean, sd = q.mean(0), q.std(0)
    assert ((mean - v[0]).abs() <= 5 * sd / math.sqrt(v.shape[0]) + 1e-6).all()


# ----------------------------------------------------------------------------- every @sr spec

UNBIASED = ["int4@sr", "int2@sr", "int1@sr", "int4@absmax@sr", "int3@g32@sr", "intz4@sr",
            "intz3@absmax@g32@sr", "fp4@sr", "fp8@sr", "e3m2@absmax@sr", "lloyd3@sr",
            "ternary@sr", "mxfp4@sr", "mxfp4@q@sr", "mxfp6@sr", "mxfp8@sr", "mxint8@sr",
            "nvfp4@sr", "nvfp4@46@sr", "nvfp4@2d@sr", "int4@sr@o2"]


@pytest.mark.parametrize("spec", UNBIASED)
def test_sr_spec_is_unbiased(spec):
    """E[x_hat] = x (5 standard errors) wherever the rounding is random (not saturated)."""
    rep = parse(spec)
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(4)) * 3.0
    n = 3000
    # n copies of x in one tensor: every row (group, block, 16 x 16 tile, tensor amax) of a
    # copy sees what x alone sees, so this is n independent projections of x
    xs = x.repeat(n, 1)
    u = torch.rand(xs.shape, generator=torch.Generator().manual_seed(5))
    out = rep.project_with_uniforms(xs, u)[0].reshape(n, *x.shape)
    out = out.double()
    lo, hi, mean = out.amin(0), out.amax(0), out.mean(0)
    random = hi > lo
    assert random.float().mean() > 0.5, spec     # the check is not vacuous
    # two outcomes lo < hi, P(hi) = (x - lo) / (hi - lo): the standard error of the mean
    p = ((x.double() - lo) / (hi - lo).clamp_min(1e-300)).clamp(0, 1)
    se = (hi - lo) * (p * (1 - p)).sqrt() / math.sqrt(n)
    z = (mean - x.double()).abs()[random] / se[random].clamp_min(1e-300)
    assert z.max() < 5.0, (spec, float(z.max()))


@pytest.mark.parametrize("spec", ["int4@sr", "intz4@absmax@sr", "fp4@sr", "lloyd2@sr",
                                  "mxfp4@sr", "mxint8@q@sr", "nvfp4@46@sr", "int4@sr@h",
                                  "e2m1@sr@o1"])
def test_project_with_uniforms_is_project(spec):
    """project() draws torch.rand(x.shape) from the global RNG and rounds with it."""
    rep = parse(spec)
    x = torch.randn(3, 96, generator=torch.Generator().manual_seed(6))
    torch.manual_seed(7)
    u = torch.rand(x.shape)
    torch.manual_seed(7)
    drawn, m1 = rep.project(x)
    given, m2 = rep.project_with_uniforms(x, u)
    assert torch.equal(drawn, given) and ((m1 is None and m2 is None) or torch.equal(m1, m2))
    assert rep.stochastic
    assert not torch.equal(rep.project(x)[0], drawn)    # fresh randomness at every call
    # the same u in bf16 goes through float32
    b_out, _ = rep.project_with_uniforms(x.bfloat16(), u)
    assert b_out.dtype == torch.bfloat16


def test_project_with_uniforms_errors():
    x = torch.randn(2, 32)
    with pytest.raises(RaysweepError, match="no @sr"):
        parse("int4").project_with_uniforms(x, torch.rand(2, 32))
    with pytest.raises(RaysweepError, match="shape"):
        parse("int4@sr").project_with_uniforms(x, torch.rand(2, 31))


def test_sr_trust_mask_is_the_rtn_clip_rule():
    """SR masks exactly what RTN's clip rule masks: values beyond the grid by > half a step."""
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(8)) * 1.5
    for spec in ["int4", "int1", "intz4", "fp4", "lloyd3", "mxfp4", "nvfp4", "mxint8"]:
        _, rtn = parse(spec).project(x)
        torch.manual_seed(0)
        _, sr = parse(spec + "@sr").project(x)
        assert (rtn != sr).float().mean() < 1e-3, spec   # RTN's rule, up to boundary ties
    # int1@h widens the radius in both
    rep = parse("int1@sr@h").plan.rotation.inner
    assert rep.stochastic and rep._trust_radius(1.0) == pytest.approx(0.65)


def test_sr_plans_route_to_project():
    """@sr grids name no kernel grid (the int kernel rounds to nearest): the layer calls project."""
    assert parse("int4@sr").plan.grid is None and parse("int4@sr").grid is None
    assert parse("int4").plan.grid is not None
    inner = parse("int4@sr@h").plan.rotation.inner
    assert inner.spec == "int4@sr" and inner.plan.grid is None


def test_sr_gmse_is_seeded_monte_carlo():
    import os

    rep = parse("fp4@sr")
    state = torch.get_rng_state()
    old = os.environ.get("RAYSWEEP_NO_CACHE")
    os.environ["RAYSWEEP_NO_CACHE"] = "1"
    try:
        a = rep._mc_gmse(1024)
        b = rep._mc_gmse(1024)
    finally:
        if old is None:
            del os.environ["RAYSWEEP_NO_CACHE"]
        else:
            os.environ["RAYSWEEP_NO_CACHE"] = old
    assert a == b and a.method == "mc" and 0 < a.stderr <= 1.5e-3 * a.value
    assert torch.equal(torch.get_rng_state(), state)   # the caller's RNG is left alone
    # SR costs accuracy: about twice the RTN error for fp4 (RMS scale)
    assert 1.5 * parse("fp4").gmse().value < a.value < 3 * parse("fp4").gmse().value


# ----------------------------------------------------------------------------- intz, @q


def test_intz_by_hand():
    x = torch.tensor([[7.0, 3.4, -0.5, 0.5, 1.5, -2.5, 6.9, 0.0]])
    q, mask = parse("intz4@absmax").project(x)          # step = 7 / 7 = 1, half to even
    assert q.tolist() == [[7.0, 3.0, -0.0, 0.0, 2.0, -2.0, 7.0, 0.0]] and mask.all()
    rep = parse("intz4")
    assert rep.bits_per_element == 4 and rep.family == "int"
    assert len(rep.levels) == 15 and 0.0 in rep.levels
    g = rep.gmse()                                      # 15 levels: a little above int4's 16
    assert g.method == "exact" and parse("int4").gmse().value < g.value < 0.0135
    assert parse("intz8").gmse().value < parse("intz4").gmse().value
    # RMS scale: the top level at c* RMS; saturated values (beyond Q + 1/2 steps) untrusted
    y = torch.randn(4, 512, generator=torch.Generator().manual_seed(9))
    y[0, 0] = 40.0
    yq, ym = rep.project(y)
    assert not ym[0, 0] and ym[1:].float().mean() > 0.99
    assert len(torch.unique(yq[1])) <= 15


def test_quartet_headroom_by_hand():
    """mxfp4@q: elements (x / X) * 3/4 rounded onto E2M1, x_hat = (q / 0.75) X: never saturates."""
    x = torch.zeros(32)
    x[:5] = torch.tensor([7.9, 6.0, 4.0, 1.0, -2.0])   # amax 7.9: X = 2^(2 - 2) = 1
    q, mask = parse("mxfp4@q").project(x)
    # 5.925 -> 6, 4.5 -> 4, 3 -> 3, 0.75 -> 1 (a tie: the even code), 1.5 -> 1.5
    expect = torch.tensor([6.0, 4.0, 3.0, 1.0, -1.5]) / 0.75
    assert torch.equal(q[:5], expect) and mask.all()
    plain, pmask = parse("mxfp4").project(x)
    assert plain[0] == 6.0 and not pmask[0]             # plain MX saturates 7.9


# ----------------------------------------------------------------------------- @rh, @o


def test_random_hadamard():
    rep = parse("int4@rh32")
    assert isinstance(rep, Rotated) and rep.spec == "int4@rh32" and rep.hadamard == 32
    assert rep.plan.rotation is None and rep.bits_per_element == 4.0
    assert rep.gmse() == parse("int4").gmse()
    x = torch.randn(4, 96, generator=torch.Generator().manual_seed(10))
    torch.manual_seed(1)
    a, mask = rep.project(x)
    torch.manual_seed(1)
    b, _ = rep.project(x)
    c, _ = rep.project(x)
    assert torch.equal(a, b) and not torch.equal(a, c) and mask is None  # signs redrawn
    # the rotation: x = d H^T H (d x) with a block of 32 (96 = 3 x 32)
    d = random_signs(96, generator=torch.Generator().manual_seed(0))
    assert set(d.tolist()) == {-1.0, 1.0}
    assert torch.allclose(rotate(rotate(x * d, 32), 32) * d, x, atol=1e-5)
    # a fine inner grid returns nearly x: the rotation is undone
    fine, _ = parse("int8@rh32").project(x)
    assert (fine - x).pow(2).mean() < 1e-3 * x.pow(2).mean()
    # the signs matter: with random signs, a spike in one column is spread out
    spike = torch.zeros(1, 128)
    spike[0, 3] = 1.0
    torch.manual_seed(2)
    assert parse("mxfp4@rh128").project(spike)[0].shape == spike.shape


def test_kept_outliers():
    rep = parse("int4@o1")
    assert rep.bits_per_element == pytest.approx(4.32) and rep.family == "int"
    assert rep.keep_count(1024) == 10 and rep.keep_count(32) == 0
    x = torch.randn(3, 1024, generator=torch.Generator().manual_seed(11))
    x[0, 7] = 25.0
    out, mask = rep.project(x)
    top = x.abs().topk(10, dim=-1).indices
    kept = torch.zeros_like(x, dtype=torch.bool).scatter_(-1, top, True)
    assert torch.equal(out[kept], x[kept]) and mask[kept].all() and mask[0, 7]
    inner, _ = parse("int4").project(x.masked_fill(kept, 0.0))
    assert torch.equal(out[~kept], inner[~kept])
    g = rep.gmse()
    assert g.method == "mc" and g.value < parse("int4").gmse().value
    assert parse("nvfp4@o0.5").bits_per_element == pytest.approx(4.66)


# ----------------------------------------------------------------------------- spec text


@pytest.mark.parametrize("given,canonical", [
    ("int4@sr@absmax", "int4@absmax@sr"), ("int4@o1@h@sr", "int4@sr@h@o1"),
    ("int4@o1.0", "int4@o1"), ("mxfp4@sr@q", "mxfp4@q@sr"), ("nvfp4@sr@2d@46", "nvfp4@46@2d@sr"),
    ("fp4@rh16@g32@absmax", "fp4@absmax@g32@rh16"), ("intz4@o0.5@rh128", "intz4@rh128@o0.5"),
    ("sparse50+int4@sr", "sparse50+int4@sr"),
])
def test_canonical(given, canonical):
    assert parse(given).spec == canonical and parse(canonical).spec == canonical


@pytest.mark.parametrize("bad,match", [
    ("sparse50@sr", "@sr applies"), ("vq2x8@sr", "@sr applies"), ("int4@rh8", "16, 32, 64, 128"),
    ("int4@rh", "needs a block size"), ("int4@h@rh32", "two rotations"), ("int4@o", "percentage"),
    ("int4@o0", "out of range"), ("int4@o100", "out of range"), ("2:4@o1", "@o{P} applies"),
    ("int4@q", "mx only"), ("nvfp4@q", "mx only"), ("intz1", "out of range"),
    ("int4@sr@sr", "twice"), ("noise2@rh32", "@rh{B} applies"), ("int4@o05", "leading zero"),
])
def test_spec_errors(bad, match):
    with pytest.raises(SpecError, match=match):
        parse(bad)


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("spec", ["int4@sr", "intz4", "fp4@sr", "mxfp4@sr", "mxfp4@q",
                                  "nvfp4@46@sr", "int4@rh32", "mxfp4@sr@rh32", "int4@o1",
                                  "int4@sr@h"])
def test_trains_through_the_layer(spec):
    """A CompressedLinear forward/backward with the spec on weights and activations."""
    from raysweep.train.layers import CompressedLinear

    torch.manual_seed(0)
    layer = CompressedLinear(64, 32, weights=spec, activations=spec)
    x = torch.randn(8, 64)
    loss = layer(x).pow(2).mean()
    loss.backward()
    assert torch.isfinite(loss) and layer.weight.grad is not None
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0


def test_cli_gmse_json_new_names(capsys):
    import json

    from raysweep.cli import main

    specs = ["intz4", "int4@sr", "mxfp4@q", "mxfp4@q@sr", "nvfp4@46@sr", "int4@rh32",
             "nvfp4@o1", "nvfp4@2d@sr"]
    assert main(["gmse", *specs, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == specs
    bits = [4.0, 4.0, 4.25, 4.25, 4.5, 4.0, 4.5 + 0.32, 4.03125]
    for s, b in zip(specs, bits):
        r, rep = out[s], parse(s)
        assert r["bits_per_element"] == pytest.approx(b, abs=1e-12)
        assert r["bits_per_element"] == rep.bits_per_element
        assert r["method"] == ("exact" if s in ("intz4", "int4@rh32") else "mc")
        assert (r["stderr"] == 0) == (r["method"] == "exact")
        assert r["stderr"] <= 1.5e-3 * r["gmse"]
    assert main(["gmse", "nvfp4@2d@sr"]) == 0
    assert "4.03125" in capsys.readouterr().out      # the table prints exact bits
