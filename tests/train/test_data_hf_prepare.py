"""`raysweep data prepare hf:...` with stand-ins for `datasets` and `tokenizers`.

The real packages are optional (not in the test extra); these stand-ins implement
the few calls raysweep makes (load_dataset -> splits of {"text": ...} rows;
Tokenizer.from_file/from_pretrained, get_vocab_size, token_to_id, encode_batch),
so the streaming writer, the split rules, the dtype, the end-of-text token, the
byte cap and the hash are tested here. docs/training.md records a run with the
real packages.
"""

import hashlib
import json
import sys
import types

import numpy as np
import pytest

from raysweep.errors import RaysweepError
from raysweep.train.data import memmap_corpus
from raysweep.train.prepare import prepare

DOCS = [f"document {i}: " + "x" * (i % 7) for i in range(2600)]


class _Enc:
    def __init__(self, ids):
        self.ids = ids


class _Tok:
    """Byte-level, vocab 300 (so uint16), '</s>' = 299."""

    calls = 0

    @classmethod
    def from_file(cls, path):
        return cls()

    from_pretrained = from_file

    def get_vocab_size(self):
        return 300

    def token_to_id(self, tok):
        return 299 if tok == "</s>" else None

    def encode_batch(self, texts):
        _Tok.calls += 1
        return [_Enc(list(t.encode())) for t in texts]


@pytest.fixture
def fake_hf(monkeypatch):
    splits = {"train": [{"text": t} for t in DOCS]}
    ds_mod = types.ModuleType("datasets")
    ds_mod.load_dataset = lambda name, config=None: splits
    tk_mod = types.ModuleType("tokenizers")
    tk_mod.Tokenizer = _Tok
    monkeypatch.setitem(sys.modules, "datasets", ds_mod)
    monkeypatch.setitem(sys.modules, "tokenizers", tk_mod)
    _Tok.calls = 0
    return splits


def _docs(arr):
    """Split a token stream at the end-of-text id back into strings."""
    out, cur = [], []
    for t in arr.tolist():
        if t == 299:
            out.append(bytes(cur).decode())
            cur = []
        else:
            cur.append(t)
    assert not cur, "stream must end with the end-of-text token"
    return out


def test_hf_prepare_streams_splits_and_records(fake_hf, tmp_path):
    out = tmp_path / "hf"
    meta = prepare("hf:some/dataset", str(out), tokenizer="tok-name")
    assert meta["dtype"] == "uint16" and meta["vocab"] == 300 and meta["eos_id"] == 299
    assert _Tok.calls == 3  # 2600 documents in batches of 1000
    c = memmap_corpus(out)
    train, val = _docs(np.asarray(c.train)), _docs(np.asarray(c.val))
    assert sorted(train + val) == sorted(DOCS)  # nothing lost, nothing twice
    assert 0.02 < len(val) / len(DOCS) < 0.09  # ~5% by index hash
    assert train == [d for d in DOCS if d in set(train)]  # document order kept
    assert meta["train_tokens"] == len(c.train) and meta["val_tokens"] == len(c.val)
    raw = (out / "train.bin").read_bytes() + (out / "val.bin").read_bytes()
    assert meta["hash"] == hashlib.sha256(raw).hexdigest()[:16]
    assert json.loads((out / "meta.json").read_text())["source"] == "hf:some/dataset"
    assert not list(out.glob(".*tmp"))
    again = prepare("hf:some/dataset", str(tmp_path / "hf2"), tokenizer="tok-name")
    assert again["hash"] == meta["hash"]  # deterministic split and encoding


def test_hf_prepare_uses_the_validation_split_and_the_byte_cap(fake_hf, tmp_path):
    fake_hf["validation"] = [{"text": "held out"}, {"text": "second"}]
    meta = prepare("hf:some/dataset", str(tmp_path / "v"), tokenizer="t")
    c = memmap_corpus(tmp_path / "v")
    assert _docs(np.asarray(c.val)) == ["held out", "second"]
    assert len(_docs(np.asarray(c.train))) == len(DOCS)
    # with a cap, the train split is capped and validation gets a twentieth of it
    prepare("hf:some/dataset", str(tmp_path / "vc"), tokenizer="t", max_bytes=100)
    c = memmap_corpus(tmp_path / "vc")
    assert _docs(np.asarray(c.val)) == ["held out"]  # 8 characters reach the cap of 5
    assert len(_docs(np.asarray(c.train))) == 7  # 12 + 13 + ... + 18 = 105: the 7th reaches 100
    del fake_hf["validation"]
    capped = prepare("hf:some/dataset", str(tmp_path / "cap"), tokenizer="t", max_bytes=5000)
    n_docs = len(_docs(np.asarray(memmap_corpus(tmp_path / "cap").train))) + len(
        _docs(np.asarray(memmap_corpus(tmp_path / "cap").val)))
    used = np.cumsum([len(d) for d in DOCS])
    assert n_docs == int(np.searchsorted(used, 5000)) + 1  # stops at the first doc past the cap
    assert capped["train_tokens"] < meta["train_tokens"]


def test_hf_prepare_bad_rows_fail_cleanly_and_leave_no_corpus(fake_hf, tmp_path):
    fake_hf["train"] = [{"text": "ok"}] * 1500 + [{"body": "no text column"}]
    out = tmp_path / "bad"
    with pytest.raises(RaysweepError,
                       match=r"row 1500 has no string 'text' column \(columns: body\)"):
        prepare("hf:some/dataset", str(out), tokenizer="t")
    assert not (out / "meta.json").exists() and not list(out.glob("*.bin"))
    assert not list(out.glob(".*tmp"))
    fake_hf.pop("train")
    fake_hf["test"] = []
    with pytest.raises(RaysweepError, match="no 'train' split"):
        prepare("hf:some/dataset", str(out), tokenizer="t")
    with pytest.raises(RaysweepError, match="--tokenizer"):
        prepare("hf:some/dataset", str(out))
    fake_hf["train"] = [{"text": "only one document"}]
    with pytest.raises(RaysweepError, match="no val tokens"):
        prepare("hf:some/dataset", str(out), tokenizer="t")
    assert not (out / "meta.json").exists() and not list(out.glob("*.bin"))
