"""The ``@h`` option: block-Hadamard rotation before a representation.

``x_hat = H^T Q(H x)`` with H the orthonormal Sylvester Hadamard matrix of
size 128 applied to consecutive blocks of the last dim (block diagonal). H is
symmetric and orthogonal, so the same product undoes the rotation. When the
last dim n is not a multiple of 128 the block is the largest power of two
<= 128 dividing n (64, 32, ...; an odd n gets block 1, i.e. no rotation):
:func:`block_size`. Matrices are built lazily on the input's device and dtype,
once per (size, device, dtype). These are the only Hadamard functions of the
project: the layer (raysweep.train.layers) rotates with :func:`rotate` too.

GMSE equals the inner representation's: an orthogonal rotation of i.i.d.
N(0, 1) data is again i.i.d. N(0, 1), and the error's norm is unchanged.
The trust mask lives in the rotated domain, so ``project`` returns None; the
plan (``Rotation(block, inner)``) tells a layer to rotate itself, project by
``inner`` and apply the inner mask there.

``@rh{B}`` (B = 16, 32, 64, 128): the random-sign variant ``x_hat = d H^T Q(H d x)``
with a fresh diagonal of random signs ``d`` per projection (:class:`Rotated`);
GMSE is the inner's for the same reason (the signs keep N(0, 1) data N(0, 1)).
"""

from __future__ import annotations

import math

from .base import ProjectionPlan, Representation, Rotation
from .gaussian import GMSE

MAX_BLOCK = 128
_CACHE: dict = {}


def hadamard_matrix(n: int, device=None, dtype=None):
    """Orthonormal Sylvester Hadamard matrix of size n (a power of two), cached."""
    import torch

    key = (n, str(device), dtype)
    h = _CACHE.get(key)
    if h is None:
        h = torch.ones(1, 1, dtype=torch.float64)
        while h.shape[0] < n:
            h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
        h = (h / math.sqrt(n)).to(device=device, dtype=dtype or torch.float32)
        _CACHE[key] = h
    return h


def block_size(n: int, max_block: int = MAX_BLOCK) -> int:
    """Largest power of two <= max_block that divides n."""
    b = max_block
    while b > 1 and n % b:
        b //= 2
    return b


def rotate(x, block: int | None = None):
    """Block-Hadamard rotation of x along its last dim (its own inverse)."""
    n = x.shape[-1]
    block = block or block_size(n)
    if block == 1:
        return x.clone()
    h = hadamard_matrix(block, x.device, x.dtype)
    return (x.reshape(*x.shape[:-1], n // block, block) @ h).reshape(x.shape)


def random_signs(n: int, device=None, generator=None):
    """n float32 signs +-1, each 1 with probability 1/2 (torch's global RNG by default)."""
    import torch

    bits = torch.randint(0, 2, (n,), device=device, generator=generator)
    return bits.to(torch.float32).mul_(2.0).sub_(1.0)


class Rotated(Representation):
    """``inner@h`` / ``inner@rh{B}``: rotate, project by the inner representation, rotate back.

    ``@rh{B}`` (``random_block=B``): ``y = H (d * x)`` with ``d`` one random sign per
    column of the last dim (shared by all rows), drawn at every projection from torch's
    global RNG (or ``self.generator``), and ``x_hat = d * H^T Q(y)``; H of block
    ``block_size(n, B)``. Its plan is the default one (the layer calls ``project``; no
    trust mask, the rotated domain's mask does not map back to an elementwise one).
    """

    hadamard = MAX_BLOCK

    def __init__(self, inner: Representation, random_block: int | None = None):
        self.inner = inner
        self.random_block = random_block
        if random_block:
            self.hadamard = random_block
        self.spec = inner.spec + (f"@rh{random_block}" if random_block else "@h")
        self.family = inner.family
        self.bits_per_element = inner.bits_per_element
        self.row_multiple = inner.row_multiple
        self.stochastic = inner.stochastic
        self.generator = None

    def _plan(self) -> ProjectionPlan:
        if self.random_block:
            return ProjectionPlan()  # signs are redrawn inside project (see the class doc)
        return ProjectionPlan(rotation=Rotation(self.hadamard, self.inner))

    def _project(self, x, r=None):
        inner = self.inner
        if not self.random_block:
            y = rotate(x)
            q, _ = inner.project(y) if r is None else inner.project_with_uniforms(y, r)
            return rotate(q), None
        block = block_size(x.shape[-1], self.random_block)
        d = random_signs(x.shape[-1], x.device, self.generator)
        y = rotate(x * d, block)
        q, _ = inner.project(y) if r is None else inner.project_with_uniforms(y, r)
        return rotate(q, block).mul_(d), None

    def _gmse(self) -> GMSE:
        return self.inner.gmse()

    def _gmse_rows(self, row_len: int) -> GMSE:
        return self.inner.gmse(row_len)
