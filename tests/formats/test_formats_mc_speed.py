"""The fast paths of the VQ search and the Monte Carlo driver give the plain answers.

``vq._nearest`` avoids ``torch.argmin`` (slow on CPU) and ``gaussian.monte_carlo``
draws and projects in slices; both must match the straightforward computation.
"""

from __future__ import annotations

import math

import torch
from raysweep.formats import gaussian as g
from raysweep.formats import parse
from raysweep.formats.vq import _nearest, codebook


def _argmin_ref(v, cb):
    return torch.argmin(torch.addmm(cb.pow(2).sum(1), v, cb.T, alpha=-2.0), dim=1)


def test_nearest_matches_argmin_across_chunks():
    gen = torch.Generator().manual_seed(3)
    for d, k in [(2, 4), (2, 8), (4, 8)]:
        cb, _ = codebook(d, k)
        v = torch.randn(5000, d, generator=gen) * 1.5
        got = _nearest(v, cb, chunk_elems=1 << 12)  # many chunks, a ragged last one
        assert torch.equal(got, _argmin_ref(v, cb)), (d, k)


def test_nearest_ties_go_to_lowest_index_and_nan_is_safe():
    cb = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    v = torch.tensor([[0.0, 0.0], [2.0, 0.0], [-2.0, 0.1], [0.0, 5.0], [float("nan"), 0.0]])
    got = _nearest(v, cb)
    # (0, 0) is equidistant from codewords 0, 1, 2; (2, 0) from the duplicates 0 and 2
    assert got[:4].tolist() == [0, 0, 1, 3]
    assert 0 <= int(got[4]) < 4


def _monte_carlo_unsliced(project, rel_se, seed, cols, max_elements):
    """The driver before slicing: one draw per batch, float64 error."""
    gen = torch.Generator().manual_seed(seed)
    rows = max(1, (1 << 18) // cols)
    per_row, n = [], 0
    while True:
        x = torch.randn(rows, cols, generator=gen)
        x_hat, _ = project(x)
        per_row.append((x_hat.double() - x.double()).pow(2).mean(-1))
        n += x.numel()
        v = torch.cat(per_row)
        mean = float(v.mean())
        se = float(v.std()) / math.sqrt(v.numel())
        if se <= rel_se * mean or n >= max_elements:
            return mean, se
        need = v.numel() * ((se / (rel_se * mean)) ** 2 - 1.0) * 1.1
        rows = int(min(max(need, 16), 4 * v.numel(), (max_elements - n) // cols + 1))


def test_sliced_monte_carlo_matches_one_draw(monkeypatch):
    monkeypatch.setattr(g, "MC_SLICE", 1 << 14)  # several slices per batch, a ragged last one
    for spec in ["int4@absmax", "vq2x4"]:
        project = parse(spec).project
        got = g.monte_carlo(project, rel_se=3e-3, max_elements=1 << 21)
        ref_mean, ref_se = _monte_carlo_unsliced(project, 3e-3, g.MC_SEED, g.MC_COLS, 1 << 21)
        assert got.method == "mc"
        assert math.isclose(got.value, ref_mean, rel_tol=1e-6), spec
        assert math.isclose(got.stderr, ref_se, rel_tol=1e-4), spec
