"""Training throughput benchmarks; prints one JSON object on its last line.

CPU (always, unless ``--gpu-only``):

- ``trainable_vs_plain``: tokens/s of :func:`raysweep.train.loop.train` on a dense
  tiny model over tokens/s of a plain PyTorch loop (same model, same batches,
  AdamW + clipping, no evals, no framework) -- the cost of the trainable.
- ``w4a4_vs_dense``: step time (forward, backward, AdamW) of the same tiny model
  with every block linear a W4A4 ``CompressedLinear`` over the dense step time.
- ``cpu_compile_vs_eager``: per size and model (``"2x32/dense"``, ``"2x128/w4a4"``,
  ...; batch 8 x 128) the step time of
  ``torch.compile(model)`` (inductor, fullgraph) over eager's, after warm-up
  (> 1: compiled is slower); ``cpu_compile_warmup_s``: the first compiled
  step (compilation); ``cpu_compile_ms``: the times. ``cpu_compile_faster``:
  per case, whether compiled won (a slower compiled path is reported as such;
  the trainer's default is whichever wins: docs/decisions.md).

GPU (when CUDA is present), per ``d_model`` in (1024, 2048), T = 16384 tokens,
one square linear layer, forward + backward (grads of x and W), bf16 autocast
with fp32 master weights (the training setup); medians of
``triton.testing.do_bench``:

- ``gpu_w4a4_vs_dense_bf16``: W4A4 CompressedLinear (Triton) / dense.
- ``gpu_triton_vs_torch``: W4A4 CompressedLinear, torch backend / Triton backend
  (the speed-up of the kernels).
- ``gpu_compile_vs_triton``: a functional torch reference of the same fake-quant
  linear under ``torch.compile`` / the Triton layer (> 1: Triton is faster).
- ``gpu_fp8_w4a4_vs_dense_bf16``: the Triton layer with ``fp8_forward=True``
  (forward GEMM on float8 codes) / dense.
- ``gpu_w4a4_vs_pure_bf16_weights``: Triton layer / a dense layer holding bf16
  weights (no per-step weight cast: a stricter baseline than autocast).
- ``gpu_graph_w4a4_vs_dense_bf16``: the Triton layer's forward+backward captured
  as CUDA graphs (``torch.cuda.make_graphed_callables``: no per-launch host
  cost, the layer's bottleneck in eager mode) / dense (eager autocast); the
  dense layer captured the same way is ``gpu_ms[d]["dense_autocast_graph"]``.
- ``gpu_compiled_w4a4_vs_dense_bf16``: the Triton layer under ``torch.compile``
  (fullgraph: its custom operators) / dense; ``gpu_cudagraph_compiled_w4a4_vs_dense_bf16``
  the same with ``mode="reduce-overhead"`` (CUDA graphs); ``gpu_compiled_vs_ref_compile``:
  ``torch.compile`` of the torch reference / the compiled layer (> 1: ours is faster,
  the peer to beat).
- ``gpu_ms``: every time in milliseconds.

Usage: ``python bench/train.py [--gpu-only] [--cpu-only] [--quick] [--no-compile]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

CPU_SIZE = (2, 128)          # n_layers x d_model of the CPU tiny model
CPU_BATCH = (8, 128)         # batch x seq


def _median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --------------------------------------------------------------------------- CPU


def _tiny_model(weights: str = "bf16", activations: str = "bf16", size=CPU_SIZE):
    from raysweep.train.model import GPT, is_compressible

    torch.manual_seed(0)
    n_layers, d = size
    model = GPT(n_layers, d, max(1, d // 32), 256)
    if weights != "bf16" or activations != "bf16":
        from raysweep.train.layers import convert_linears

        convert_linears(model, weights, activations, filter_fn=is_compressible)
    return model


def _step_fn(model, fwd=None):
    """One training step (forward, backward, clip, AdamW) on fixed random tokens.

    ``fwd``: what computes the loss (the model itself, or its compiled version)."""
    fwd = model if fwd is None else fwd
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    bsz, seq = CPU_BATCH
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (bsz, seq), generator=g)
    y = torch.randint(0, 256, (bsz, seq), generator=g)

    def step():
        loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def w4a4_vs_dense(repeats: int) -> dict:
    """Median step time of the tiny model, W4A4 over dense, interleaved rounds."""
    dense, w4a4 = _step_fn(_tiny_model()), _step_fn(_tiny_model("int4", "int4"))
    t_d, t_q = [], []
    for _ in range(3):  # interleave so drift on a shared machine hits both
        t_d.append(_median_time(dense, repeats))
        t_q.append(_median_time(w4a4, repeats))
    d, q = min(t_d), min(t_q)
    return {"w4a4_vs_dense": q / d, "cpu_dense_step_ms": 1e3 * d, "cpu_w4a4_step_ms": 1e3 * q,
            "cpu_model": f"{CPU_SIZE[0]}x{CPU_SIZE[1]}", "cpu_batch": list(CPU_BATCH)}


COMPILE_SIZES = ((2, 32), (2, 128))  # the sweep's smallest (d32) and the CPU bench model


def compile_vs_eager(repeats: int) -> dict:
    """Tiny-model training step, ``torch.compile`` (inductor, fullgraph) against eager.

    Per size of :data:`COMPILE_SIZES` and model (dense, W4A4); keys ``"2x32/dense"``.
    Each model is compiled once; its first step (the compile) is timed on its own
    and left out of the medians, which interleave eager and compiled rounds.
    """
    ratios, times, warm, faster = {}, {}, {}, {}
    cases = [(f"{n}x{d}/{name}", specs, (n, d)) for n, d in COMPILE_SIZES
             for name, specs in (("dense", ("bf16", "bf16")), ("w4a4", ("int4", "int4")))]
    for name, specs, size in cases:
        model = _tiny_model(*specs, size=size)
        eager = _step_fn(model)
        torch._dynamo.reset()
        compiled_model = _tiny_model(*specs, size=size)
        compiled = _step_fn(compiled_model, torch.compile(compiled_model, fullgraph=True))
        t0 = time.perf_counter()
        compiled()
        warm[name] = time.perf_counter() - t0
        t_e, t_c = [], []
        for _ in range(3):
            t_e.append(_median_time(eager, repeats))
            t_c.append(_median_time(compiled, repeats))
        e, c = min(t_e), min(t_c)
        ratios[name], faster[name] = c / e, c < e
        times[name] = {"eager": 1e3 * e, "compiled": 1e3 * c}
    return {"cpu_compile_vs_eager": ratios, "cpu_compile_ms": times,
            "cpu_compile_warmup_s": warm, "cpu_compile_faster": faster}


def _plain_tokens_per_s(steps: int) -> float:
    """A plain loop over the same model and batches as raysweep.train.loop (no evals)."""
    from raysweep.train.data import load_corpus, train_batch

    corpus = load_corpus("stdlib")
    model = _tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    bsz, seq = CPU_BATCH
    for step in range(2):  # warm-up like the trainable's first steps
        x, y = train_batch(corpus, step, 0, bsz, seq)
        model(x, y).backward()
        opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    for step in range(steps):
        x, y = train_batch(corpus, step, 0, bsz, seq)
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * bsz * seq / (time.perf_counter() - t0)


def trainable_vs_plain(steps: int) -> dict:
    try:
        from raysweep.train.loop import train
    except ImportError as e:  # pragma: no cover - depends on the training module
        return {"trainable_vs_plain": None, "trainable_vs_plain_reason": f"no train(): {e}"}
    bsz, seq = CPU_BATCH
    cfg = {"size": f"{CPU_SIZE[0]}x{CPU_SIZE[1]}", "tokens": steps * bsz * seq,
           "batch_size": bsz, "seq_len": seq, "device": "cpu", "threads": 1,
           "eval_every": steps, "eval_batches": 1, "final_eval_batches": 1}
    ours, plain = [], []
    for _ in range(3):  # interleaved; best of each (least disturbed by other processes)
        ours.append(train(cfg)["tokens_per_s"])
        plain.append(_plain_tokens_per_s(steps))
    return {"trainable_vs_plain": max(ours) / max(plain), "cpu_trainable_tokens_per_s": max(ours),
            "cpu_plain_tokens_per_s": max(plain)}


# --------------------------------------------------------------------------- GPU


class _QuestRef(torch.autograd.Function):
    """Functional torch reference: W4A4 fake-quant linear with QuEST trust masks."""

    @staticmethod
    def forward(ctx, x, w):
        from raysweep.kernels.reference import int_quant_ref

        xq, mx = int_quant_ref(x, 4, 2.51393)
        wq, mw = int_quant_ref(w, 4, 2.51393)
        ctx.save_for_backward(xq, wq, mx, mw)
        return xq @ wq.to(xq.dtype).t()

    @staticmethod
    def backward(ctx, g):
        xq, wq, mx, mw = ctx.saved_tensors
        gx = (g @ wq.to(g.dtype)) * mx
        gw = (g.reshape(-1, g.shape[-1]).t() @ xq.reshape(-1, xq.shape[-1])).float() * mw
        return gx, gw


def _gpu_case(d: int, tokens: int, quick: bool) -> dict:
    import triton

    from raysweep.train.layers import CompressedLinear

    dev = "cuda"
    x0 = torch.randn(tokens, d, device=dev, dtype=torch.bfloat16)
    g = torch.randn(tokens, d, device=dev, dtype=torch.bfloat16)
    torch.manual_seed(0)
    dense = torch.nn.Linear(d, d, bias=False, device=dev)
    dense_bf16 = torch.nn.Linear(d, d, bias=False, device=dev, dtype=torch.bfloat16)
    tri = CompressedLinear.from_linear(dense, "int4", "int4", backend="triton")
    ref = CompressedLinear.from_linear(dense, "int4", "int4", backend="torch")
    fp8 = CompressedLinear.from_linear(dense, "int4", "int4", backend="triton", fp8_forward=True)
    w = dense.weight
    compiled = torch.compile(lambda x, w: _QuestRef.apply(x, w))

    def run(f, autocast=True):
        def step():
            x = x0.detach().requires_grad_()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                y = f(x)
            y.backward(g)
        return step

    a4 = CompressedLinear.from_linear(dense, "bf16", "int4", backend="triton")
    w4 = CompressedLinear.from_linear(dense, "int4", "bf16", backend="triton")
    import raysweep.train.layers as layers_mod

    def where_variant(x):
        layers_mod.MASK_KERNEL = False
        try:
            return tri(x)
        finally:
            layers_mod.MASK_KERNEL = True

    def graphed(mod):
        """``mod`` forward+backward captured as CUDA graphs (no per-kernel launch cost).

        Autocast with ``cache_enabled=False`` at capture and replay, as
        make_graphed_callables requires; built lazily so a failure is one case's."""
        box = {}

        def step():
            if "g" not in box:
                xs = x0.detach().requires_grad_()
                with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                    box["g"] = torch.cuda.make_graphed_callables(mod, (xs,))
            x = x0.detach().requires_grad_()
            with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                y = box["g"](x)
            y.backward(g)
        return step

    tri_g = CompressedLinear.from_linear(dense, "int4", "int4", backend="triton")
    dense_g = torch.nn.Linear(d, d, bias=False, device=dev)
    tri_c = torch.compile(CompressedLinear.from_linear(dense, "int4", "int4", backend="triton"),
                          fullgraph=True)
    tri_cg = torch.compile(CompressedLinear.from_linear(dense, "int4", "int4",
                                                        backend="triton"),
                           mode="reduce-overhead", fullgraph=True)
    dense_c = torch.compile(dense, fullgraph=True)
    cases = {
        "dense_autocast": run(dense),
        "dense_autocast_graph": graphed(dense_g),
        "w4a4_triton_graph": graphed(tri_g),
        "w4a4_triton_compile": run(tri_c),
        "w4a4_triton_compile_graph": run(tri_cg),
        "dense_autocast_compile": run(dense_c),
        "a4_only_triton": run(a4),
        "w4_only_triton": run(w4),
        "w4a4_triton_where": run(where_variant),
        "dense_bf16": run(dense_bf16, autocast=False),
        "w4a4_triton": run(tri),
        "w4a4_triton_fp8": run(fp8),
        "w4a4_torch": run(ref),
        "w4a4_ref_eager": run(lambda x: _QuestRef.apply(x, w), autocast=False),
        "w4a4_ref_compile": run(lambda x: compiled(x, w), autocast=False),
    }
    rep = 50 if quick else 200
    out = {}
    for name, fn in cases.items():
        try:
            fn()
            torch.cuda.synchronize()
            out[name] = triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median",
                                                grad_to_none=[dense.weight, dense_bf16.weight,
                                                              dense_g.weight, tri_g.weight])
        except Exception as e:  # report and go on: one failing variant must not hide the rest
            out[name] = None
            print(f"gpu case {name} d={d} failed: {type(e).__name__}: {e}", file=sys.stderr)
    issue = {}
    for name in ("dense_autocast", "w4a4_triton", "w4a4_triton_fp8", "a4_only_triton"):
        walls = []
        for _ in range(20):  # host time to issue one step, no sync: ~GPU time if a step syncs
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            cases[name]()
            walls.append(1e3 * (time.perf_counter() - t0))
        issue[name] = statistics.median(walls)
    out["host_issue_ms"] = issue
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        y_t, y_r, y_8 = tri(x0), ref(x0), fp8(x0)
        out["triton_equals_torch_forward"] = bool(torch.equal(y_t, y_r))
        out["fp8_rel_err_vs_bf16_path"] = float((y_8 - y_t).float().norm() / y_t.float().norm())
    return out


def _kernel_bandwidth(tokens: int, d: int) -> dict:
    """GB/s of the fused quantizer (2 B in, 2 B x_hat + 1 B mask out per bf16 element),
    the masked backward (2 + 1 in, 2 out) and a plain copy (the ceiling)."""
    import triton
    from raysweep.kernels.quant import int_quant_triton, masked_grad_triton

    x = torch.randn(tokens, d, device="cuda", dtype=torch.bfloat16)
    m = torch.rand(tokens, d, device="cuda") > 0.01
    n = x.numel()
    t_q = triton.testing.do_bench(lambda: int_quant_triton(x, 4, 2.51393), return_mode="median")
    t_c = triton.testing.do_bench(lambda: int_quant_triton(x, 4, 2.51393, codes=True),
                                  return_mode="median")
    t_g = triton.testing.do_bench(lambda: masked_grad_triton(x, m), return_mode="median")
    t_w = triton.testing.do_bench(lambda: torch.where(m, x, torch.zeros((), dtype=x.dtype,
                                                                        device=x.device)),
                                  return_mode="median")
    t_copy = triton.testing.do_bench(lambda: x.clone(), return_mode="median")
    small = torch.randn(16, 64, device="cuda", dtype=torch.bfloat16)
    host = {}
    for name, f in (("triton_quant", lambda: int_quant_triton(small, 4, 2.51393)),
                    ("torch_mul", lambda: small * 2.0)):
        f()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(200):
            f()
        host[name] = 1e6 * (time.perf_counter() - t0) / 200
        torch.cuda.synchronize()
    return {"host_launch_us": host, "quant_ms": t_q, "quant_gbps": 5 * n / t_q / 1e6,
            "quant_codes_gbps": 6 * n / t_c / 1e6, "masked_grad_gbps": 5 * n / t_g / 1e6,
            "where_gbps": 5 * n / t_w / 1e6, "copy_gbps": 4 * n / t_copy / 1e6}


def _profile(d: int, tokens: int) -> None:
    """Print the top host/device ops of a few W4A4 Triton steps (stderr)."""
    from torch.profiler import ProfilerActivity, profile

    from raysweep.train.layers import CompressedLinear

    lin = torch.nn.Linear(d, d, bias=False, device="cuda")
    tri = CompressedLinear.from_linear(lin, "int4", "int4", backend="triton")
    x0 = torch.randn(tokens, d, device="cuda", dtype=torch.bfloat16)

    def step():
        x = x0.detach().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = tri(x)
        y.backward(torch.ones_like(y))

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    ka = prof.key_averages()
    print(ka.table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=50),
          file=sys.stderr)
    print(ka.table(sort_by="self_cuda_time_total", row_limit=10, max_name_column_width=50),
          file=sys.stderr)


def gpu(quick: bool) -> dict:
    tokens = 16384
    try:
        _profile(2048, tokens)
    except Exception as e:
        print(f"profile failed: {type(e).__name__}: {e}", file=sys.stderr)
    times, w4, vs_torch, vs_compile, w4_fp8, w4_pure, w4_graph = {}, {}, {}, {}, {}, {}, {}
    w4_comp, w4_comp_graph, comp_vs_ref = {}, {}, {}
    for d in (1024, 2048):
        t = _gpu_case(d, tokens, quick)
        times[str(d)] = t
        base = t["dense_autocast"]
        if t["w4a4_triton"] and base:
            w4[str(d)] = t["w4a4_triton"] / base
        if t["w4a4_triton_fp8"] and base:
            w4_fp8[str(d)] = t["w4a4_triton_fp8"] / base
        if t["w4a4_triton"] and t["dense_bf16"]:
            w4_pure[str(d)] = t["w4a4_triton"] / t["dense_bf16"]
        if t["w4a4_triton"] and t["w4a4_torch"]:
            vs_torch[str(d)] = t["w4a4_torch"] / t["w4a4_triton"]
        if t["w4a4_triton"] and t["w4a4_ref_compile"]:
            vs_compile[str(d)] = t["w4a4_ref_compile"] / t["w4a4_triton"]
        if t["w4a4_triton_graph"] and base:
            w4_graph[str(d)] = t["w4a4_triton_graph"] / base
        if t["w4a4_triton_compile"] and base:
            w4_comp[str(d)] = t["w4a4_triton_compile"] / base
        if t["w4a4_triton_compile_graph"] and base:
            w4_comp_graph[str(d)] = t["w4a4_triton_compile_graph"] / base
        best = min(v for v in (t["w4a4_triton_compile"], t["w4a4_triton_compile_graph"]) if v) \
            if (t["w4a4_triton_compile"] or t["w4a4_triton_compile_graph"]) else None
        if best and t["w4a4_ref_compile"]:
            comp_vs_ref[str(d)] = t["w4a4_ref_compile"] / best
    return {"gpu_w4a4_vs_dense_bf16": w4, "gpu_graph_w4a4_vs_dense_bf16": w4_graph,
            "gpu_triton_vs_torch": vs_torch,
            "gpu_compile_vs_triton": vs_compile, "gpu_fp8_w4a4_vs_dense_bf16": w4_fp8,
            "gpu_w4a4_vs_pure_bf16_weights": w4_pure, "gpu_ms": times,
            "gpu_compiled_w4a4_vs_dense_bf16": w4_comp,
            "gpu_cudagraph_compiled_w4a4_vs_dense_bf16": w4_comp_graph,
            "gpu_compiled_vs_ref_compile": comp_vs_ref,
            "gpu_kernels_2048": _kernel_bandwidth(tokens, 2048), "gpu_tokens": tokens,
            "gpu_device": torch.cuda.get_device_name()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu-only", action="store_true")
    p.add_argument("--cpu-only", action="store_true")
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--no-compile", action="store_true",
                   help="skip the CPU compiled-vs-eager comparison (two inductor builds)")
    args = p.parse_args(argv)
    result: dict = {}
    if not args.gpu_only:
        # One thread: on a shared 2-core machine, OpenMP threads spinning against other
        # processes made single steps 40x slower in a trial run; ratios are what we report.
        torch.set_num_threads(1)
        steps = 10 if args.quick else 30
        result.update(trainable_vs_plain(steps))
        result.update(w4a4_vs_dense(5 if args.quick else 10))
        if not args.no_compile:
            result.update(compile_vs_eager(5 if args.quick else 10))
    if not args.cpu_only and torch.cuda.is_available():
        result.update(gpu(args.quick))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
