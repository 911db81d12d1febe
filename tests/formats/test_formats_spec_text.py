"""Canonical spec strings: one-line SpecErrors for @g without a size, non-ASCII digits,
leading zeros, inner whitespace and over-long composites."""

import subprocess
import sys

import pytest
from raysweep.formats import parse
from raysweep.formats.base import MAX_PARTS

from raysweep.errors import SpecError


def _error(spec) -> str:
    with pytest.raises(SpecError) as e:
        parse(spec)
    msg = str(e.value)
    assert msg.startswith("spec part ") and "; valid forms: " in msg and "\n" not in msg
    return msg


@pytest.mark.parametrize("spec,part", [("int4@g", "int4@g"), ("fp4@g", "fp4@g"),
                                       ("int4@g+1", "int4@g"), ("int4@g32@g", "int4@g32@g"),
                                       ("sparse50+int4@g", "int4@g")])
def test_group_option_without_a_size(spec, part):
    msg = _error(spec)
    assert msg.startswith(f"spec part {part!r}: option @g needs a group size")


@pytest.mark.parametrize("spec,char", [("int４", "４"), ("int4@g٣٢", "٣"), ("sparse٥0", "٥"),
                                       ("vq2x８", "８"), ("２:4", "２")])
def test_only_ascii_digits(spec, char):
    assert f"non-ASCII character {char!r}" in _error(spec)


@pytest.mark.parametrize("spec,canonical", [
    ("int04", "int4"), ("sparse050", "sparse50"), ("int4@g032", "int4@g32"),
    ("sparse00.5", "sparse0.5"), ("02:4", "2:4"), ("2:04", "2:4"), ("vq02x8", "vq2x8"),
    ("e02m1", "e2m1"), ("noise02", "noise2"), ("lloyd03", "lloyd3"), ("int00", "int0"),
    ("int04@h@absmax", "int4@absmax@h"),        # the canonical form, options ordered too
])
def test_leading_zeros_name_the_canonical_form(spec, canonical):
    msg = _error(spec)
    assert f"leading zero is not canonical; write {canonical!r}" in msg


@pytest.mark.parametrize("spec", ["sparse0", "sparse0.5", "noise0.5", "sparse50.05", "int4@g32",
                                  "int4@g1024", "sparse10", "1:8"])
def test_zeros_that_are_canonical_still_parse(spec):
    assert parse(spec).spec == spec


@pytest.mark.parametrize("spec", ["int 4", "int4 @h", "int4\t@h", "sparse50 +int4", "int4+ fp4",
                                  "int4\u00a0@h"])
def test_no_whitespace_inside_a_spec(spec):
    assert "spaces are not allowed" in _error(spec)


def test_composite_part_limit():
    ok = "+".join(["sparse50"] + ["int4"] * (MAX_PARTS - 1))
    assert len(parse(ok).parts) == MAX_PARTS == 4
    msg = _error("+".join(["int4"] * 10))
    assert f"10 parts; a composite has at most {MAX_PARTS} parts" in msg
    assert f"at most {MAX_PARTS} parts" in _error("+".join(["int4"] * (MAX_PARTS + 1)))


@pytest.mark.parametrize("spec", ["int4@g", "int04", "+".join(["int4"] * 10)])
def test_cli_refuses_in_one_line(spec):
    bad = subprocess.run([sys.executable, "-m", "raysweep", "gmse", spec],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
