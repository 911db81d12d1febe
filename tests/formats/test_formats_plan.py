"""ProjectionPlan: the one typed description of how each representation projects."""

import dataclasses

import pytest
import torch
from raysweep.formats import IntGrid, KeepMask, ProjectionPlan, Rotation, parse
from raysweep.formats.sparse import TINY_ROW


def test_int_grid_plan_names_the_kernel_grid():
    rep = parse("int4")
    assert rep.plan == ProjectionPlan(grid=IntGrid(4, rep.grid[2]))
    assert rep.plan.grid.kind == "int" and rep.plan.grid.clip_mult == rep.clip_mult
    assert rep.plan is rep.plan                      # built once
    with pytest.raises(dataclasses.FrozenInstanceError):
        rep.plan.grid = None


@pytest.mark.parametrize("spec", ["int4@g32", "int4@absmax", "fp4", "e3m2", "lloyd3", "ternary",
                                  "vq2x4", "noise3"])
def test_reps_without_a_kernel_have_a_plain_plan(spec):
    assert parse(spec).plan == ProjectionPlan()


def test_identity_plans():
    assert parse("bf16").plan == ProjectionPlan(identity=True)
    both = parse("bf16+none")
    assert both.plan.identity and [p.spec for p in both.plan.parts] == ["bf16", "bf16"]


def test_rotation_plan_carries_the_inner_representation():
    rep = parse("int1@h")
    rot = rep.plan.rotation
    assert isinstance(rot, Rotation) and rot.block == 128
    assert rot.inner is rep.inner and rot.inner.spec == "int1" and rot.inner.rotated
    assert rot.inner.plan.grid == IntGrid(1, parse("int1").grid[2])
    assert rep.plan.grid is None and rep.plan.mask is None and not rep.plan.parts


def test_composite_plan_lists_its_parts():
    rep = parse("sparse50+int4@h")
    assert [p.spec for p in rep.plan.parts] == ["sparse50", "int4@h"]
    assert rep.plan.parts == rep.parts and not rep.plan.identity
    assert rep.plan.grid is None and rep.plan.mask is None and rep.plan.rotation is None


def test_nm_plan():
    plan = parse("2:4").plan
    assert plan.sparse and plan.mask == KeepMask("nm", nm=(2, 4)) and plan.grid is None


@pytest.mark.parametrize("spec", ["sparse50", "sparse55", "sparse12.5", "sparse0", "sparse99.9"])
@pytest.mark.parametrize("n", [4, TINY_ROW - 1, TINY_ROW, 17, 40, 101, 256])
def test_sparse_keep_count_rule_is_what_project_keeps(spec, n):
    """The plan's per-row keep count matches project; None exactly where rows go per tensor."""
    rep = parse(spec)
    mask = rep.plan.mask
    assert rep.plan.sparse and mask.kind == "topk" and mask.nm is None
    k = mask.keep_count(n)
    x = torch.randn(3, n, generator=torch.Generator().manual_seed(n))
    _, keep = rep.project(x)
    if n < TINY_ROW:
        assert k is None
    else:
        assert k == rep.keep_count(n) and (keep.sum(-1) == k).all()
