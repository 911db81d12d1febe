"""Representations on a CUDA device: same numbers as on the CPU (skipped without a GPU)."""

import pytest
import torch
from raysweep.formats import parse

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SPECS = ["int1", "int4", "int8", "int4@g32", "int3@absmax", "fp4", "e3m2", "lloyd3", "ternary",
         "sparse50", "2:4", "sparse50+int4", "int4@h", "vq2x4", "vq4x8@h", "noise2"]


@pytest.mark.parametrize("spec", SPECS)
def test_cuda_matches_cpu(spec):
    rep = parse(spec)
    x = torch.randn(64, 512, generator=torch.Generator().manual_seed(0))
    xc = x.cuda()
    torch.manual_seed(0)
    got, mask = rep.project(xc)
    assert got.device == xc.device and got.shape == x.shape and got.dtype == x.dtype
    if mask is not None:
        assert mask.device == xc.device and mask.dtype == torch.bool
    if rep.family == "noise":  # different RNG streams per device: check the noise level
        rel = (got.cpu() - x).pow(2).mean() / x.pow(2).mean()
        assert abs(float(rel) - 1 / 16) < 0.01
        return
    ref, ref_mask = rep.project(x)
    if rep.grid is not None:  # per-row int grids: the same numbers bit for bit
        assert torch.equal(got.cpu(), ref) and torch.equal(mask.cpu(), ref_mask)
    else:
        # nearest-level / codeword ties may flip on 1-ulp differences (GEMM, Hadamard)
        assert (got.cpu() - ref).abs().gt(1e-4).float().mean() < 1e-3
    bf, _ = rep.project(xc.bfloat16())
    assert bf.dtype == torch.bfloat16 and torch.isfinite(bf.float()).all()
