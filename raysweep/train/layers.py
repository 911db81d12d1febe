"""Compressed linear layers: fake-quantized / pruned ``nn.Linear`` with trained estimators.

A :class:`CompressedLinear` computes ``y = P_a(x) @ P_w(W)^T + b`` where ``P_w``
projects every output row of the weight (last dim = in_features) and ``P_a``
projects every token of the input, both through a representation from
:func:`raysweep.formats.parse`. The projection is re-done on every forward
(the master weight stays high precision), so training sees the compressed
model while the optimizer updates the dense one.

The backward pass is an *estimator*: the gradient of ``x_hat`` with respect to
``x`` is replaced by a mask ``M`` (``grad_x = M * grad_x_hat``):

- ``ste``: straight-through, ``M = 1`` everywhere.
- ``trust`` (QuEST; Panferov et al. 2025, "Unified Scaling Laws for Compressed
  Representations", estimators section): the representation's trust mask,
  ``|x_hat - x| <= step/2 * RMS`` for int grids, so points clipped by more than
  half a step get no gradient. With a Hadamard spec (``@h``) the mask lives in
  the rotated domain: ``grad_x = H^T (M * (H grad_x_hat))``.
- ``mask``: sparsity, backward mask = forward keep mask.
- ``rbbm:A`` (RMSE-banded backward masking, the paper's estimators section):
  with ``T_k`` the largest pruned magnitude of the row and
  ``T_a = RMS * Phi^-1(0.5 + (1 - A) (Phi(T_k / RMS) - 0.5))``,
  ``M = keep | (|x| < T_a)``: the band ``[T_a, T_k]`` of pruned entries gets no
  gradient, the smallest pruned entries do. ``A = 1`` gives ``T_a = 0`` (the
  ``mask`` baseline), ``A = 0`` passes every gradient.
- ``auto``: ``mask`` for sparsity, ``trust`` otherwise.

Composite specs (``sparse50+int4``) chain the parts: forward applies them left
to right, backward applies the parts' masks right to left (the chain rule of
the per-part estimators).

Routing reads one typed description per representation,
:class:`raysweep.formats.base.ProjectionPlan` (``rep.plan``): its ``parts``
(composites), ``identity``, ``rotation`` (``@h``: block size and the inner
representation; the rotation itself is :func:`raysweep.formats.hadamard.rotate`,
in fp32), ``mask`` (top-k with its keep-count rule, or N:M) and ``grid`` (the
per-row RMS int grid of the fused kernel).

``backend`` picks the implementation of the hot projections (per-row RMS int
grid, magnitude top-k and N:M masks): ``triton`` runs :mod:`raysweep.kernels`,
``torch`` the representation's own ``project``; ``auto`` is Triton on CUDA
tensors and torch elsewhere (the switch is :func:`raysweep.kernels.use_triton`,
the allowed names :data:`raysweep.kernels.BACKENDS`). Both give the same
numbers on round-to-nearest paths.

Identity specs (``bf16``/``none``) cost nothing: the layer is then a plain
``F.linear``, so a ``bf16`` model matches ``nn.Linear`` step for step.
Weight projection runs in fp32 even under bf16 autocast.

torch.compile: a projection is one custom operator, ``raysweep::project``
(x -> x_hat and the bool masks of its backward steps, as :class:`BackStep`
data), its backward another, ``raysweep::project_backward``, with a fake
(shape-only) implementation each. ``torch.compile(model, fullgraph=True)``
traces a compressed model with no graph break whatever the format does
inside (docs/training.md "Compiling"); eager runs the operators'
implementations directly (same code, no dispatch cost).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from raysweep import kernels
from raysweep.errors import RaysweepError
from raysweep.formats import hadamard
from raysweep.formats.rounding import uniforms
from raysweep.kernels import BACKENDS, check_backend, use_triton  # noqa: F401 (BACKENDS re-exported)

ESTIMATORS = ("auto", "ste", "trust", "mask", "rbbm:A")


# --------------------------------------------------------------------------- estimators


@dataclass(frozen=True)
class Estimator:
    """A parsed estimator name: ``kind`` in auto/ste/trust/mask/rbbm, ``a`` for rbbm."""

    kind: str
    a: float = 1.0


def parse_estimator(name: str) -> Estimator:
    """Parse ``auto|ste|trust|mask|rbbm:A`` (A in [0, 1]); raise RaysweepError otherwise."""
    if not isinstance(name, str):
        raise RaysweepError(f"estimator: expected a string, one of {ESTIMATORS}, got {name!r}")
    key = name.strip().lower()
    if key in ("auto", "ste", "trust", "mask"):
        return Estimator(key)
    if key.startswith("rbbm"):
        _, sep, val = key.partition(":")
        try:
            a = float(val) if sep else float("nan")
        except ValueError:
            a = float("nan")
        if not 0.0 <= a <= 1.0:
            raise RaysweepError(f"estimator: rbbm needs a band parameter A in [0, 1] as "
                                f"'rbbm:A' (e.g. rbbm:0.5), got {name!r}")
        return Estimator("rbbm", a)
    raise RaysweepError(f"estimator: unknown {name!r}; allowed: {', '.join(ESTIMATORS)}")


# --------------------------------------------------------------------------- projection plan

def _rotate32(x: torch.Tensor, block: int) -> torch.Tensor:
    """formats' block Hadamard (its own inverse) of x in fp32, with fp32 matrices."""
    return hadamard.rotate(x.float(), block)


def _parts(rep) -> tuple:
    """The representation's parts for composites (``A+B``), else ``(rep,)``."""
    return rep.plan.parts or (rep,)


@dataclass(frozen=True)
class BackStep:
    """The backward step of one projection: ``g -> g`` where ``mask`` is set, else 0.

    ``blocks``: the Hadamard rotations (``@h``) the mask lives inside, outermost
    first; the step is then ``H^T (mask * (H g))`` in fp32, cast back to g's dtype.
    A step is data (a bool tensor and ints), not a closure, so the compiled layer
    can save it for backward (:func:`compress`).
    """

    mask: torch.Tensor
    blocks: tuple[int, ...] = ()

    def apply(self, g: torch.Tensor, backend: str = "torch") -> torch.Tensor:
        if not self.blocks:
            return _mask_grad(g, self.mask, backend)
        h = g
        for block in self.blocks:
            h = _rotate32(h, block)
        h = _mask_grad(h, self.mask, backend)
        for block in reversed(self.blocks):
            h = _rotate32(h, block)
        return h.to(g.dtype)


def _project_part(rep, x: torch.Tensor, est: Estimator, backend: str):
    """Project x (fp32 or bf16) by one non-composite part; return (x_hat, back step or None)."""
    plan = rep.plan
    rot = plan.rotation
    if rot is not None:
        # Rotate here, project by the inner representation (its trust mask lives in the
        # rotated domain; int1@h's inner grid has the wider radius), rotate back.
        block = hadamard.block_size(x.shape[-1], rot.block)
        q, step = _project_part(rot.inner, _rotate32(x, block), est, backend)
        x_hat = _rotate32(q, block).to(x.dtype)
        if step is None:
            return x_hat, None
        return x_hat, BackStep(step.mask, (block, *step.blocks))

    if plan.sparse:
        x_hat, keep = _sparse_project(rep, x, backend)
        if est.kind == "ste":
            return x_hat, None
        if est.kind == "rbbm" and plan.mask.kind == "topk":
            keep = rbbm_mask(x, keep, est.a)
        return x_hat, _mask_step(keep, backend)

    grid = plan.grid
    # int1 has a wider trust region in QuEST (the paper's estimators section): its mask
    # stays with formats.
    if grid is not None and grid.kind == "int" and grid.bits >= 2 and use_triton(backend, x):
        x_hat, mask = kernels.int_quant(x, grid.bits, grid.clip_mult, backend="triton")
    elif plan.block is not None and use_triton(backend, x):  # MX / NVFP4: the fused kernel
        blk = plan.block
        u = uniforms(x) if blk.stochastic else None
        x_hat, mask = kernels.block_quant(x, blk.kind, blk.element, blk.four_six, u,
                                          blk.headroom, backend="triton")
    else:
        x_hat, mask = rep.project(x)
    if est.kind == "ste" or mask is None:
        return x_hat, None
    return x_hat, _mask_step(mask, backend)


# Masked backward on the Triton backend: the fused kernel (True) or torch.where (False);
# both are one pass over g and the mask, the kernel costs a Triton launch on the CPU.
MASK_KERNEL = True


def _mask_step(mask: torch.Tensor, backend: str = "torch") -> BackStep:
    """The backward step ``g -> g * mask`` of a trust or keep mask (as data: the
    backend is applied when the step runs, :meth:`BackStep.apply`)."""
    return BackStep(mask.bool())


def _mask_grad(g: torch.Tensor, mask: torch.Tensor, backend: str = "torch") -> torch.Tensor:
    """``g`` where the bool ``mask`` is set, else 0 (one fused pass with the Triton backend)."""
    if MASK_KERNEL and use_triton(backend, mask):
        return kernels.masked_grad(g, mask, backend="triton")
    return torch.where(mask, g, torch.zeros((), dtype=g.dtype, device=g.device))


def _sparse_project(rep, x: torch.Tensor, backend: str):
    """(x_hat, keep mask) of a sparsity part; Triton top-k / N:M where selected."""
    rule = rep.plan.mask
    if use_triton(backend, x) and x.dim() >= 1:
        if rule.kind == "nm" and x.shape[-1] % rule.nm[1] == 0:
            keep = kernels.nm_mask(x, rule.nm[0], rule.nm[1], backend="triton")
            return x * keep, keep
        k = _keep_count(rep, x.shape[-1]) if rule.kind == "topk" else None
        if k is not None:
            keep = kernels.topk_mask(x, k, backend="triton")
            return x * keep, keep
    x_hat, mask = rep.project(x)
    keep = mask if mask is not None else (x_hat != 0) | (x == 0)
    return x_hat, keep


_KEEP_COUNTS: dict = {}


def _keep_count(rep, n: int) -> int | None:
    """Entries per row the representation keeps at row length n, or None if not per row.

    Asked of the representation itself: its plan's keep-count rule
    (``KeepMask.keep_count``) when it states one, else by projecting two rows of
    distinct magnitudes once per (spec, n). Either way the Triton top-k keeps
    exactly what ``rep.project`` keeps, whatever rounding rule and tiny-row
    policy formats uses. None also when nothing or everything is kept.
    """
    rule = rep.plan.mask.keep_count
    if rule is not None:
        k = rule(n)
        return k if k is not None and 0 < k < n else None
    key = (rep.spec, n)
    if key not in _KEEP_COUNTS:
        probe = torch.arange(1, 2 * n + 1, dtype=torch.float32).reshape(2, n)
        x_hat, _ = rep.project(probe)
        kept = (x_hat != 0).sum(-1).tolist()
        _KEEP_COUNTS[key] = kept[0] if kept[0] == kept[1] and 0 < kept[0] < n else None
    return _KEEP_COUNTS[key]


def rbbm_mask(x: torch.Tensor, keep: torch.Tensor, a: float) -> torch.Tensor:
    """RMSE-banded backward mask ``keep | (|x| < T_a)`` (RBBM, Panferov et al. 2025,
    "Unified Scaling Laws for Compressed Representations", estimators section), per row.

    ``T_k`` is the row's largest pruned magnitude (the top-k threshold),
    ``T_a = RMS * Phi^-1(0.5 + (1 - a) (Phi(T_k / RMS) - 0.5))``. At a = 1 the
    formula itself gives the baseline exactly: ``Phi^-1(0.5) = 0``, so T_a = 0 and
    the mask is ``keep`` (no early return: the endpoint runs the formula). At
    a = 0, T_a = T_k up to rounding and the band [T_a, T_k] shrinks to the
    largest pruned entries, which float rounding puts on either side; the
    paper's a = 0 endpoint (every gradient passes) is taken as the definition
    there, and a -> 0 differs from it only at the entries equal to T_k.
    """
    keep = keep.bool()
    if a <= 0.0:
        return torch.ones_like(keep)
    xa = x.float().abs()
    rms = xa.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(torch.finfo(torch.float32).tiny)
    t_k = torch.where(keep, torch.zeros_like(xa), xa).amax(-1, keepdim=True)
    normal = torch.distributions.Normal(0.0, 1.0)
    p = 0.5 + (1.0 - a) * (normal.cdf(t_k / rms) - 0.5)
    t_a = rms * normal.icdf(p.clamp(0.5, 1.0 - 1e-7))
    return keep | (xa < t_a)


def project_with_estimator(rep, x: torch.Tensor, est: Estimator, backend: str):
    """Run every part of ``rep`` on x; return (x_hat, backward steps in forward order)."""
    steps: list[BackStep] = []
    for part in _parts(rep):
        plan = part.plan
        if plan.identity:
            continue
        kind = est.kind
        if kind == "auto":
            kind = "mask" if plan.sparse else "trust"
        elif kind in ("mask", "rbbm") and not plan.sparse:
            kind = "trust"  # quantizer parts of a composite keep their trust mask
        x, step = _project_part(part, x, Estimator(kind, est.a), backend)
        if step is not None:
            steps.append(step)
    return x, steps


# --------------------------------------------------------------------------- custom operators
#
# compress() is two custom operators, ``raysweep::project`` (x -> [x_hat, masks...]) and
# ``raysweep::project_backward`` (g, masks -> grad_x), with the autograd formula between
# them. torch.compile sees each as one opaque node with a fake (shape-only)
# implementation, so whatever a representation's projection does inside (``.item()``,
# numpy, caches, data-dependent shapes, Triton launches) never breaks the graph, and the
# eager layer runs the very same implementations (:class:`_ProjectEager`). Strings name
# what is not a tensor: the representation (a key of _REPS), the estimator (kind, a) and
# the backend.

_REPS: dict[str, object] = {}  # key -> representation (kept alive: the key holds its id)
_LAYOUTS: dict[tuple, tuple] = {}  # (key, kind, a, n) -> Hadamard blocks of every step


@torch.compiler.assume_constant_result
def _rep_key(rep) -> str:
    """The string that names ``rep`` to the custom operators (registered on first use).

    Run for real while torch.compile traces (not traced: dynamo would defer the
    registration past the fake implementation that needs it); the key is a constant.
    """
    key = f"{rep.spec}#{id(rep):x}"
    if key not in _REPS:
        _REPS[key] = rep
    return key


def _layout(key: str, kind: str, a: float, n: int) -> tuple:
    """The backward steps of projecting rows of length n: the blocks of each, in order.

    Whether a part has a step (its mask may be None) is up to the representation, so
    it is learnt from a projection: the first real one records it, and a trace that
    comes before any (the fake implementation) projects a 2 x n probe, outside the
    trace and without touching the global RNG.
    """
    lk = (key, kind, a, n)
    if lk not in _LAYOUTS:
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        with unset_fake_temporarily(), torch.no_grad(), torch.random.fork_rng(devices=[]):
            probe = torch.randn(2, n, generator=torch.Generator().manual_seed(0))
            _, steps = project_with_estimator(_REPS[key], probe, Estimator(kind, a), "torch")
        _LAYOUTS[lk] = tuple(s.blocks for s in steps)
    return _LAYOUTS[lk]


def _unaliased(ts: list) -> list:
    """``ts`` with every tensor that shares storage with an earlier one copied."""
    seen, out = set(), []
    for t in ts:
        ptr = t.untyped_storage().data_ptr()
        if t.numel() and ptr in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out.append(t)
    return out


def _project_impl(x: torch.Tensor, key: str, kind: str, a: float,
                  backend: str) -> list[torch.Tensor]:
    """[x_hat (x's dtype), bool mask of every backward step (forward order)]."""
    with torch.no_grad():
        x_hat, steps = project_with_estimator(_REPS[key], x, Estimator(kind, a), backend)
    _LAYOUTS.setdefault((key, kind, a, x.shape[-1]), tuple(s.blocks for s in steps))
    return _unaliased([x, x_hat.to(x.dtype), *(s.mask for s in steps)])[1:]


def _project_backward_impl(g: torch.Tensor, masks: list[torch.Tensor], key: str, kind: str,
                           a: float, backend: str) -> torch.Tensor:
    """The estimator's backward: the steps' masks applied right to left (chain rule)."""
    blocks = _layout(key, kind, a, g.shape[-1])
    out = g
    for mask, blk in reversed(list(zip(masks, blocks, strict=True))):
        out = BackStep(mask, blk).apply(out, backend)
    return out.clone() if out is g else out


_project_op = torch.library.custom_op("raysweep::project", _project_impl, mutates_args=())


@_project_op.register_fake
def _project_fake(x, key, kind, a, backend):
    n_steps = len(_layout(key, kind, a, int(x.shape[-1])))
    return [x.new_empty(x.shape)] + [x.new_empty(x.shape, dtype=torch.bool)
                                     for _ in range(n_steps)]


_project_backward_op = torch.library.custom_op("raysweep::project_backward",
                                               _project_backward_impl, mutates_args=())


@_project_backward_op.register_fake
def _project_backward_fake(g, masks, key, kind, a, backend):
    return g.new_empty(g.shape)


def _project_setup(ctx, inputs, output):
    _, key, kind, a, backend = inputs
    ctx.save_for_backward(*output[1:])
    ctx.args = (key, kind, a, backend)


def _project_backward(ctx, grads):
    g, masks = grads[0], list(ctx.saved_tensors)
    if masks:
        g = _project_backward_op(g, masks, *ctx.args)
    return g, None, None, None, None


torch.library.register_autograd("raysweep::project", _project_backward,
                                setup_context=_project_setup)


class _ProjectEager(torch.autograd.Function):
    """Eager twin of the operators: the same two functions, without the dispatch.

    A custom operator's autograd wrapper cost ~1 ms per projection on the 2-core
    CPU (17-30% of an eager W4A4 step, measured against the old layer); eager runs
    call the implementations directly, torch.compile traces the operators
    (:func:`_project`). Same code, same numbers.
    """

    @staticmethod
    def forward(ctx, x, key, kind, a, backend):
        x_hat, *masks = _project_impl(x, key, kind, a, backend)
        ctx.save_for_backward(*masks)
        ctx.args = (key, kind, a, backend)
        return x_hat

    @staticmethod
    def backward(ctx, g):
        masks = list(ctx.saved_tensors)
        if masks:
            g = _project_backward_impl(g, masks, *ctx.args)
        return g, None, None, None, None


def _project(x: torch.Tensor, key: str, est: Estimator, backend: str) -> torch.Tensor:
    """x_hat of the projection named by ``key``: the operator when compiling, else eager."""
    if torch.compiler.is_compiling():
        return _project_op(x, key, est.kind, est.a, backend)[0]
    return _ProjectEager.apply(x, key, est.kind, est.a, backend)


def compress(x: torch.Tensor, rep, est: Estimator | str = "auto",
             backend: str = "auto") -> torch.Tensor:
    """Differentiable projection of x by ``rep`` with the given estimator.

    Under torch.compile one ``raysweep::project`` operator (its backward
    ``raysweep::project_backward``), traced without a graph break; eager, the same
    two functions in an autograd.Function (:func:`_project`).
    """
    if isinstance(est, str):
        est = parse_estimator(est)
    if rep.plan.identity:
        return x
    return _project(x, _rep_key(rep), est, check_backend(backend))


# --------------------------------------------------------------------------- FP8 forward GEMM


def _fp8_grid(rep):
    """The IntGrid of rep when its codes are exact in float8 e4m3 (b <= 4, no rotation)."""
    plan = rep.plan
    grid = plan.grid
    if grid is None or grid.kind != "int" or grid.bits > 4:
        return None
    if plan.rotation is not None or plan.parts:
        return None
    return grid


def fp8_supported(device: torch.device) -> bool:
    """Float8 tensor cores (sm89+) and row-wise ``torch._scaled_mm``."""
    return (device.type == "cuda" and hasattr(torch, "_scaled_mm")
            and torch.cuda.get_device_capability(device) >= (8, 9))


class _FP8Linear(torch.autograd.Function):
    """W{b}A{b} linear (b <= 4) with the forward GEMM on float8 codes.

    The half-integer codes ``r - 1/2`` (|code| <= 7.5) are exact in e4m3, so
    ``y = (codes_x @ codes_w^T) * scale_x * scale_w^T`` is the fake-quantized
    product with an exact fp32 accumulation (more precise than the bf16 GEMM on
    rounded x_hat). The backward GEMMs use the bf16 x_hat / W_hat and the
    trust masks, exactly like the bf16 path (gpu.md "Below dense is possible").
    """

    @staticmethod
    def forward(ctx, x, w, a_grid, w_grid, ste):
        from raysweep.kernels.quant import int_quant_triton

        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        xh, mx, cx, sx = int_quant_triton(x2, a_grid.bits, a_grid.clip_mult,
                                          out_dtype=torch.bfloat16, codes=True)
        wh, mw, cw, sw = int_quant_triton(w, w_grid.bits, w_grid.clip_mult,
                                          out_dtype=torch.bfloat16, codes=True)
        y = torch._scaled_mm(cx, cw.t(), scale_a=sx, scale_b=sw.t(), out_dtype=torch.bfloat16)
        ctx.save_for_backward(xh, wh, mx, mw)
        ctx.ste, ctx.w_dtype = ste, w.dtype
        return y.reshape(*shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, g):
        xh, wh, mx, mw = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1]).to(torch.bfloat16)
        gx = g2 @ wh
        gw = g2.t() @ xh
        if not ctx.ste:
            gx = kernels.masked_grad(gx, mx, backend="triton")
            gw = kernels.masked_grad(gw, mw, backend="triton")
        return gx.reshape(*g.shape[:-1], wh.shape[1]), gw.to(ctx.w_dtype), None, None, None


# --------------------------------------------------------------------------- the layer


class CompressedLinear(nn.Linear):
    """``nn.Linear`` whose weight rows and input tokens are projected on every forward.

    Args:
        weights, activations: representation specs (``raysweep.formats`` grammar),
            e.g. ``"int4"``, ``"sparse50"``, ``"2:4"``, ``"sparse50+int4"``, ``"bf16"``.
        estimator: ``auto`` | ``ste`` | ``trust`` | ``mask`` | ``rbbm:A``.
        backend: ``auto`` | ``triton`` | ``torch`` (see the module docstring).
        fp8_forward: run the forward GEMM on float8 codes (:class:`_FP8Linear`) when
            both specs are per-row int grids with b <= 4, the Triton backend is
            active and the GPU has float8 tensor cores; otherwise ignored.
    """

    def __init__(self, in_features: int, out_features: int, weights: str = "bf16",
                 activations: str = "bf16", estimator: str = "auto", backend: str = "auto",
                 bias: bool = False, device=None, dtype=None, fp8_forward: bool = False):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        from raysweep.formats import parse

        self.weights_spec, self.activations_spec = weights, activations
        self.w_rep, self.a_rep = parse(weights), parse(activations)
        # Resolved here, not in forward: the plans are cached properties (a lock that
        # torch.compile cannot trace) and the operators' keys register the reps.
        self._w_key = None if self.w_rep.plan.identity else _rep_key(self.w_rep)
        self._a_key = None if self.a_rep.plan.identity else _rep_key(self.a_rep)
        self.estimator_name = estimator
        self.estimator = parse_estimator(estimator)
        self.backend = check_backend(backend)
        self.fp8_forward = fp8_forward

    @classmethod
    def from_linear(cls, linear: nn.Linear, weights: str = "bf16", activations: str = "bf16",
                    estimator: str = "auto", backend: str = "auto",
                    fp8_forward: bool = False) -> CompressedLinear:
        """A CompressedLinear sharing ``linear``'s parameters (no copy)."""
        new = cls(linear.in_features, linear.out_features, weights, activations, estimator,
                  backend, bias=linear.bias is not None, device="meta", fp8_forward=fp8_forward)
        new.weight = linear.weight
        new.bias = linear.bias
        return new

    def _fp8_ok(self, x: torch.Tensor) -> bool:
        if not (self.fp8_forward and use_triton(self.backend, x) and fp8_supported(x.device)):
            return False
        bf16 = x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cuda") and
                                             torch.get_autocast_dtype("cuda") == torch.bfloat16)
        return (bf16 and self.estimator.kind in ("auto", "trust", "ste")
                and _fp8_grid(self.w_rep) is not None and _fp8_grid(self.a_rep) is not None
                and self.in_features % 16 == 0 and self.out_features % 16 == 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if self._fp8_ok(x):
            y = _FP8Linear.apply(x, w, _fp8_grid(self.a_rep), _fp8_grid(self.w_rep),
                                 self.estimator.kind == "ste")
            return y if self.bias is None else y + self.bias.to(y.dtype)
        est, backend = self.estimator, self.backend
        if self._w_key is not None:
            # Projection numerics in fp32 even under autocast (the master weight is fp32).
            with torch.autocast(device_type=w.device.type, enabled=False):
                w = _project(w.float(), self._w_key, est, backend)
        if self._a_key is not None:
            x = _project(x, self._a_key, est, backend)
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, weights={self.weights_spec!r}, "
                f"activations={self.activations_spec!r}, estimator={self.estimator_name!r}, "
                f"backend={self.backend!r}")


def convert_linears(model: nn.Module, weights: str, activations: str,
                    filter_fn: Callable[[nn.Module, str], bool] | None = None,
                    **kw) -> nn.Module:
    """Swap ``nn.Linear`` modules of ``model`` in place for :class:`CompressedLinear`.

    ``filter_fn(module, fqn) -> bool`` picks which layers to swap (all when None);
    ``kw`` (estimator, backend) go to :meth:`CompressedLinear.from_linear`.
    Parameters are shared, not copied, so optimizer state built before or after
    the swap refers to the same tensors. Returns ``model``.
    """
    for name, child in list(model.named_modules()):
        for cname, sub in list(child.named_children()):
            fqn = f"{name}.{cname}" if name else cname
            if type(sub) is not nn.Linear:  # leaves CompressedLinear and other subclasses alone
                continue
            if filter_fn is not None and not filter_fn(sub, fqn):
                continue
            setattr(child, cname, CompressedLinear.from_linear(sub, weights, activations, **kw))
    return model
