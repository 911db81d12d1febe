"""Every family through the conformance suite of raysweep.formats.testing."""

import pytest
from raysweep.formats.testing import FormatConformance

SPECS = [
    "bf16", "int1", "int2", "int4", "int8", "int4@g32", "int3@absmax@g64", "int4@h",
    "lloyd3", "ternary", "fp4", "fp8", "e3m2", "fp4@absmax@g32", "noise2", "sparse50", "sparse90",
    "2:4",
    "sparse50+int4", "vq2x4", "vq4x8@h",
]


@pytest.fixture(params=SPECS)
def spec(request):
    return request.param


class TestConformance(FormatConformance):
    pass
