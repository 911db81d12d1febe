"""torch.compile takes a compressed model whole: no graph break, eager's numbers.

Every format family the layer supports (int, fp, the block formats, lloyd, top-k
sparsity, N:M, composites, Hadamard) goes through the custom operators
``raysweep::project`` / ``raysweep::project_backward`` (raysweep.train.layers) and
the Triton kernels through ``raysweep::int_quant``, ``masked_grad``, ``topk_mask``
and ``nm_mask`` (raysweep.kernels). Tolerances: ``aot_eager`` runs eager's aten ops
in eager's order, so loss and gradients are compared bit for bit; inductor fuses
the model's own elementwise ops and reorders fp32 sums (RMSNorm, softmax, the
matmul epilogues), so its gradients are compared by relative norm (1e-4: measured
~4e-7; a projection's rounding decision flipped by a 1-ulp difference of its input
would show as a local jump, which the norm keeps from failing the test).
"""

from __future__ import annotations

import pytest
import torch

from raysweep.train.layers import CompressedLinear
from raysweep.train.model import GPT

FAMILIES = ["int4", "fp4", "mxfp4", "nvfp4", "lloyd4", "sparse50", "2:4", "sparse50+int4",
            "int4@h"]
# (weights, activations, estimator) of every block linear of the mixed model, in order
MIXED = [(s, s, "auto") for s in FAMILIES] + [
    ("int4", "bf16", "ste"), ("bf16", "sparse50", "rbbm:0.5"), ("int3", "int3", "trust")]
VOCAB, D = 64, 32
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # Triton runs interpreted on a CPU


def _model(layers: list[tuple[str, str, str]], backend: str = "auto", device: str = "cpu"):
    """A tiny GPT whose block linears take the (w, a, estimator) of ``layers`` in turn."""
    n_layers = -(-len(layers) // 4)  # four block linears per layer
    torch.manual_seed(0)
    model = GPT(n_layers, D, 1, VOCAB).to(device)
    i = 0
    for name, mod in list(model.named_modules()):
        for cname, sub in list(mod.named_children()):
            if type(sub) is torch.nn.Linear and name.startswith("blocks."):
                w, a, est = layers[i % len(layers)]
                i += 1
                setattr(mod, cname, CompressedLinear.from_linear(sub, w, a, est, backend))
    return model


def _batch(device: str = "cpu"):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, VOCAB, (2, 16), generator=g)
    y = torch.randint(0, VOCAB, (2, 16), generator=g)
    return x.to(device), y.to(device)


def _loss_and_grads(model, fwd, x, y):
    for p in model.parameters():
        p.grad = None
    loss = fwd(x, y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def _graph_breaks(model, x, y) -> tuple[int, int, list]:
    torch._dynamo.reset()
    ex = torch._dynamo.explain(model)(x, y)
    return ex.graph_break_count, ex.graph_count, [str(b.reason)[:200] for b in ex.break_reasons]


@pytest.mark.parametrize("spec", FAMILIES)
def test_every_family_traces_without_a_graph_break(spec):
    x, y = _batch()
    breaks, graphs, why = _graph_breaks(_model([(spec, spec, "auto")]), x, y)
    assert (breaks, graphs) == (0, 1), why


@pytest.mark.parametrize("w,a,est", [("sparse50", "sparse50", "rbbm:0.5"),
                                     ("int4", "bf16", "ste"), ("bf16", "2:4", "mask")])
def test_estimators_and_identity_parts_trace_without_a_graph_break(w, a, est):
    x, y = _batch()
    breaks, graphs, why = _graph_breaks(_model([(w, a, est)]), x, y)
    assert (breaks, graphs) == (0, 1), why


def _check_bit_exact(model, backend: str = "aot_eager"):
    x, y = _batch(next(model.parameters()).device.type)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):  # the compiled model is reused after the weights change
        loss_e, grads_e = _loss_and_grads(model, model, x, y)
        loss_c, grads_c = _loss_and_grads(model, compiled, x, y)
        assert torch.equal(loss_c, loss_e)
        for name_p, ge, gc in zip(model.named_parameters(), grads_e, grads_c, strict=True):
            assert torch.equal(gc, ge), name_p[0]
        opt.step()


def test_compiled_mixed_model_equals_eager_bit_for_bit():
    _check_bit_exact(_model(MIXED, backend="torch"))


def test_compiled_triton_backend_equals_eager_bit_for_bit():
    # the Triton kernels (interpreted on CPU) inside the compiled graph
    _check_bit_exact(_model([("int4", "int4", "auto"), ("sparse50", "sparse50", "auto"),
                             ("2:4", "2:4", "auto"), ("int4@h", "int4", "auto")],
                            backend="triton", device=DEV))


def _assert_inductor_matches_eager(model, x, y):
    """Inductor reorders fp32 sums: loss within rtol 1e-5, gradients within 1e-4 (norm)."""
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)  # inductor: generated code
    loss_e, grads_e = _loss_and_grads(model, model, x, y)
    loss_c, grads_c = _loss_and_grads(model, compiled, x, y)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=0.0)
    for (name, _), ge, gc in zip(model.named_parameters(), grads_e, grads_c, strict=True):
        rel = float((gc - ge).norm() / ge.norm().clamp_min(1e-30))
        assert rel < 1e-4, (name, rel)


@pytest.mark.slow
def test_inductor_mixed_model_matches_eager():
    model = _model(MIXED, backend="torch")
    x, y = _batch()
    _assert_inductor_matches_eager(model, x, y)


def test_a_layer_gradient_is_its_estimator():
    # the operator's backward: trust mask of int4, straight through for ste
    torch.manual_seed(0)
    x = torch.randn(8, 32, requires_grad=True)
    lin = torch.nn.Linear(32, 16, bias=False)
    g = torch.randn(8, 16)
    for est in ("trust", "ste"):
        layer = CompressedLinear.from_linear(lin, "bf16", "int4", est, "torch")
        x.grad = None
        layer(x).backward(g)
        full = g @ lin.weight
        if est == "ste":
            assert torch.equal(x.grad, full)
        else:
            from raysweep.formats import parse

            _, mask = parse("int4").project(x.detach())
            assert torch.equal(x.grad, torch.where(mask, full, 0.0))
            assert 0 < int(mask.sum()) < mask.numel()


@pytest.mark.parametrize("spec", ["int4", "sparse50+int4", "int4@h", "2:4"])
def test_the_projection_operator_passes_opcheck(spec):
    # schema, autograd registration, fake implementation against the real one, and
    # AOT dispatch (forward and backward) with dynamic shapes
    from raysweep.formats import parse

    from raysweep.train.layers import _project_op, _rep_key

    torch.manual_seed(0)
    x = torch.randn(4, 32, requires_grad=True)
    torch.library.opcheck(_project_op, (x, _rep_key(parse(spec)), "auto", 1.0, "torch"))


def test_kernel_operators_pass_opcheck():
    from raysweep.kernels.quant import _int_quant_op, _masked_grad_op
    from raysweep.kernels.sparse import _nm_mask_op, _topk_mask_op

    torch.manual_seed(0)
    x = torch.randn(4, 16, device=DEV, requires_grad=True)
    m = torch.rand(4, 16, device=DEV) > 0.3
    # not test_aot_dispatch_*: that harness sums every output, and float8 (the codes
    # output) has no type promotion; the compile test below traces the operator instead
    torch.library.opcheck(_int_quant_op, (x, 4, 2.5, None, torch.float32, False),
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))
    torch.library.opcheck(_masked_grad_op, (x, m))
    torch.library.opcheck(_topk_mask_op, (x.detach(), 5))
    torch.library.opcheck(_nm_mask_op, (x.detach(), 2, 4))


def test_kernel_operators_compile_whole_and_equal_eager():
    from raysweep.kernels.quant import int_quant_triton, masked_grad_triton
    from raysweep.kernels.sparse import nm_mask_triton, topk_mask_triton

    def f(x, g):
        xq, mask = int_quant_triton(x, 4, 2.5)
        keep = topk_mask_triton(xq, 5) & nm_mask_triton(x, 2, 4)
        return xq * keep, masked_grad_triton(g, mask)

    torch.manual_seed(0)
    x, g = torch.randn(6, 16, device=DEV), torch.randn(6, 16, device=DEV)
    torch._dynamo.reset()
    ex = torch._dynamo.explain(f)(x, g)
    assert (ex.graph_break_count, ex.graph_count) == (0, 1)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    for a, b in zip(compiled(x, g), f(x, g), strict=True):
        assert torch.equal(a, b)
    # the quantizer's registered gradient: the trust-masked straight-through estimator
    xr = x.clone().requires_grad_()
    xq, mask = int_quant_triton(xr, 4, 2.5)
    xq.backward(g)
    assert torch.equal(xr.grad, torch.where(mask, g, 0.0))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_triton_layer_compiles_whole_and_matches_eager():
    model = _model([(s, s, "auto") for s in ("int4", "sparse50", "2:4", "sparse50+int4",
                                             "int4@h", "mxfp4", "nvfp4", "fp4")],
                   backend="triton", device="cuda")
    x, y = _batch("cuda")
    breaks, graphs, why = _graph_breaks(model, x, y)
    assert (breaks, graphs) == (0, 1), why
    _assert_inductor_matches_eager(model, x, y)


# --------------------------------------------------------------------------- config, CLI, train


TINY = {"size": "2x32", "data": "synthetic", "tokens": 12 * 8 * 64, "seq_len": 64,
        "weights": "int4", "activations": "sparse50", "eval_every": 6, "eval_batches": 1,
        "final_eval_batches": 1, "device": "cpu"}


def test_compile_key_takes_true_false_and_reduce_overhead():
    from raysweep.errors import RaysweepError
    from raysweep.results import run_id
    from raysweep.train.config import resolve_config

    for value in (True, False, "reduce-overhead"):
        assert resolve_config({"size": "2x32", "compile": value})["compile"] == value
    # left out, the key is the bool False it always was: existing run ids stay as they were
    default = resolve_config({"size": "2x32"})
    assert default["compile"] is False
    assert run_id(default) == run_id(resolve_config({"size": "2x32", "compile": False}))
    assert run_id(default) != run_id(resolve_config({"size": "2x32", "compile": True}))
    for bad in ("fast", "true", 1, "max-autotune"):
        with pytest.raises(RaysweepError, match="compile.*reduce-overhead"):
            resolve_config({"size": "2x32", "compile": bad})


def test_cli_compile_flag():
    from raysweep.cli import build_parser
    from raysweep.train.cli import config_from_args

    def cfg(*flags):
        return config_from_args(build_parser().parse_args(["train", "--size", "2x32", *flags]))

    assert "compile" not in cfg()
    assert cfg("--compile")["compile"] is True
    assert cfg("--compile", "reduce-overhead")["compile"] == "reduce-overhead"
    assert cfg("--compile", "false")["compile"] is False


def test_a_study_may_set_compile(tmp_path):
    from raysweep.errors import StudyError
    from raysweep.sweep.study import load_study

    body = ("version: 1\nname: c\nbackend: train\nsizes: [2x32]\ntokens: [4096]\nseeds: [0]\n"
            "representations: [{name: dense, weights: bf16, activations: bf16}]\n"
            "training: {compile: %s}\n")
    path = tmp_path / "s.yaml"
    path.write_text(body % "reduce-overhead")
    assert load_study(str(path)).training["compile"] == "reduce-overhead"
    path.write_text(body % "fast")
    with pytest.raises(StudyError, match="compile"):
        load_study(str(path))


def _fake_clock(monkeypatch, first_s: float):
    """perf_counter of raysweep.train.loop: each training step takes 1 s, except the
    first three of the run, which take ``first_s`` (a compiled model compiling)."""
    import raysweep.train.loop as loop

    clock = {"t": 0.0, "steps": 0}
    step = loop._train_step

    def timed_step(*a, **k):
        step(*a, **k)
        clock["t"] += first_s if clock["steps"] < loop.COMPILE_WARMUP_STEPS else 1.0
        clock["steps"] += 1

    class _Time:
        @staticmethod
        def perf_counter():
            return clock["t"]

        def __getattr__(self, name):
            import time

            return getattr(time, name)

    monkeypatch.setattr(loop, "_train_step", timed_step)
    monkeypatch.setattr(loop, "time", _Time())
    return clock


def test_compiled_train_equals_eager_and_its_throughput_skips_the_warm_up(monkeypatch):
    import raysweep.train.loop as loop

    compiled, real_compile = [], torch.compile

    def compile_aot_eager(model, mode=None):  # inductor's C++ build would take a minute
        compiled.append(mode)
        return real_compile(model, backend="aot_eager", fullgraph=True)

    eager = loop.train(dict(TINY))
    _fake_clock(monkeypatch, first_s=100.0)
    monkeypatch.setattr(torch, "compile", compile_aot_eager)
    reports = []
    torch._dynamo.reset()
    row = loop.train({**TINY, "compile": True}, reports.append)
    assert compiled == [None]  # one compiled model for the whole run
    assert row["status"] == "ok" and row["loss"] == eager["loss"]
    assert row["train_loss"] == eager["train_loss"]
    tokens_per_step = TINY["seq_len"] * 8
    assert row["tokens_per_s"] == pytest.approx(tokens_per_step)  # 1 s a step: no warm-up
    assert reports[0]["tokens_per_s"] == pytest.approx(tokens_per_step)
    # an eager run counts every step
    _fake_clock(monkeypatch, first_s=100.0)
    row = loop.train(dict(TINY))
    assert row["tokens_per_s"] == pytest.approx(12 * tokens_per_step / (3 * 100.0 + 9))
    torch._dynamo.reset()
    assert loop.train({**TINY, "compile": "reduce-overhead", "tokens": 4 * 8 * 64})["status"] \
        == "ok"
    assert compiled == [None, "reduce-overhead"]
