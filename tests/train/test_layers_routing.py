"""Layer routing on a representation's ProjectionPlan, against stand-in representations
(no dependence on formats' numbers)."""

import torch
from raysweep.formats.base import IntGrid, KeepMask, ProjectionPlan
from raysweep.kernels.reference import int_quant_ref, topk_mask_ref

from raysweep.train.layers import _keep_count, compress


class _Rep:
    """A duck-typed representation: a spec, a project function and a plan."""

    def __init__(self, spec, project, plan=None):
        self.spec, self.project, self.plan = spec, project, plan or ProjectionPlan()


TOPK = ProjectionPlan(mask=KeepMask("topk"))  # no keep-count rule: the layer probes project


def _per_row(frac):
    def project(x):
        k = x.shape[-1] - int(frac * x.shape[-1])          # floor rule: not round()
        keep = topk_mask_ref(x, k)
        return x * keep, keep
    return _Rep(f"rowsparse{frac}", project, TOPK)


def _per_tensor(frac):
    def project(x):
        flat = x.reshape(-1)
        k = flat.numel() - int(frac * flat.numel())
        keep = topk_mask_ref(flat[None], k).reshape(x.shape)
        return x * keep, keep
    return _Rep(f"tensorsparse{frac}", project, TOPK)


def test_keep_count_is_asked_of_the_representation():
    assert _keep_count(_per_row(0.55), 10) == 5            # 10 - floor(5.5), not round
    assert _keep_count(_per_row(0.5), 64) == 32
    assert _keep_count(_per_tensor(0.5), 64) is None       # per tensor: no per-row kernel


def test_triton_sparse_path_matches_representation():
    rep = _per_row(0.55)
    x = torch.randn(5, 40)
    a = compress(x, rep, "mask", "torch")
    b = compress(x, rep, "mask", "triton")
    assert torch.equal(a, b) and ((b != 0).sum(-1) == 18).all()
    rep_t = _per_tensor(0.5)
    assert torch.equal(compress(x, rep_t, "mask", "triton"), rep_t.project(x)[0])


def test_int_grid_routes_to_kernel_and_keeps_numbers():
    rep = _Rep("int3", lambda x: int_quant_ref(x, 3, 2.05107),
               ProjectionPlan(grid=IntGrid(3, 2.05107)))
    x = (torch.randn(7, 96) * 3).requires_grad_()
    y = compress(x, rep, "trust", "triton")
    y_ref, m = int_quant_ref(x.detach(), 3, 2.05107)
    assert torch.equal(y, y_ref)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, m.float())


def test_a_declared_keep_count_rule_is_used_without_probing():
    def project(x):
        raise AssertionError("the layer probed project despite a declared rule")

    rule = ProjectionPlan(mask=KeepMask("topk", keep_count=lambda n: n // 4 if n >= 8 else None))
    rep = _Rep("declared", project, rule)
    assert _keep_count(rep, 40) == 10
    assert _keep_count(rep, 4) is None                    # not per row: the layer asks project
    assert _keep_count(_Rep("all", project, ProjectionPlan(
        mask=KeepMask("topk", keep_count=lambda n: n))), 40) is None   # nothing to prune


def test_layer_uses_the_kernels_backend_switch_and_formats_hadamard():
    import raysweep.kernels as kernels

    from raysweep.train import layers

    assert layers.BACKENDS is kernels.BACKENDS and layers.use_triton is kernels.use_triton
    for copy in ("block_hadamard", "hadamard_block", "_hadamard_matrix", "_use_triton"):
        assert not hasattr(layers, copy), copy
