"""Test-wide settings.

TRITON_INTERPRET must be set before any Triton kernel module is imported, so
the kernels run (slowly, on CPU) where there is no GPU. Ray needs no auth and
no dashboard in tests.
"""

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# `raysweep run` moves its process into a network namespace of its own; tests call it
# in-process, so they opt out (tests/sweep/test_sweep_isolation.py checks it in a subprocess)
os.environ.setdefault("RAYSWEEP_NO_NETNS", "1")
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # torch is a hard dependency; this only keeps collection alive
    os.environ.setdefault("TRITON_INTERPRET", "1")
