"""A Llama-style decoder: pre-norm RMSNorm, RoPE, SwiGLU, untied embedding and head, no biases.

The model the paper trains (Panferov et al. 2025, training setup), small enough to
read in one sitting. Shapes come from :mod:`raysweep.train.sizes` (torch-free), so
the sweep can count parameters without building anything, and
:meth:`GPT.param_counts` checks that the built model agrees.

Design notes:

- The block's linear layers are plain ``nn.Linear`` modules named
  ``blocks.{i}.attn.qkv``, ``.attn.proj``, ``.mlp.gate_up``, ``.mlp.down``;
  :func:`raysweep.train.layers.convert_linears` swaps them for ``CompressedLinear``
  (filter :func:`is_compressible`). The head (``head``) and the embedding stay
  dense, as do the norms.
- q, k, v share one ``qkv`` matrix and the SwiGLU gate and up projections one
  ``gate_up`` matrix. Each row of a fused matrix is a row of one of the separate
  matrices and all of them read the same input, so per-row weight projection and
  per-token activation projection give exactly the numbers of separate layers
  (per-tensor sparsity, used only for tiny rows, is the one exception), at a
  third of the matmul launches.
- Init (GPT-2 / nanoGPT convention the issue asks for): every weight
  N(0, 0.02), the residual output projections (``attn.proj``, ``mlp.down``)
  N(0, 0.02 / sqrt(2 n_layer)) so the residual stream's variance does not grow
  with depth; norm weights 1.
- Attention is ``F.scaled_dot_product_attention(is_causal=True)``; RoPE uses
  the rotate-half form with base 10000, tables cached per sequence length.

Parameter counting convention (Panferov et al. 2025, training setup): N = everything
except the input embedding and the output head; the RMSNorm weights count.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from raysweep.errors import RaysweepError
from raysweep.train.sizes import group_counts, mlp_hidden

ROPE_BASE = 10000.0
NORM_EPS = 1e-6


def is_compressible(module: nn.Module, fqn: str) -> bool:
    """``convert_linears`` filter: the attention and MLP linears, never the head."""
    return fqn.startswith("blocks.")


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * g`` over the last dim (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_tables(seq_len: int, head_dim: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of shape (seq_len, head_dim) for rotate-half RoPE.

    Frequencies ``theta_i = base^(-2i / head_dim)`` for i < head_dim / 2 (Su et
    al. 2021), repeated for both halves of the head.
    """
    even = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
    inv = ROPE_BASE ** (-even / head_dim)
    ang = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv)
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, hd) queries or keys: ``x cos + rotate_half(x) sin``."""
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rot * sin.to(x.dtype)


class Attention(nn.Module):
    """Causal multi-head self-attention with RoPE on q and k."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    """``down(silu(gate x) * up x)`` (Shazeer 2020), gate and up fused in one matrix."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).split(self.hidden, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """Pre-norm residual block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, d_model: int, n_heads: int, hidden: int):
        super().__init__()
        self.attn_norm = RMSNorm(d_model)
        self.attn = Attention(d_model, n_heads)
        self.mlp_norm = RMSNorm(d_model)
        self.mlp = SwiGLU(d_model, hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    """The decoder. ``forward(idx, targets=None)`` returns logits, or the mean CE loss."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, vocab: int,
                 hidden: int | None = None):
        super().__init__()
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise RaysweepError(
                f"n_heads: {n_heads} must divide d_model={d_model} into an even head dim")
        self.n_layers, self.d_model, self.n_heads, self.vocab = n_layers, d_model, n_heads, vocab
        self.hidden = hidden or mlp_hidden(d_model)
        self.embed = nn.Embedding(vocab, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, self.hidden) for _ in range(n_layers))
        self.norm = RMSNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self._rope: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """N(0, std) everywhere, N(0, std / sqrt(2 n_layers)) on residual outputs, norms 1."""
        resid = std / math.sqrt(2 * self.n_layers)
        for name, p in self.named_parameters():
            if p.ndim == 1:
                nn.init.ones_(p)
            elif name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, 0.0, resid)
            else:
                nn.init.normal_(p, 0.0, std)

    def _rope_for(self, t: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (t, str(device))
        if key not in self._rope:
            self._rope[key] = rope_tables(t, self.d_model // self.n_heads, device)
        return self._rope[key]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        cos, sin = self._rope_for(idx.shape[1], idx.device)
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.head(self.norm(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, self.vocab), targets.reshape(-1))

    def param_counts(self) -> dict[str, int]:
        """Parameters by group, counted on the built module.

        Groups: ``embedding``, ``attention`` (qkv + proj), ``mlp`` (gate_up + down),
        ``norm`` (all RMSNorm weights), ``head``; ``non_embedding`` = N =
        attention + mlp + norm (Panferov et al. 2025, training setup); ``total``.
        """
        groups = dict.fromkeys(("embedding", "attention", "mlp", "norm", "head"), 0)
        for name, p in self.named_parameters():
            if name.startswith("embed."):
                groups["embedding"] += p.numel()
            elif name.startswith("head."):
                groups["head"] += p.numel()
            elif ".attn." in name:
                groups["attention"] += p.numel()
            elif ".mlp." in name:
                groups["mlp"] += p.numel()
            else:
                groups["norm"] += p.numel()
        groups["non_embedding"] = groups["attention"] + groups["mlp"] + groups["norm"]
        groups["total"] = groups["non_embedding"] + groups["embedding"] + groups["head"]
        return groups

    def expected_counts(self) -> dict[str, int]:
        """The same groups from :func:`raysweep.train.sizes.group_counts` (no module walk)."""
        return group_counts(self.n_layers, self.d_model, self.vocab)
