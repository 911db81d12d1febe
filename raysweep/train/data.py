"""Training data: the embedded stdlib corpus, token memmaps, a synthetic source; batches.

Three sources, one :class:`Corpus` type (1-D token arrays ``train``/``val``,
``vocab``, a content ``hash`` recorded in every result row):

- ``"stdlib"`` (the default): the running Python's own standard library
  ``*.py`` files, byte-level (vocab 256). It needs no download and exists on
  every machine raysweep installs on. Directories named ``site-packages``,
  ``test``, ``tests``, ``idlelib``, ``lib2to3`` (and ``__pycache__``) are pruned;
  files are sorted by relative path and concatenated. On CPython 3.11 that is
  601 files, 11.07 MB, unigram entropy 3.245 nats/byte (docs/cpu-scale.md). The
  corpus differs between Python versions, hence the hash.
- a directory with ``train.bin``, ``val.bin`` and ``meta.json`` (``dtype``,
  ``vocab``, ``hash``), read as ``np.memmap``; ``raysweep data prepare`` writes
  them (see :mod:`raysweep.train.prepare`: ``stdlib``, ``sitepackages``,
  ``hf:DATASET``).
- ``"synthetic"``: a deterministic Markov chain, ``x[t+1] = (x[t] + s[t]) mod
  64`` with steps ``s`` drawn from {1, 2, 3, 5} with probabilities (0.55, 0.25,
  0.15, 0.05): unigram entropy ln 64 = 4.16 nats, true conditional entropy
  1.11 nats (:data:`SYNTHETIC_ENTROPY`), so a test can see a model learn
  something real in seconds.

Validation split (file-level, deterministic): files are ordered by the
SHA-256 of their relative path, and taken into validation in that order until
it holds at least ``max(0.5 MB, 5%)`` of the bytes (a fixed fraction of files
could leave a small corpus with a few hundred KB of validation, dominated by
one odd file). Membership depends only on the set of paths, never on file
order or content.

Batches: training windows of ``seq_len + 1`` tokens start at positions drawn
from ``numpy.random.default_rng([seed, step])``, so a batch depends only on
(seed, step): a run resumed from a checkpoint sees the same batches as an
uninterrupted one without storing sampler state. Validation uses fixed,
evenly spaced windows, the same for every seed and run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raysweep.errors import RaysweepError

PRUNE_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib",
                        "lib2to3", "__pycache__"})
VAL_MIN_BYTES = 500_000
VAL_MIN_FRAC = 0.05
DATA_FORMS = "'stdlib', 'synthetic', or a directory holding train.bin, val.bin and meta.json"

SYNTHETIC_VOCAB = 64
SYNTHETIC_STEPS = (1, 2, 3, 5)
SYNTHETIC_PROBS = (0.55, 0.25, 0.15, 0.05)
SYNTHETIC_ENTROPY = float(-sum(p * np.log(p) for p in SYNTHETIC_PROBS))

_CACHE: dict[str, Corpus] = {}


@dataclass
class Corpus:
    """Token arrays of one data source (``train`` and ``val`` are 1-D, possibly memmaps)."""

    name: str
    train: np.ndarray
    val: np.ndarray
    vocab: int
    hash: str
    meta: dict = field(default_factory=dict)

    def unigram_entropy(self) -> float:
        """Entropy (nats/token) of the training tokens' unigram distribution: the loss
        of the best model that ignores context, the baseline a trained model must beat."""
        counts = np.bincount(np.asarray(self.train), minlength=self.vocab).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log(p)).sum())


# --------------------------------------------------------------------------- file corpora


def path_hash(rel_path: str) -> str:
    """SHA-256 hex of a relative path (posix separators): the split key."""
    return hashlib.sha256(rel_path.encode()).hexdigest()


def split_files(sizes: dict[str, int], min_bytes: int = VAL_MIN_BYTES,
                min_frac: float = VAL_MIN_FRAC) -> set[str]:
    """Validation files: in path-hash order until ``max(min_bytes, min_frac * total)`` bytes."""
    target = max(min_bytes, min_frac * sum(sizes.values()))
    val, got = set(), 0
    for rel in sorted(sizes, key=path_hash):
        if got >= target:
            break
        val.add(rel)
        got += sizes[rel]
    return val


def stdlib_files(root: str | None = None) -> list[tuple[str, Path]]:
    """(relative path, absolute path) of the stdlib ``*.py`` files, sorted by relative path."""
    base = Path(root or sysconfig.get_paths()["stdlib"])
    out = []
    for d, dirs, files in os.walk(base):
        dirs[:] = [x for x in dirs if x not in PRUNE_DIRS]
        for f in files:
            if f.endswith(".py"):
                p = Path(d) / f
                out.append((p.relative_to(base).as_posix(), p))
    out.sort()
    return out


def build_bytes(files: list[tuple[str, bytes]]) -> tuple[bytes, bytes, str, dict]:
    """Split byte documents into (train, val, hash, info); documents kept in the given order.

    The hash is SHA-256 over the training then the validation bytes (with a
    separator), first 16 hex digits: it changes if any byte or the split does.
    """
    sizes = {rel: len(b) for rel, b in files}
    val_set = split_files(sizes)
    train = b"".join(b for rel, b in files if rel not in val_set)
    val = b"".join(b for rel, b in files if rel in val_set)
    h = hashlib.sha256(train)
    h.update(b"\x00--val--\x00")
    h.update(val)
    info = {"files": len(files), "val_files": len(val_set), "bytes": len(train) + len(val)}
    return train, val, h.hexdigest()[:16], info


def stdlib_corpus() -> Corpus:
    """The embedded default: the Python standard library's source, byte-level (~0.1 s)."""
    files = [(rel, p.read_bytes()) for rel, p in stdlib_files()]
    train, val, digest, info = build_bytes(files)
    info["python"] = sysconfig.get_python_version()
    return Corpus("stdlib", np.frombuffer(train, np.uint8), np.frombuffer(val, np.uint8),
                  256, digest, info)


def synthetic_corpus(n_train: int = 1 << 20, n_val: int = 1 << 16, seed: int = 1234) -> Corpus:
    """The Markov chain of the module docstring, generated in one vectorized cumsum."""
    rng = np.random.default_rng(seed)
    steps = rng.choice(np.array(SYNTHETIC_STEPS), size=n_train + n_val, p=SYNTHETIC_PROBS)
    tokens = (np.cumsum(steps) % SYNTHETIC_VOCAB).astype(np.uint8)
    digest = hashlib.sha256(tokens.tobytes()).hexdigest()[:16]
    return Corpus("synthetic", tokens[:n_train], tokens[n_train:], SYNTHETIC_VOCAB, digest,
                  {"entropy": SYNTHETIC_ENTROPY})


def memmap_corpus(path: str | os.PathLike) -> Corpus:
    """A prepared directory: ``meta.json`` (dtype, vocab, hash) + ``train.bin`` + ``val.bin``."""
    d = Path(path)
    meta_path = d / "meta.json"
    missing = [n for n in ("meta.json", "train.bin", "val.bin") if not (d / n).is_file()]
    if missing:
        raise RaysweepError(f"data: {str(d)!r} lacks {', '.join(missing)}; expected {DATA_FORMS} "
                            "(make one with `raysweep data prepare`)")
    try:
        meta = json.loads(meta_path.read_text())
        dtype = np.dtype(meta["dtype"])
        vocab = int(meta["vocab"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RaysweepError(f"data: {str(meta_path)!r} needs 'dtype' (uint8, uint16, uint32), "
                            f"'vocab' and 'hash': {exc}") from None
    if dtype not in (np.uint8, np.uint16, np.uint32):
        raise RaysweepError(f"data: dtype {dtype} in {str(meta_path)!r}; allowed: "
                            "uint8, uint16, uint32")
    train = np.memmap(d / "train.bin", dtype=dtype, mode="r")
    val = np.memmap(d / "val.bin", dtype=dtype, mode="r")
    return Corpus(str(d), train, val, vocab, str(meta.get("hash", "")), meta)


def _find_dir(path: str) -> str | None:
    """An existing directory for ``path``; a relative path is also tried against the
    directory a Ray Tune trial started in (Tune moves trials into their own dirs)."""
    if os.path.isdir(path):
        return os.path.abspath(path)
    orig = os.environ.get("TUNE_ORIG_WORKING_DIR")
    if orig and not os.path.isabs(path) and os.path.isdir(os.path.join(orig, path)):
        return os.path.join(orig, path)
    return None


def load_corpus(data: str | None = None) -> Corpus:
    """Resolve a ``data`` config value to a :class:`Corpus`, built once per process."""
    key = "stdlib" if data is None else str(data)
    if key in _CACHE:
        return _CACHE[key]
    if key == "stdlib":
        corpus = stdlib_corpus()
    elif key == "synthetic":
        corpus = synthetic_corpus()
    elif _find_dir(key):
        corpus = memmap_corpus(_find_dir(key))
    else:
        raise RaysweepError(f"data: unknown source {data!r}; expected {DATA_FORMS}")
    _CACHE[key] = corpus
    return corpus


# --------------------------------------------------------------------------- batches


def _windows(arr: np.ndarray, starts: np.ndarray, seq_len: int):
    """(x, y) int64 tensors of shape (len(starts), seq_len): inputs and next-token targets."""
    import torch

    idx = starts[:, None] + np.arange(seq_len + 1)
    block = torch.from_numpy(np.asarray(arr[idx]).astype(np.int64))
    return block[:, :-1], block[:, 1:]


def check_lengths(corpus: Corpus, seq_len: int) -> None:
    """Both splits must hold at least one window of ``seq_len + 1`` tokens."""
    for split in ("train", "val"):
        n = len(getattr(corpus, split))
        if n < seq_len + 2:
            raise RaysweepError(f"seq_len: {seq_len} is too long for the {split} split of "
                                f"{corpus.name!r} ({n} tokens); allowed: <= {n - 2}")


def window_starts(n_tokens: int, seq_len: int) -> int:
    """Number of valid window starts (the exclusive high of a start): ``n - seq_len``."""
    return n_tokens - seq_len


def train_batch(corpus: Corpus, step: int, seed: int, batch_size: int, seq_len: int):
    """The training batch of ``step``: random windows from ``default_rng([seed, step])``.

    A window is ``seq_len + 1`` tokens (inputs and the shifted targets), so its
    start i runs over 0 .. len - seq_len - 1 inclusive: ``integers``' exclusive
    high is ``len - seq_len``.
    """
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, window_starts(len(corpus.train), seq_len), size=batch_size)
    return _windows(corpus.train, starts, seq_len)


class DeviceBatches:
    """``train_batch`` for an accelerator: the same windows, gathered on the device.

    The training tokens are copied to the device once (a byte corpus of 300 MB
    is small next to GPU memory); the window starts of ``chunk`` steps at a
    time are drawn on the CPU exactly as :func:`train_batch` draws them and
    sent in one copy, so a step costs no host work and no synchronizing
    host-to-device copy. Corpora above ``max_bytes`` fall back to
    :func:`train_batch` plus a copy.
    """

    def __init__(self, corpus: Corpus, seed: int, batch_size: int, seq_len: int, device,
                 chunk: int = 256, max_bytes: int = 4 << 30):
        import torch

        self.corpus, self.seed, self.bsz, self.seq = corpus, seed, batch_size, seq_len
        self.device, self.chunk = device, chunk
        self.data = None
        arr = corpus.train
        if arr.nbytes <= max_bytes:
            host = np.asarray(arr)
            host = host if host.dtype == np.uint8 else host.astype(np.int32)
            self.data = torch.from_numpy(np.ascontiguousarray(host).copy()).to(device)
            self.offsets = torch.arange(seq_len + 1, device=device)
        self._chunk_id, self._starts = -1, None

    def _load_chunk(self, cid: int) -> None:
        import torch

        hi = window_starts(len(self.corpus.train), self.seq)
        starts = np.stack([np.random.default_rng([self.seed, s]).integers(0, hi, size=self.bsz)
                           for s in range(cid * self.chunk, (cid + 1) * self.chunk)])
        self._starts = torch.from_numpy(starts).to(self.device)
        self._chunk_id = cid

    def __call__(self, step: int):
        """(x, y) on the device for ``step``: the windows of ``train_batch(..., step, ...)``."""
        if self.data is None:
            x, y = train_batch(self.corpus, step, self.seed, self.bsz, self.seq)
            return x.to(self.device), y.to(self.device)
        if step // self.chunk != self._chunk_id:
            self._load_chunk(step // self.chunk)
        idx = self._starts[step % self.chunk][:, None] + self.offsets
        block = self.data[idx].long()
        return block[:, :-1], block[:, 1:]


def val_batches(corpus: Corpus, n_batches: int, batch_size: int, seq_len: int):
    """Fixed validation windows, evenly spaced over the split: a list of (x, y) batches."""
    n = n_batches * batch_size
    starts = np.linspace(0, len(corpus.val) - seq_len - 1, n).astype(np.int64)
    return [_windows(corpus.val, starts[i:i + batch_size], seq_len)
            for i in range(0, n, batch_size)]
