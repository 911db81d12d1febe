"""Every family through the conformance suite of raysweep.formats.testing."""

import pytest
from raysweep.formats.testing import FormatConformance

SPECS = [
    "bf16", "int1", "int2", "int4", "int8", "int4@g32", "int3@absmax@g64", "int4@h",
    "lloyd3", "ternary", "fp4", "fp8", "e3m2", "fp4@absmax@g32", "noise2", "sparse50", "sparse90",
    "2:4",
    "sparse50+int4", "vq2x4", "vq4x8@h",
    # stochastic rounding, zero-level int, random-sign Hadamard, kept outliers
    "int4@sr", "int1@sr@h", "intz4", "intz3@absmax@g32@sr", "fp4@sr", "e3m2@absmax@sr",
    "lloyd3@sr", "ternary@sr", "int4@rh32", "fp4@sr@rh16", "int4@o1", "int4@h@o1",
    "e2m1@sr@rh128@o0.5", "sparse50+int4@sr",
]


@pytest.fixture(params=SPECS)
def spec(request):
    return request.param


class TestConformance(FormatConformance):
    pass
