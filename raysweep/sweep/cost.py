"""Cost model: FLOPs, GPU packing and estimated device-hours of a trial.

FLOPs of a trial are ``6 N D`` (N non-embedding parameters, D tokens: forward
and backward, Kaplan et al.). Device-hours need a throughput model; ours is one
small function, :func:`tokens_per_s`, interpolating (log-log, clamped at the
ends) the figures measured for this project:

- CPU (dense fp32, seq 128, batch 8, 1 thread): raysweep's own ``train()``
  measured 108k / 72k / 44k / 23k tok/s at N = 23.7k / 55.5k / 151k / 390k alone
  (docs/benchmarks.md, "Training throughput (CPU)"); two 1-thread trials share a
  2-core machine at about 0.8x each (docs/cpu-scale.md: two processes give 1.6-1.9x
  one), so we plan with 0.8x of those figures.
- GPU (one H100, bf16 autocast, eager ``train()``, batch 16 x 512), corrected
  against the first real gpu-mini sitting (2026-11-23, docs/benchmarks.md): the
  7x256 (6.0M) dense trial packed 4 to a GPU ran at 0.36M tok/s, i.e. 0.51M tok/s
  "alone-equivalent" (0.36 x 4 / 2.82), and raysweep's own d256 (3.4M) / d384
  (10.6M) ran at 0.85M / 0.51M alone. Small models are launch-bound, so the curve
  is flat from 6M to 30M. Above, docs/gpu.md's torch.compile figures (30.5M 0.79M,
  85M 0.44M, 154M 0.31M) scaled by the eager/compile ratio measured at 3.4M (0.64).

Compressed training costs more per step. CPU (docs/cpu-scale.md; raysweep's layers at
2x80: W+A int4 1.2x, int4 weights 1.08x, sparse50 weights 1.16x): we divide by
1.25 (activations compressed) and 1.1 (weights only). GPU at 3.4M (launch-bound,
measured with train()): W+A int4 runs at 0.39x dense, int4 weights at 0.74x,
sparse50 at 0.66x: we divide by 2.6 and 1.45.

Packing (docs/gpu.md, Ray Tune fractional GPUs): k trials of a small model on one
GPU give an aggregate speed-up g(k) over one alone (3.4M: 1.86x at k=2, 2.82x
at k=4; 10.6M: 2.25x at k=4). A trial holding a GPU share 1/k runs at
``single * g / k`` tokens/s and occupies 1/k of a device, so its device-hours
are ``D / (single * g) / 3600``. ``gpu: auto`` gives 1/4 GPU to N <= 12M
(measured), 1/2 to N <= 40M (extrapolated: gain assumed 1.5x) and a whole GPU
above. CPU-only trials count CPU-core-hours (wall time x CPUs).
"""

from __future__ import annotations

import bisect
import math

from raysweep.results import is_dense

CPU_POINTS = ((23_712, 0.8 * 108e3), (55_536, 0.8 * 72e3), (151_440, 0.8 * 44e3),
              (389_760, 0.8 * 23e3))
GPU_POINTS = ((3.41e6, 0.85e6), (5.97e6, 0.51e6), (10.6e6, 0.51e6), (30.5e6, 0.50e6),
              (85e6, 0.28e6), (154e6, 0.20e6))
# per-step slow-down of compressed training: (activations compressed, weights only)
SLOWDOWN = {"cpu": (1.25, 1.1), "gpu": (2.6, 1.45)}


def _interp_loglog(points, n: float) -> float:
    xs = [math.log(p[0]) for p in points]
    ys = [math.log(p[1]) for p in points]
    x = math.log(max(n, 1.0))
    if x <= xs[0]:
        return math.exp(ys[0])
    i = bisect.bisect_left(xs, x)
    if i >= len(xs):  # extrapolate with the last segment's slope (cost grows with N)
        i = len(xs) - 1
    t = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
    return math.exp(ys[i - 1] + t * (ys[i] - ys[i - 1]))


def tokens_per_s(n_params: float, device: str = "cpu", weights: str = "bf16",
                 activations: str = "bf16") -> float:
    """Estimated training tokens/s of one trial alone on one device (see module doc)."""
    base = _interp_loglog(GPU_POINTS if device == "gpu" else CPU_POINTS, n_params)
    w, a = is_dense(weights), is_dense(activations)
    acts, weights_only = SLOWDOWN["gpu" if device == "gpu" else "cpu"]
    slow = 1.0 if (w and a) else (weights_only if a else acts)
    return base / slow


def gpu_fraction(n_params: float) -> float:
    """The GPU share ``gpu: auto`` gives a trial of N parameters (about 4 tiny trials a GPU)."""
    if n_params <= 12e6:
        return 0.25
    if n_params <= 40e6:
        return 0.5
    return 1.0


def packing_gain(k: float, n_params: float) -> float:
    """Aggregate speed-up of k trials sharing one GPU (docs/gpu.md's table; 1 for k <= 1)."""
    if k <= 1:
        return 1.0
    small = n_params <= 5e6
    if k <= 2:
        return 1.86 if small else 1.5
    if k <= 4:
        return 2.82 if small else 2.25
    return 2.95 if small else 2.26


def trial_gpu(gpu: float | str, n_params: float) -> float:
    """The trial's GPU request: a fixed share, or the auto rule."""
    return gpu_fraction(n_params) if gpu == "auto" else float(gpu)


def device_hours(n_params: float, tokens: float, weights: str, activations: str,
                 gpu: float | str, cpu: float) -> float:
    """Estimated device-hours of one trial: GPU-hours if it uses a GPU, else CPU-core-hours."""
    g = trial_gpu(gpu, n_params)
    if g > 0:
        share = min(g, 1.0)
        single = tokens_per_s(n_params, "gpu", weights, activations)
        gain = packing_gain(1.0 / share, n_params) if share < 1 else 1.0
        # g > 1 GPUs: assume data-parallel scaling, so device-hours do not change
        return tokens / (single * gain) / 3600.0
    return tokens / tokens_per_s(n_params, "cpu", weights, activations) / 3600.0 * max(cpu, 1.0)
