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


class Rotated(Representation):
    """``inner@h``: rotate, project by the inner representation, rotate back."""

    hadamard = MAX_BLOCK

    def __init__(self, inner: Representation):
        self.inner = inner
        self.spec = inner.spec + "@h"
        self.family = inner.family
        self.bits_per_element = inner.bits_per_element
        self.row_multiple = inner.row_multiple

    def _plan(self) -> ProjectionPlan:
        return ProjectionPlan(rotation=Rotation(self.hadamard, self.inner))

    def _project(self, x):
        q, _ = self.inner.project(rotate(x))
        return rotate(q), None

    def _gmse(self) -> GMSE:
        return self.inner.gmse()

    def _gmse_rows(self, row_len: int) -> GMSE:
        return self.inner.gmse(row_len)
