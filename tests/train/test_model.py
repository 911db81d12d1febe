"""The Llama-style model: counts match sizes.py, causality, RoPE, init."""

import math

import pytest
import torch

from raysweep.errors import RaysweepError
from raysweep.train.model import GPT, apply_rope, is_compressible, rope_tables
from raysweep.train.sizes import count_params, resolve_size


@pytest.mark.parametrize("size,vocab", [("30M", 32000), ("50M", 32000), ("100M", 32000),
                                        ("200M", 32000), ("d32", 256), ("d80", 256),
                                        ("2x64", 256), ("3x96", 50)])
def test_built_counts_match_sizes(size, vocab):
    n_layers, d_model, n_heads = resolve_size(size, vocab)
    with torch.device("meta"):  # no memory, no init cost for the presets
        model = GPT(n_layers, d_model, n_heads, vocab)
    counts = model.param_counts()
    assert counts == model.expected_counts()
    assert counts["non_embedding"] == count_params(n_layers, d_model, n_heads, vocab)
    assert counts["embedding"] == counts["head"] == vocab * d_model


def test_30m_is_paper_count():
    with torch.device("meta"):
        model = GPT(*resolve_size("30M", 32000), 32000)
    assert model.param_counts()["non_embedding"] == 30_482_560


def test_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    model = GPT(2, 32, 2, 64).eval()
    x = torch.randint(0, 64, (3, 24))
    x2 = x.clone()
    x2[:, 12:] = torch.randint(0, 64, (3, 12))
    with torch.no_grad():
        a, b = model(x), model(x2)
    assert torch.equal(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_rope_depends_on_relative_position_only():
    torch.manual_seed(0)
    q, k = torch.randn(16), torch.randn(16)
    cos, sin = rope_tables(40, 16)

    def score(m, n):
        qm = apply_rope(q.view(1, 1, 1, 16), cos[m], sin[m])
        kn = apply_rope(k.view(1, 1, 1, 16), cos[n], sin[n])
        return (qm * kn).sum()

    assert score(3, 1) == pytest.approx(score(30, 28).item(), abs=1e-4)
    assert score(0, 0) == pytest.approx(float(q @ k), abs=1e-5)  # position 0: no rotation
    assert score(5, 1) != pytest.approx(score(5, 4).item(), abs=1e-3)


def test_init_scales_residual_projections():
    torch.manual_seed(0)
    model = GPT(8, 256, 4, 256)
    proj = model.blocks[0].attn.proj.weight.std().item()
    qkv = model.blocks[0].attn.qkv.weight.std().item()
    assert qkv == pytest.approx(0.02, rel=0.05)
    assert proj == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert torch.equal(model.norm.weight, torch.ones(256))
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_loss_of_fresh_model_near_uniform():
    torch.manual_seed(0)
    model = GPT(2, 32, 2, 256)
    x = torch.randint(0, 256, (4, 32))
    assert model(x, x).item() == pytest.approx(math.log(256), abs=0.05)


def test_compressible_filter_spares_head():
    model = GPT(2, 32, 2, 64)
    names = [n for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and is_compressible(m, n)]
    assert "head" not in names and len(names) == 2 * 4


def test_bad_heads():
    with pytest.raises(RaysweepError, match="n_heads"):
        GPT(2, 32, 3, 64)
