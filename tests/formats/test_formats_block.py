"""Block-scaled formats (formats/block.py): OCP MX (mxfp4, mxfp6, mxfp6e3m2, mxfp8, mxint8)
and NVFP4 (nvfp4, nvfp4@46, nvfp4@2d): exact values on hand-computed blocks, bits, the
published Gaussian MSEs, the CLI, and the conformance suite."""

import json
import math

import numpy as np
import pytest
import torch
from raysweep.formats import parse
from raysweep.formats.block import round_to_float
from raysweep.formats.scalar import fp_levels
from raysweep.formats.testing import FormatConformance

from raysweep.errors import SpecError

BLOCK_SPECS = ["mxfp4", "mxfp6", "mxfp6e3m2", "mxfp8", "mxint8", "nvfp4", "nvfp4@46",
               "nvfp4@2d", "nvfp4@46@2d"]
# the options of the block formats (@q, @sr, @rh{B}, @o{P}): conformance and zero blocks
OPTION_SPECS = ["mxfp4@q", "mxfp4@q@sr", "mxfp4@sr", "mxfp6@sr", "mxint8@sr", "mxfp8@q",
                "nvfp4@sr", "nvfp4@46@sr", "nvfp4@2d@sr", "mxfp4@rh32", "mxfp4@q@sr@rh32",
                "nvfp4@rh16", "nvfp4@o1", "mxfp4@q@o1"]


@pytest.fixture(params=BLOCK_SPECS + OPTION_SPECS)
def spec(request):
    return request.param


class TestBlockConformance(FormatConformance):
    def test_nonfinite_stays_in_its_row(self, rep):
        """@2d tiles span 16 rows: a non-finite value stays in its band of 16 rows."""
        if "2d" not in rep.spec:
            return super().test_nonfinite_stays_in_its_row(rep)
        x = torch.randn(32, 256, generator=torch.Generator().manual_seed(3))
        torch.manual_seed(0)                       # @sr draws from the global RNG
        clean = rep.project(x)[0]
        x[0, 5], x[2, 7] = float("nan"), float("inf")
        torch.manual_seed(0)
        dirty = rep.project(x)[0]
        assert torch.equal(clean[16:], dirty[16:])
        assert torch.isnan(dirty[0, 5]) and dirty[2, 7] == float("inf")


# ----------------------------------------------------------------------------- attributes


@pytest.mark.parametrize("spec,bits,family", [
    ("mxfp4", 4.25, "fp"), ("mxfp6", 6.25, "fp"), ("mxfp6e3m2", 6.25, "fp"),
    ("mxfp8", 8.25, "fp"), ("mxint8", 8.25, "int"), ("nvfp4", 4.5, "fp"),
    ("nvfp4@46", 4.5, "fp"), ("nvfp4@2d", 4.03125, "fp"), ("nvfp4@46@2d", 4.03125, "fp"),
])
def test_bits_and_family(spec, bits, family):
    rep = parse(spec)
    assert rep.bits_per_element == bits and rep.family == family
    assert rep.row_multiple == (32 if spec.startswith("mx") else 16)
    assert rep.plan.grid is None and rep.plan.mask is None and not rep.plan.identity


def test_spec_forms_and_errors():
    assert parse("nvfp4@2d@46").spec == "nvfp4@46@2d"
    for bad, match in [("mxfp4@g32", "scalar grids only"), ("nvfp4@absmax", "scalar grids only"),
                       ("mxfp8@h", "@h applies"), ("int4@46", "nvfp4 only"),
                       ("mxfp4@2d", "nvfp4 only"), ("nvfp4@46@46", "twice"),
                       ("mxfp5", "unknown representation"), ("nvfp8", "unknown representation")]:
        with pytest.raises(SpecError, match=match):
            parse(bad)


# ----------------------------------------------------------------------------- element rounding


def _nearest_even(u, e, m, fn):
    """Brute force: nearest non-negative level (ties: even code index), saturated, signed."""
    lv = fp_levels(e, m, fn)
    pos = lv[lv >= 0]
    out = []
    for v in np.abs(u):
        d = np.abs(pos - v)
        ix = np.flatnonzero(d == d.min())
        out.append(pos[ix[ix % 2 == 0][0]] if len(ix) > 1 else pos[ix[0]])
    return np.copysign(np.array(out), u)


@pytest.mark.parametrize("e,m,fn", [(2, 1, False), (2, 3, False), (3, 2, False), (4, 3, True)])
def test_round_to_float_is_nearest_ties_to_even(e, m, fn):
    lv = fp_levels(e, m, fn)
    pos = lv[lv >= 0]
    mids = (pos[1:] + pos[:-1]) / 2
    rng = np.random.default_rng(0)
    pts = np.concatenate([pos, mids, mids * (1 + 1e-6), mids * (1 - 1e-6),
                          [pos[-1] * 1.01, pos[-1] * 3, 1e-30, 0.0],
                          rng.random(500) * pos[-1] * 1.2]).astype(np.float32)
    pts = np.concatenate([pts, -pts])
    got, _ = round_to_float(torch.from_numpy(pts), e, m, fn)
    assert np.array_equal(got.numpy(), _nearest_even(pts.astype(np.float64), e, m, fn))


# ----------------------------------------------------------------------------- MX by hand


def _block(vals, n=32):
    x = torch.zeros(n)
    x[:len(vals)] = torch.tensor(vals, dtype=torch.float32)
    return x


def _mx(spec, vals):
    x = _block(vals)
    x_hat, mask = parse(spec).project(x)
    return x_hat[:len(vals)].tolist(), mask[:len(vals)].tolist()


def test_mxfp4_by_hand():
    # amax 6: X = 2^(2 - 2) = 1; ties 5 -> 4, 2.5 -> 2, 1.75 -> 2, 0.25 -> 0, 0.75 -> 1
    q, mask = _mx("mxfp4", [6, 5, 3, 2.5, 1.75, 0.25, 0.75, -4.9, -1.25])
    assert q == [6, 4, 3, 2, 2, 0, 1, -4, -1]
    assert all(mask)
    # amax 7.9: floor(log2) = 2, X = 1: 7.9 saturates at 6 (untrusted), 6.9 -> 6 (trusted)
    q, mask = _mx("mxfp4", [7.9, 6.9, -7.5])
    assert q == [6, 6, -6] and mask == [False, True, False]
    # powers of two: amax 8 -> X = 2; amax 0.01 -> floor(log2) = -7, X = 2^-9
    q, _ = _mx("mxfp4", [8, 5, 1])
    assert q == [8, 4, 1]
    q, _ = _mx("mxfp4", [0.01, -0.003])
    assert q == [6 / 512, -1.5 / 512]             # 5.12 -> 6, -1.536 -> -1.5


def test_mxfp6_mxfp8_by_hand():
    # E2M3, amax 7.75 -> X = 1: saturates at 7.5; subnormal ties 0.0625 -> 0, 0.1875 -> 0.25
    q, _ = _mx("mxfp6", [7.75, 0.0625, 0.1875, 3.3])
    assert q == [7.5, 0.0, 0.25, 3.25]
    # E3M2, amax 30 -> X = 2^(4 - 4) = 1: 30 -> 28 (saturated), tie 26 -> 24 (even mantissa)
    q, _ = _mx("mxfp6e3m2", [30, 26, 0.03125, 0.09375])
    assert q == [28, 24, 0.0, 0.125]
    # E4M3, amax 500 -> X = 2^(8 - 8) = 1: 500, 470 -> 448; 300 -> 288; tie 304 -> 320
    q, mask = _mx("mxfp8", [500, 470, 300, 304, -1.0625])
    assert q == [448, 448, 288, 320, -1.0] and mask == [False, False, True, True, True]
    q, mask = _mx("mxfp8", [460, 0.001])            # 460 <= 448 + 32/2: trusted; subnormal
    assert q == [448, 2.0**-9] and mask == [True, True]     # 0.001 -> 2^-9


def test_mxint8_by_hand():
    # amax 1.99 -> X = 1: q = clamp(round(64 x), -127, 127) / 64; 32.5 -> 32 (half to even)
    q, _ = _mx("mxint8", [1.99, -1.999, 0.5078125, 0.1])
    assert q == [127 / 64, -127 / 64, 0.5, 6 / 64]
    q, _ = _mx("mxint8", [4.0, 1.0, 0.03125])        # X = 4: step 4/64
    assert q == [4.0, 1.0, 0.0]


@pytest.mark.parametrize("spec", BLOCK_SPECS + [s for s in OPTION_SPECS if "@rh" not in s])
def test_zero_block_stays_zero(spec):
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(5))
    x[3, 32:] = 0.0
    x_hat, mask = parse(spec).project(x)
    assert torch.equal(x_hat[3, 32:], torch.zeros(32)) and mask[3, 32:].all()
    assert torch.equal(parse(spec).project(torch.zeros(16, 64))[0], torch.zeros(16, 64))


# ----------------------------------------------------------------------------- NVFP4 by hand


def test_nvfp4_by_hand():
    x = torch.zeros(48)
    x[0:3] = torch.tensor([6.0, -2.6, 0.2])       # tensor amax 6: s = 448, b = 448, b/s = 1
    x[16:18] = torch.tensor([3.0, 1.3])            # b = E4M3(224) = 224, b/s = 1/2
    x[32:34] = torch.tensor([0.1, -0.02])          # b = E4M3(7.4667) = 7.5
    x_hat, mask = parse("nvfp4").project(x)
    assert x_hat[0:3].tolist() == [6.0, -3.0, 0.0] and x_hat[16:18].tolist() == [3.0, 1.5]
    scale = torch.tensor(7.5) / torch.tensor(448.0)
    u = torch.tensor([0.1, -0.02]) / scale          # 5.97 -> 6, -1.19 -> -1
    assert torch.equal(x_hat[32:34], torch.tensor([6.0, -1.0]) * 7.5 / 448.0)
    assert torch.allclose(u, torch.tensor([5.9733, -1.1947]), atol=1e-4) and mask.all()


def test_nvfp4_four_over_six_by_hand():
    x = torch.zeros(32)
    x[0] = 6.0                                     # s = 448
    x[16:18] = torch.tensor([4.0, 3.0])            # to 6: b = E4M3(298.67) = 288; to 4: b = 448
    plain = parse("nvfp4").project(x)[0][16:18]
    assert torch.allclose(plain, torch.tensor([6.0, 4.0]) * 288 / 448)
    assert parse("nvfp4@46").project(x)[0][16:18].tolist() == [4.0, 3.0]


def _nvfp4_tile_ref(x):
    """Loop reference of nvfp4@2d on a (R, C) tensor, R and C multiples of 16."""
    s = torch.tensor(448.0 * 6.0) / x.abs().max()
    out = torch.empty_like(x)
    for i in range(0, x.shape[0], 16):
        for j in range(0, x.shape[1], 16):
            t = x[i:i + 16, j:j + 16]
            b, _ = round_to_float(t.abs().max() / 6.0 * s, 4, 3, True)
            q, _ = round_to_float(t / (b / s), 2, 1)
            out[i:i + 16, j:j + 16] = q * b / s
    return out


def test_nvfp4_2d_tiles():
    x = torch.randn(32, 48, generator=torch.Generator().manual_seed(6))
    x[:16, 16:32] *= 10.0
    got = parse("nvfp4@2d").project(x)[0]
    assert torch.equal(got, _nvfp4_tile_ref(x))
    # a partial tile of rows is padded with zeros: the rows kept are those of the padded tensor
    part = parse("nvfp4@2d").project(x[:5])[0]
    pad = torch.cat([x[:5], torch.zeros(11, 48)])
    assert torch.equal(part, _nvfp4_tile_ref(pad)[:5])


def test_nvfp4_nonfinite_spoils_only_itself():
    """Non-finite values are left out of the amaxes and returned as they are."""
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(7))
    x[0, 0] = 10.0                                 # the tensor amax, kept finite
    clean = parse("nvfp4").project(x)[0]
    x[1, 3], x[2, 21] = float("nan"), float("inf")
    dirty = parse("nvfp4").project(x)[0]
    assert torch.isnan(dirty[1, 3]) and dirty[2, 21] == float("inf")
    other = torch.ones(4, 32, dtype=torch.bool)
    other[1, :16] = other[2, 16:] = False          # the two blocks that held them
    assert torch.equal(clean[other], dirty[other])
    assert torch.isfinite(dirty[1, :16][torch.arange(16) != 3]).all()


# ----------------------------------------------------------------------------- Gaussian MSE

PUBLISHED = {"nvfp4": 9.0e-3, "nvfp4@46": 7.6e-3, "nvfp4@2d": 12.4e-3,  # Quartet II
             "mxfp4@q": 1.37e-2, "mxfp4@q@sr": 2.77e-2}   # Quartet, Table 2 (4/3 headroom)


@pytest.mark.parametrize("spec", sorted(PUBLISHED))
def test_gmse_matches_published(spec):
    g = parse(spec).gmse()
    assert g.method == "mc" and g.stderr > 0
    ref = PUBLISHED[spec]
    assert abs(g.value - ref) <= max(3 * g.stderr, 0.03 * ref), (spec, g, ref)


def test_gmse_ordering():
    """More element bits, lower GMSE; 4/6 beats plain NVFP4, which beats MXFP4."""
    v = {s: parse(s).gmse().value for s in BLOCK_SPECS}
    assert v["mxint8"] < v["mxfp6"] < v["mxfp6e3m2"] < v["mxfp4"]
    assert v["nvfp4@46"] < v["nvfp4"] < v["mxfp4"] and v["nvfp4"] < v["nvfp4@2d"]
    assert all(math.isfinite(x) and 0 < x < 0.02 for x in v.values())


def test_cli_gmse_json(capsys):
    from raysweep.cli import main

    specs = ["mxfp4", "mxfp6", "mxfp6e3m2", "mxfp8", "mxint8", "nvfp4"]
    assert main(["gmse", *specs, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == specs
    bits = [4.25, 6.25, 6.25, 8.25, 8.25, 4.5]
    for s, b in zip(specs, bits):
        r = out[s]
        assert r["bits_per_element"] == b and r["method"] == "mc"
        assert 0 < r["stderr"] <= 2e-3 * r["gmse"]
        assert r["family"] == ("int" if s == "mxint8" else "fp")


@pytest.mark.parametrize("spec", ["mxfp4", "mxint8", "nvfp4", "nvfp4@46"])
def test_a_partial_last_block_is_zero_padded(spec):
    """A row of 176 (a tiny model's MLP width) projects as if padded to 192 with zeros."""
    import torch

    x = torch.randn(5, 176, generator=torch.Generator().manual_seed(0))
    y, mask = parse(spec).project(x)
    padded, _ = parse(spec).project(torch.cat([x, torch.zeros(5, 16)], dim=-1))
    assert y.shape == mask.shape == x.shape
    assert torch.equal(y, padded[:, :176])
