"""Model sizes without torch: presets, the size dial, ``LxD`` sizes, parameter counts, default LR.

The sweep plans trials (FLOPs = 6 N D) before anything is trained, so the shape
of a model and its parameter count N must be computable without importing torch
or building the model. :mod:`raysweep.train.model` builds exactly the shapes resolved
here, and its tests check that ``count_params`` equals the built model's count.

A size is one of

- a paper preset, ``30M`` / ``50M`` / ``100M`` / ``200M`` (Panferov et al. 2025, training
  setup: layers, heads, d_model and peak LR from the table; vocab 32000 gives N = 30,482,560
  for 30M);
- a value of the size dial, ``d{W}`` (or the bare integer W): the model width,
  every other dimension derived by the rules below (e.g. ``d32``, ``d48``, ``d80``,
  the 2-core CPU sizes of docs/cpu-scale.md, or ``d256`` / ``d384`` for a GPU);
- an explicit ``{n_layers}x{d_model}`` such as ``2x64``: the same derivation for
  heads and MLP width, with the depth given.

The derivation (one place, nanochat-style)::

    1. d_model     = W                                  (the dial; a multiple of 16)
    2. n_layers    = max(2, round(W / 64))              (nanochat's width = 64 * depth,
                                                         floored at 2 layers: d32..d160 -> 2,
                                                         d256 -> 4, d384 -> 6, d640 -> 10)
    3. head_dim    = 16 if W < 256, 64 if W < 640, else 128
                                                        (the paper presets all use 128;
                                                         docs/cpu-scale.md measured 16 at tiny
                                                         sizes)
       n_heads     = W / head_dim, moved to the nearest divisor of W giving an even head dim
    4. mlp_hidden  = 256 * ceil((8 W / 3) / 256)        if W >= 256   (Panferov et al. 2025,
                                                                      training setup)
                   = 16 * round((8 W / 3) / 16)         if W <  256   (tiny: a multiple of 16;
                                                         256-rounding would add up to 3x
                                                         the SwiGLU width at W = 32)
    5. N (non-embedding) = n_layers * (4 W^2 + 3 W mlp_hidden + 2 W) + W
                         (q, k, v, o; gate, up, down; two RMSNorms per block; final norm)
       embedding = head = vocab * W (untied, not counted in N)
    6. peak LR = the paper's table for presets; 3e-3 * sqrt(128 / W) otherwise
                 (docs/cpu-scale.md: the recipe measured to work at W = 32..128)

Checked values (vocab 256, head dim 16): ``d32`` -> 2x32, N = 23,712; ``d48`` -> N = 55,536;
``d80`` -> N = 151,440; ``2x128`` -> N = 389,760 (docs/cpu-scale.md). Presets (vocab
32000): 30M -> 30,482,560; 50M -> 49,556,736; 100M -> 102,777,856; 200M -> 203,188,480.
The GPU planning points of docs/gpu.md come out as ``d256`` -> 4x256, N = 3.41M and
``d384`` -> 6x384, N = 10.62M.
"""

from __future__ import annotations

import math
import re

from raysweep.errors import RaysweepError

# name -> (n_layers, n_heads, d_model, peak_lr): Panferov et al. 2025, training setup.
PRESETS: dict[str, tuple[int, int, int, float]] = {
    "30M": (6, 5, 640, 1.2e-3),
    "50M": (7, 6, 768, 1.2e-3),
    "100M": (8, 8, 1024, 6e-4),
    "200M": (10, 10, 1280, 3e-4),
}

SIZE_FORMS = (
    "a preset (30M, 50M, 100M, 200M), a dial value d{W} (e.g. d32, d80), or LxD (e.g. 2x64)"
)

# Beyond any model this tool trains (the paper's largest is 200M): an absurd size is an error.
MAX_LAYERS, MAX_WIDTH = 512, 65536
_LXD = re.compile(r"^(\d+)x(\d+)$")
_DIAL = re.compile(r"^d?(\d+)$")


def mlp_hidden(d_model: int) -> int:
    """SwiGLU hidden width for a model of width ``d_model`` (rule 4 above)."""
    if d_model >= 256:
        return 256 * math.ceil((8 * d_model / 3) / 256)
    return max(16, 16 * math.floor((8 * d_model / 3) / 16 + 0.5))


def default_heads(d_model: int) -> int:
    """Number of attention heads for width ``d_model`` (rule 3 above)."""
    target = 16 if d_model < 256 else 64 if d_model < 640 else 128
    want = max(1, round(d_model / target))
    # nearest divisor of d_model that leaves an even head dim (RoPE rotates pairs)
    ok = [h for h in range(1, d_model + 1) if d_model % h == 0 and (d_model // h) % 2 == 0]
    if not ok:
        raise RaysweepError(
            f"size: d_model={d_model} has no even head dimension; use an even d_model"
        )
    return min(ok, key=lambda h: (abs(h - want), h))


def dial_layers(d_model: int) -> int:
    """Depth for dial width ``d_model`` (rule 2 above)."""
    return max(2, round(d_model / 64))


def resolve_size(size: str | int, vocab: int = 256) -> tuple[int, int, int]:
    """Resolve a size to ``(n_layers, d_model, n_heads)``.

    ``vocab`` does not change the shape of the blocks (it only sizes the untied
    embedding and head, which N excludes); it is accepted so callers can pass
    what they know and so a future dial could target a total count.
    """
    if vocab < 2:
        raise RaysweepError(f"vocab: must be >= 2, got {vocab}")
    key = str(size).strip()
    for name, (n_layers, n_heads, d_model, _) in PRESETS.items():
        if key.upper() == name:
            return n_layers, d_model, n_heads
    m = _LXD.match(key.lower())
    if m:
        n_layers, d_model = int(m.group(1)), int(m.group(2))
        if not (1 <= n_layers <= MAX_LAYERS and 2 <= d_model <= MAX_WIDTH):
            raise RaysweepError(f"size: {size!r} needs 1 <= n_layers <= {MAX_LAYERS} and "
                                f"2 <= d_model <= {MAX_WIDTH}")
        return n_layers, d_model, default_heads(d_model)
    m = _DIAL.match(key.lower())
    if m:
        d_model = int(m.group(1))
        if d_model < 16 or d_model % 16 or d_model > MAX_WIDTH:
            raise RaysweepError(f"size: dial width {d_model} must be a multiple of 16 in "
                                f"[16, {MAX_WIDTH}]")
        return dial_layers(d_model), d_model, default_heads(d_model)
    raise RaysweepError(f"size: unknown size {size!r}; expected {SIZE_FORMS}")


def group_counts(n_layers: int, d_model: int, vocab: int) -> dict[str, int]:
    """Parameter counts by group (the convention of ``GPT.param_counts`` in train.model)."""
    h = mlp_hidden(d_model)
    groups = {
        "embedding": vocab * d_model,
        "attention": n_layers * 4 * d_model * d_model,
        "mlp": n_layers * 3 * d_model * h,
        "norm": n_layers * 2 * d_model + d_model,
        "head": vocab * d_model,
    }
    groups["non_embedding"] = groups["attention"] + groups["mlp"] + groups["norm"]
    groups["total"] = groups["non_embedding"] + groups["embedding"] + groups["head"]
    return groups


def count_params(n_layers: int, d_model: int, n_heads: int, vocab: int = 256) -> int:
    """N: non-embedding parameters (everything but the input embedding and output head).

    ``n_heads`` does not change the count (q, k, v, o are d_model x d_model
    whatever the split); it is validated so an impossible shape fails here.
    """
    if n_heads < 1 or d_model % n_heads:
        raise RaysweepError(f"n_heads: {n_heads} must divide d_model={d_model}")
    return group_counts(n_layers, d_model, vocab)["non_embedding"]


def default_lr(size: str | int | None = None, d_model: int | None = None) -> float:
    """Peak learning rate: the paper's table for presets, else 3e-3 * sqrt(128 / d_model)."""
    if size is not None:
        key = str(size).strip().upper()
        if key in PRESETS:
            return PRESETS[key][3]
        if d_model is None:
            d_model = resolve_size(size)[1]
    if d_model is None:
        raise RaysweepError("default_lr: give a size or d_model")
    return 3e-3 * math.sqrt(128 / d_model)
