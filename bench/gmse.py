"""Benchmark of raysweep.formats: GMSE cost and project() throughput.

Prints one JSON object (last line):

- ``exact_ms``: per exact spec, ms to parse and compute GMSE from a cold cache
  (optimal scale / Lloyd-Max included); ``exact_ms_max`` the slowest.
- ``mc_s``: per Monte Carlo spec, seconds to 1e-3 relative standard error
  (disk cache off), with the reached ``rel_se``; ``mc_s_max`` the slowest;
  ``mc_hardware_s_max``: the slowest of the block formats and @sr/@q/@o specs
  (``MC_HARDWARE``, issue 14's target: under 1 s).
- ``project_int4_vs_round_clamp``: median time of ``parse("int4").project(x)``
  on a 4096x4096 float32 tensor over the median time of one plain
  ``torch.round(x).clamp_(-8, 7)`` pass (targets: exact < 50 ms, MC < 2 s,
  ratio <= 3). Runs on one thread, timing rounds interleaved.

Usage: ``python bench/gmse.py [--quick]`` (--quick skips the slow MC specs).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

os.environ["RAYSWEEP_NO_CACHE"] = "1"

EXACT = ["int1", "int2", "int3", "int4", "int8", "fp4", "fp8", "e3m2", "e5m2", "lloyd2",
         "lloyd4", "lloyd8", "ternary", "sparse50", "noise2", "intz4", "intz8"]
# the formats people train in (issue 14): block formats and the @sr / @q / @o options
# (@rh{B} has its inner's GMSE: no Monte Carlo of its own)
MC_HARDWARE = ["mxfp4", "mxfp6", "mxfp8", "mxint8", "mxfp4@q", "nvfp4", "nvfp4@46",
               "nvfp4@2d", "int4@sr", "intz4@absmax@g32", "fp4@sr", "mxfp4@sr", "mxfp4@q@sr",
               "mxint8@sr", "nvfp4@sr", "nvfp4@46@sr", "int4@o1", "nvfp4@o1"]
MC = ["int4@g32", "int2@absmax@g32", "int4@absmax", "2:4", "sparse50+int4", "vq2x8",
      "vq4x8"] + MC_HARDWARE
MC_QUICK = ["int4@g32", "2:4", "mxfp4", "nvfp4@sr"]


def _interleaved_medians(fns, reps: int = 7) -> list[float]:
    """Median time of each fn, rounds interleaved (robust to a shared machine's load)."""
    times = [[] for _ in fns]
    for f in fns:
        f()
    for _ in range(reps):
        for i, f in enumerate(fns):
            t = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def main(quick: bool = False) -> dict:
    import torch
    from raysweep.formats import parse
    from raysweep.formats.parse import parse as cached_parse

    torch.set_num_threads(1)  # one thread: robust to other jobs on a shared machine

    exact = {}
    for s in EXACT:
        cached_parse.cache_clear()
        t = time.perf_counter()
        g = parse(s).gmse()
        exact[s] = round((time.perf_counter() - t) * 1e3, 2)
        assert g.method == "exact", s
    mc = {}
    for s in MC_QUICK if quick else MC:
        rep = parse(s)
        if rep.family == "vq":
            rep.project(torch.randn(1, 64))  # codebook build is not part of the MC time
        t = time.perf_counter()
        g = rep.gmse()
        mc[s] = {"s": round(time.perf_counter() - t, 3), "rel_se": g.stderr / g.value}

    x = torch.randn(4096, 4096, generator=torch.Generator().manual_seed(0))
    rep = parse("int4")
    t_proj, t_base = _interleaved_medians([lambda: rep.project(x),
                                           lambda: torch.round(x).clamp_(-8, 7)])
    return {
        "date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads(),
        "exact_ms_max": max(exact.values()), "exact_ms": exact,
        "mc_s_max": max(v["s"] for v in mc.values()), "mc_s": mc,
        "mc_hardware_s_max": max((v["s"] for k, v in mc.items() if k in MC_HARDWARE),
                                 default=None),
        "project_int4_ms": round(t_proj * 1e3, 1), "round_clamp_ms": round(t_base * 1e3, 1),
        "project_int4_vs_round_clamp": round(t_proj / t_base, 2),
    }


if __name__ == "__main__":
    print(json.dumps(main(quick="--quick" in sys.argv)))
