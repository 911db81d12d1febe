"""Monte Carlo GMSE for every group size the grammar accepts, and its row length.

The MC draws rows of 1024 values rounded up to a multiple of the group size
(``int4@g33``: 1056, ``int4@g2048``: 2048); ``gmse(row_len=n)`` runs it on rows
of n values, which matters for row-wise ``@absmax`` (the row maximum grows
with n). Sample sizes are small: the checks are 3-sigma agreements with the
empirical MSE of ``project`` on independent draws.
"""

import math
import os
import stat
from pathlib import Path

import pytest
import torch
from raysweep.formats import gaussian as G
from raysweep.formats import parse
from raysweep.formats.base import save_cache

from raysweep.errors import RaysweepError


@pytest.fixture(autouse=True)
def _cheap_mc(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYSWEEP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(G, "MC_REL_SE", 3e-3)  # cheap: Representation reads these per call
    monkeypatch.setattr(G, "MC_MAX_ELEMENTS", 1 << 21)


def _empirical(rep, cols: int, n: int = 1 << 19, seed: int = 4321) -> tuple[float, float]:
    rows = max(n // cols, 2)
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    x_hat, _ = rep.project(x)
    per_row = (x_hat.double() - x.double()).pow(2).mean(-1)
    return float(per_row.mean()), float(per_row.std()) / math.sqrt(rows)


@pytest.mark.parametrize("spec, cols", [("int4@g33", 1056), ("int4@g2048", 2048),
                                        ("sparse50+int4@g33", 1056)])
def test_any_group_size_has_a_gmse(spec, cols):
    rep = parse(spec)
    assert rep.mc_row_len() == cols
    g = rep.gmse()
    assert g.method == "mc" and g.stderr > 0
    emp, se = _empirical(rep, cols)
    assert abs(emp - g.value) <= 3 * math.hypot(se, g.stderr), (spec, emp, g)


def test_group_gmse_is_about_the_rms_value_for_large_groups():
    # a group of 2048 estimates its scale almost as well as the exact (infinite-row) RMS
    assert parse("int4@g2048").gmse().value == pytest.approx(parse("int4").gmse().value, rel=0.03)


def test_cli_gmse_accepts_odd_and_large_groups(capsys):
    from raysweep.cli import main

    assert main(["gmse", "int4@g33", "int4@g2048", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"int4@g33"' in out and '"int4@g2048"' in out


def test_absmax_gmse_depends_on_the_row_length():
    rep = parse("int4@absmax")
    assert rep.mc_row_len() == 1024
    g1024, g64 = rep.gmse(), rep.gmse(64)
    assert rep.gmse(1024) is g1024 and rep.gmse(64) is g64  # cached per row length
    emp, se = _empirical(rep, 64)
    assert abs(emp - g64.value) <= 3 * math.hypot(se, g64.stderr)
    # the max of 64 Gaussians is smaller than the max of 1024: a finer grid, a smaller error
    assert g64.value < 0.8 * g1024.value
    # @h is a rotation: the same value; exact specs ignore the row length
    assert parse("int4@absmax@h").gmse(64).value == g64.value
    assert parse("int4").gmse(64) == parse("int4").gmse()


def test_row_len_must_fit_the_groups():
    with pytest.raises(RaysweepError, match="row_len=100"):
        parse("int4@g64").gmse(100)
    with pytest.raises(RaysweepError, match="row_len=0"):
        parse("int4@absmax").gmse(0)
    assert parse("int4@g64").gmse(128).method == "mc"


def test_cache_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        save_cache(tmp_path / "a.json", lambda p: Path(p).write_bytes(b"{}"))
        os.umask(0o077)
        save_cache(tmp_path / "b.json", lambda p: Path(p).write_bytes(b"{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no temp left
