"""``raysweep data prepare``: write a corpus as ``train.bin`` / ``val.bin`` / ``meta.json``.

Sources:

- ``stdlib``: the embedded default corpus (:func:`raysweep.train.data.stdlib_corpus`),
  written out so a study can name it as a directory like any other.
- ``sitepackages``: every ``*.py`` file reachable from ``sys.path`` (each
  directory entry walked recursively; zip entries, the current directory and
  ``__pycache__`` skipped), deduplicated by content (the first path in sorted
  order keeps it), sorted by path relative to its ``sys.path`` entry, split by
  path hash like the stdlib corpus (:func:`raysweep.train.data.split_files`),
  byte-level. About 290 MB with raysweep's dependencies installed; it is the
  larger real corpus of issue 8 for GPU studies.
- ``hf:DATASET[:CONFIG]``: a Hugging Face dataset's ``text`` column encoded
  with ``--tokenizer`` (a ``tokenizers`` name or tokenizer.json path). Needs the
  optional packages ``datasets`` and ``tokenizers``; without them the command
  fails with a message naming the missing package. Uses the dataset's
  ``validation`` split when it has one, else documents by index hash.

Tokens are stored in the smallest of uint8 / uint16 / uint32 that holds the
vocabulary (byte corpora: uint8, half the bytes of the usual uint16); the
dtype is in ``meta.json``, which the reader trusts. Every file is written to a
temporary name in the output directory and renamed into place, ``meta.json``
last, so an interrupted prepare never leaves a directory that loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from raysweep.atomic import atomic_write_bytes, file_mode
from raysweep.errors import RaysweepError, check_number
from raysweep.train.data import build_bytes, path_hash, stdlib_corpus

SOURCES = "stdlib, sitepackages, hf:DATASET[:CONFIG]"


def token_dtype(vocab: int) -> np.dtype:
    """Smallest unsigned dtype holding token ids < vocab."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if vocab <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    raise RaysweepError(f"vocab: {vocab} does not fit uint32")


def write_dir(out: str | os.PathLike, train: np.ndarray, val: np.ndarray, vocab: int,
              digest: str, info: dict) -> dict:
    """Write the three files of a memmap corpus; returns the meta dict."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    dt = token_dtype(vocab)
    (d / "meta.json").unlink(missing_ok=True)  # the directory is invalid until meta lands
    atomic_write_bytes(d / "train.bin", np.ascontiguousarray(train, dtype=dt).tobytes())
    atomic_write_bytes(d / "val.bin", np.ascontiguousarray(val, dtype=dt).tobytes())
    meta = {"dtype": dt.name, "vocab": int(vocab), "hash": digest,
            "train_tokens": int(len(train)), "val_tokens": int(len(val)), **info}
    atomic_write_bytes(d / "meta.json", (json.dumps(meta, indent=1) + "\n").encode())
    return meta


def sitepackages_files() -> list[tuple[str, Path]]:
    """(relative path, absolute path) of every ``.py`` reachable from sys.path, sorted."""
    seen: set[str] = set()
    out = []
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        root = Path(entry).resolve()
        for d, dirs, files in os.walk(root):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__")
            for f in files:
                if not f.endswith(".py"):
                    continue
                p = Path(d) / f
                real = os.path.realpath(p)
                if real in seen:  # nested sys.path entries (lib/ and lib/site-packages/)
                    continue
                seen.add(real)
                out.append((p.relative_to(root).as_posix(), p))
    out.sort()
    return out


def sitepackages_bytes(max_bytes: int | None = None) -> list[tuple[str, bytes]]:
    """The documents of the ``sitepackages`` source, deduplicated by content."""
    seen: set[bytes] = set()
    rels: set[str] = set()
    docs, total = [], 0
    for rel, p in sitepackages_files():
        try:
            b = p.read_bytes()
        except OSError:
            continue
        key = hashlib.sha1(b).digest()
        if not b or key in seen:
            continue
        seen.add(key)
        if rel in rels:  # the same relative path under two sys.path roots
            rel = f"{rel}#{len(docs)}"
        rels.add(rel)
        docs.append((rel, b))
        total += len(b)
        if max_bytes and total >= max_bytes:
            break
    return docs


EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "[SEP]", "<|end_of_text|>")
HF_BATCH = 1000  # documents per encode_batch call


def _prepare_hf(name: str, out: str, tokenizer: str | None, max_bytes: int | None) -> dict:
    """Tokenize a Hugging Face dataset's ``text`` column (optional dependencies).

    Streams: documents are encoded ``HF_BATCH`` at a time (``encode_batch``, which
    tokenizers runs in parallel) and appended to temporary ``.bin`` files, so the
    corpus never has to fit in memory as Python ints. Documents end with the
    tokenizer's end-of-text token (the first of :data:`EOS_NAMES` it has, else the
    last id). ``max_bytes`` caps the characters of text read: of the train split
    (a ``validation`` split then gets a twentieth of it), or of the documents split
    5% by index hash.
    """
    for pkg in ("datasets", "tokenizers"):
        try:
            __import__(pkg)
        except ImportError:
            raise RaysweepError(f"data prepare hf:{name}: needs the optional package {pkg!r} "
                                f"(pip install {pkg})") from None
    if not tokenizer:
        raise RaysweepError("tokenizer: hf: sources need --tokenizer NAME_OR_PATH "
                            "(e.g. --tokenizer gpt2)")
    import datasets
    from tokenizers import Tokenizer

    tok = (Tokenizer.from_file(tokenizer) if os.path.isfile(tokenizer)
           else Tokenizer.from_pretrained(tokenizer))
    dataset, _, config = name.partition(":")
    ds = datasets.load_dataset(dataset, config or None)
    if "train" not in ds:
        raise RaysweepError(f"data prepare hf:{name}: the dataset has no 'train' split "
                            f"(splits: {', '.join(ds)})")
    vocab = tok.get_vocab_size()
    eos = next((i for i in map(tok.token_to_id, EOS_NAMES) if i is not None), vocab - 1)
    dt = token_dtype(vocab)
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    (d / "meta.json").unlink(missing_ok=True)  # the directory is invalid until meta lands
    tmp = {k: d / f".{k}.bin.{os.getpid()}.tmp" for k in ("train", "val")}
    counts = {"train": 0, "val": 0}

    def encode(split, files, which, cap) -> None:
        """Append ``split``'s documents to files[which(i)] batch by batch, stopping after
        the document that brings the characters read to ``cap`` (0: no cap)."""
        batch: list[tuple[int, str]] = []
        used = 0

        def flush():
            for (i, _), enc in zip(batch, tok.encode_batch([t for _, t in batch])):
                k = which(i)
                files[k].write(np.asarray(enc.ids + [eos], dtype=dt).tobytes())
                counts[k] += len(enc.ids) + 1
            batch.clear()

        for i, row in enumerate(split):
            text = row.get("text") if isinstance(row, dict) else None
            if not isinstance(text, str):
                cols = ", ".join(row) if isinstance(row, dict) else type(row).__name__
                raise RaysweepError(f"data prepare hf:{name}: row {i} has no string 'text' "
                                    f"column (columns: {cols})")
            batch.append((i, text))
            used += len(text)
            if len(batch) >= HF_BATCH:
                flush()
            if cap and used >= cap:
                break
        flush()

    try:
        with open(tmp["train"], "wb") as ft, open(tmp["val"], "wb") as fv:
            files = {"train": ft, "val": fv}
            cap = max_bytes or 0
            if "validation" in ds:  # the cap is the train split's; validation gets 1/20
                encode(ds["train"], files, lambda i: "train", cap)
                encode(ds["validation"], files, lambda i: "val", -(-cap // 20))
            else:  # 5% of documents by a hash of their index
                encode(ds["train"], files,
                       lambda i: "val" if int(path_hash(str(i))[:8], 16) % 100 < 5 else "train",
                       cap)
        empty = [k for k in ("train", "val") if not counts[k]]
        if empty:
            raise RaysweepError(f"data prepare hf:{name}: no {' or '.join(empty)} tokens "
                                "(an empty split, or --max-bytes too small for a 5% split)")
        h = hashlib.sha256()
        for k in ("train", "val"):
            with open(tmp[k], "rb") as f:
                for chunk in iter(lambda: f.read(1 << 24), b""):
                    h.update(chunk)
        for k in ("train", "val"):
            os.chmod(tmp[k], file_mode())
            os.replace(tmp[k], d / f"{k}.bin")
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)
    meta = {"dtype": dt.name, "vocab": int(vocab), "hash": h.hexdigest()[:16],
            "train_tokens": counts["train"], "val_tokens": counts["val"],
            "source": f"hf:{name}", "tokenizer": tokenizer, "eos_id": int(eos)}
    atomic_write_bytes(d / "meta.json", (json.dumps(meta, indent=1) + "\n").encode())
    return meta


def prepare(source: str, out: str, tokenizer: str | None = None,
            max_bytes: int | None = None) -> dict:
    """Write ``source`` under ``out``; returns the meta dict (also in ``out/meta.json``)."""
    if max_bytes is not None:
        max_bytes = int(check_number("--max-bytes", max_bytes, lo=1, integer=True))
    t0 = time.perf_counter()
    if source == "stdlib":
        c = stdlib_corpus()
        meta = write_dir(out, c.train, c.val, 256, c.hash, {"source": "stdlib", **c.meta})
    elif source == "sitepackages":
        train, val, digest, info = build_bytes(sitepackages_bytes(max_bytes))
        meta = write_dir(out, np.frombuffer(train, np.uint8), np.frombuffer(val, np.uint8), 256,
                         digest, {"source": "sitepackages", **info})
    elif source.startswith("hf:") and len(source) > 3:
        meta = _prepare_hf(source[3:], out, tokenizer, max_bytes)
    else:
        raise RaysweepError(f"source: unknown {source!r}; allowed: {SOURCES}")
    meta["prepare_s"] = round(time.perf_counter() - t0, 2)
    return meta
