"""Conformance suite every representation's tests reuse (pytest).

Usage in a test module: subclass :class:`FormatConformance` per spec, or
parametrize once over many specs with the ``spec`` fixture::

    import pytest
    from raysweep.formats.testing import FormatConformance

    @pytest.fixture(params=["int4", "fp4", "sparse50"])
    def spec(request):
        return request.param

    class TestMyFormats(FormatConformance):
        pass

Checks (each a ``test_*`` method pytest collects from the subclass):

- shape, dtype and device kept for float32 and bfloat16 inputs of rank 1..3;
- ``gmse()`` is a valid GMSE and equals the empirical MSE of ``project()`` on
  ``N_SAMPLES`` fresh N(0, 1) samples (rows of ``MC_COLS``, another seed than
  the Monte Carlo's) within ``SIGMAS`` combined standard errors;
- trust mask: None or a bool tensor of x's shape; deterministic;
- determinism: projecting twice gives identical bits (``noise`` under the same
  ``torch.manual_seed``);
- a pickled copy (as sent to Ray workers) projects identically;
- policy: an all-zero row projects to zeros (mask all True); a non-finite
  value only affects its own row; the canonical spec parses to itself.
- stochastic rounding (``rep.stochastic``, the ``@sr`` specs): explicit uniforms
  (``project_with_uniforms``) give identical bits twice, values in [0, 1) of
  another draw give another projection, and a non-stochastic spec refuses them.
  (Unbiasedness is tested per grid in tests/formats/test_formats_rounding.py.)
"""

from __future__ import annotations

import math

import pytest

N_SAMPLES = 1_000_000
SIGMAS = 3.0
WIDTH = 256  # last dim of the small-shape checks (a multiple of every group / m / d used)


def _seeded(fn, *args):
    """Run fn with torch's global RNG seeded (stochastic formats draw from it)."""
    import torch

    torch.manual_seed(1234)
    return fn(*args)


class FormatConformance:
    """Mixin of conformance tests; requires a ``spec`` fixture (a spec string)."""

    @pytest.fixture
    def rep(self, spec):
        from raysweep.formats import parse

        return parse(spec)

    def test_attributes(self, rep):
        from raysweep.formats import GMSE, parse

        assert isinstance(rep.spec, str) and parse(rep.spec).spec == rep.spec
        assert isinstance(rep.family, str) and rep.family
        assert rep.bits_per_element > 0
        g = rep.gmse()
        assert isinstance(g, GMSE) and g.method in ("exact", "mc")
        assert 0.0 <= g.value <= 1.5 and g.stderr >= 0.0
        assert (g.stderr == 0.0) == (g.method == "exact")

    @pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
    @pytest.mark.parametrize("shape", [(WIDTH,), (3, WIDTH), (2, 3, WIDTH)])
    def test_shape_dtype(self, rep, dtype_name, shape):
        import torch

        dtype = getattr(torch, dtype_name)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
        x_hat, mask = _seeded(rep.project, x)
        assert x_hat.shape == x.shape and x_hat.dtype == x.dtype
        assert x_hat.device == x.device and torch.isfinite(x_hat).all()
        if mask is not None:
            assert mask.shape == x.shape and mask.dtype == torch.bool

    def test_gmse_matches_empirical(self, rep):
        import torch
        cols = rep.mc_row_len()  # the row length the Monte Carlo GMSE uses
        rows = N_SAMPLES // cols
        x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(98765))
        x_hat, _ = _seeded(rep.project, x)
        per_row = (x_hat.double() - x.double()).pow(2).mean(-1)
        emp, se_emp = float(per_row.mean()), float(per_row.std()) / math.sqrt(rows)
        g = rep.gmse()
        se = math.hypot(se_emp, g.stderr)
        assert abs(emp - g.value) <= SIGMAS * se + 1e-12, (rep.spec, emp, g, se)

    def test_deterministic(self, rep):
        import torch

        x = torch.randn(4, WIDTH, generator=torch.Generator().manual_seed(1))
        a, ma = _seeded(rep.project, x)
        b, mb = _seeded(rep.project, x)
        assert torch.equal(a, b)
        assert (ma is None) == (mb is None)
        if ma is not None:
            assert torch.equal(ma, mb)

    def test_zero_row(self, rep):
        import torch

        x = torch.randn(3, WIDTH, generator=torch.Generator().manual_seed(2))
        x[1] = 0.0
        x_hat, mask = _seeded(rep.project, x)
        assert torch.equal(x_hat[1], torch.zeros(WIDTH))
        assert torch.isfinite(x_hat).all()
        if mask is not None and not (rep.sparsity is not None or rep.nm is not None):
            assert mask[1].all()

    def test_nonfinite_stays_in_its_row(self, rep):
        import torch

        x = torch.randn(3, WIDTH, generator=torch.Generator().manual_seed(3))
        clean, _ = _seeded(rep.project, x)
        x[0, 5] = float("nan")
        x[2, 7] = float("inf")
        dirty, _ = _seeded(rep.project, x)
        if rep.family == "noise":  # row 1's noise is drawn after rows 0's, same RNG stream
            assert torch.isfinite(dirty[1]).all()
        else:
            assert torch.equal(clean[1], dirty[1])

    def test_pickle_round_trip(self, rep):
        """Representations travel to Ray workers: a pickled copy projects identically."""
        import pickle

        import torch

        x = torch.randn(2, WIDTH, generator=torch.Generator().manual_seed(4))
        copy = pickle.loads(pickle.dumps(rep))
        assert copy.spec == rep.spec and copy.gmse() == rep.gmse()
        assert torch.equal(_seeded(copy.project, x)[0], _seeded(rep.project, x)[0])

    def test_explicit_uniforms(self, rep):
        import torch

        from raysweep.errors import RaysweepError

        x = torch.randn(4, WIDTH, generator=torch.Generator().manual_seed(5))
        u = torch.rand(x.shape, generator=torch.Generator().manual_seed(6))
        if not rep.stochastic:
            with pytest.raises(RaysweepError):
                rep.project_with_uniforms(x, u)
            return
        a, ma = _seeded(rep.project_with_uniforms, x, u)
        b, mb = _seeded(rep.project_with_uniforms, x, u)
        assert torch.equal(a, b) and a.shape == x.shape and torch.isfinite(a).all()
        assert (ma is None) == (mb is None) and (ma is None or torch.equal(ma, mb))
        other, _ = _seeded(rep.project_with_uniforms, x, 1.0 - u.clamp_min(2**-24))
        assert not torch.equal(a, other)
