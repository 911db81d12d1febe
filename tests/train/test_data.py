"""Data: the stdlib corpus and its split, memmap dirs, the synthetic source, batches."""

import json
import os

import numpy as np
import pytest
import torch

from raysweep.cli import main
from raysweep.errors import RaysweepError
from raysweep.train.data import (
    SYNTHETIC_ENTROPY,
    Corpus,
    DeviceBatches,
    load_corpus,
    memmap_corpus,
    split_files,
    stdlib_corpus,
    stdlib_files,
    synthetic_corpus,
    train_batch,
    val_batches,
)
from raysweep.train.prepare import prepare, sitepackages_bytes


@pytest.fixture(scope="module")
def stdlib():
    return load_corpus("stdlib")


def test_stdlib_corpus_is_deterministic(stdlib):
    again = stdlib_corpus()
    assert again.hash == stdlib.hash and len(again.hash) == 16
    assert np.array_equal(again.val, stdlib.val)
    assert stdlib.vocab == 256 and stdlib.train.dtype == np.uint8


def test_stdlib_selection_and_split(stdlib):
    files = stdlib_files()
    rels = [r for r, _ in files]
    assert rels == sorted(rels)
    assert not any(part in ("site-packages", "test", "tests", "idlelib", "lib2to3")
                   for r in rels for part in r.split("/")[:-1])
    assert len(stdlib.val) >= 500_000
    assert len(stdlib.train) + len(stdlib.val) == sum(p.stat().st_size for _, p in files)
    # byte-level unigram entropy of Python source (cpu-scale.md: 3.245 nats on 3.11)
    assert 3.0 < stdlib.unigram_entropy() < 3.5


def test_split_depends_on_paths_only():
    sizes = {f"pkg/mod{i}.py": 1000 + 37 * i for i in range(400)}
    val = split_files(sizes, min_bytes=20_000)
    shuffled = dict(reversed(list(sizes.items())))
    assert split_files(shuffled, min_bytes=20_000) == val
    assert sum(sizes[r] for r in val) >= 20_000
    assert 0 < len(val) < len(sizes)


def test_batches_depend_on_seed_and_step_only():
    c = synthetic_corpus()
    x1, y1 = train_batch(c, 5, 0, 4, 32)
    x2, _ = train_batch(c, 5, 0, 4, 32)
    x3, _ = train_batch(c, 6, 0, 4, 32)
    x4, _ = train_batch(c, 5, 1, 4, 32)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3) and not torch.equal(x1, x4)
    assert torch.equal(x1[:, 1:], y1[:, :-1]) and x1.dtype == torch.int64
    v1, v2 = val_batches(c, 3, 4, 32), val_batches(c, 3, 4, 32)
    assert len(v1) == 3 and all(torch.equal(a[0], b[0]) for a, b in zip(v1, v2))


def test_train_batch_reaches_the_last_window():
    seq = 4
    tokens = np.arange(seq + 3, dtype=np.uint8)  # starts 0, 1, 2 are valid
    corpus = Corpus("tiny", tokens, tokens, 256, "h")
    starts = set()
    for step in range(200):
        x, y = train_batch(corpus, step, 0, 4, seq)
        starts.update(x[:, 0].tolist())
        assert (y[:, -1] <= len(tokens) - 1).all()
    assert starts == {0, 1, 2}  # the last start, len - seq - 1, included


def test_device_batches_equal_train_batch():
    c = synthetic_corpus()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    batches = DeviceBatches(c, 7, 4, 32, dev, chunk=3)
    for step in (0, 2, 3, 10, 1):
        x, y = batches(step)
        x2, y2 = train_batch(c, step, 7, 4, 32)
        assert torch.equal(x.cpu(), x2) and torch.equal(y.cpu(), y2)


def test_synthetic_source():
    c = synthetic_corpus()
    assert c.hash == synthetic_corpus().hash
    assert c.unigram_entropy() == pytest.approx(np.log(64), abs=0.01)
    assert SYNTHETIC_ENTROPY < 1.2  # what a model can reach: far below the unigram baseline
    steps = (np.diff(c.train.astype(np.int64)) % 64)
    assert set(np.unique(steps)) == {1, 2, 3, 5}


def test_prepare_stdlib_roundtrip(tmp_path, stdlib):
    meta = prepare("stdlib", str(tmp_path / "std"))
    c = memmap_corpus(tmp_path / "std")
    assert meta["hash"] == stdlib.hash == c.hash
    assert c.vocab == 256 and np.array_equal(np.asarray(c.val), stdlib.val)
    assert not [n for n in os.listdir(tmp_path / "std") if ".tmp" in n]


def test_prepare_sitepackages_small(tmp_path):
    docs = sitepackages_bytes(max_bytes=3_000_000)
    assert len({b for _, b in docs}) == len(docs)  # deduplicated by content
    assert [r for r, _ in docs] == sorted(r for r, _ in docs)
    assert main(["data", "prepare", "sitepackages", "--out", str(tmp_path / "sp"),
                 "--max-bytes", "3000000"]) == 0
    meta = json.loads((tmp_path / "sp" / "meta.json").read_text())
    assert meta["dtype"] == "uint8" and meta["val_tokens"] >= 500_000
    c = load_corpus(str(tmp_path / "sp"))
    assert len(c.train) == meta["train_tokens"] and c.hash == meta["hash"]


def test_bad_sources(tmp_path, capsys):
    with pytest.raises(RaysweepError, match="data"):
        load_corpus("no-such-corpus")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RaysweepError, match="meta.json"):
        load_corpus(str(tmp_path / "empty"))
    with pytest.raises(RaysweepError, match="source"):
        prepare("nope", str(tmp_path / "x"))
    assert main(["data", "prepare", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "source" in capsys.readouterr().err


def test_hf_without_packages_names_them(tmp_path):
    try:
        import datasets  # noqa: F401
        import tokenizers  # noqa: F401
        pytest.skip("datasets and tokenizers are installed")
    except ImportError:
        pass
    with pytest.raises(RaysweepError, match="datasets|tokenizers"):
        prepare("hf:roneneldan/TinyStories", str(tmp_path / "hf"), tokenizer="gpt2")


def test_prepare_refuses_a_non_positive_byte_cap(tmp_path):
    from raysweep.train.prepare import prepare

    for bad in (-5, 0):
        with pytest.raises(RaysweepError, match=r"--max-bytes: got .*: out of range"):
            prepare("sitepackages", str(tmp_path / "d"), max_bytes=bad)
    assert not (tmp_path / "d").exists()
