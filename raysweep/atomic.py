"""Atomic output files: never half-written, and readable like any other output.

Every output raysweep writes (results tables, study.yaml, fit.json, reports,
plots, prepared corpora, checkpoints, cached GMSE values) goes through
:func:`atomic_write`: the content is
written to a temporary file in the destination's directory, given the mode a
plain ``open()`` would give (``mkstemp`` makes it 0600), then moved into place
with ``os.replace``, which is atomic on POSIX. A crash leaves the old file or
the new one, never a torn one. Light: no torch, no ray.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def file_mode() -> int:
    """``0o666 & ~umask``: the mode ``open()`` gives a new file (umask read by setting it)."""
    old = os.umask(0)
    os.umask(old)
    return 0o666 & ~old


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then publish it as ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: Path(p).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def clean_json(obj):
    """Replace NaN/inf by None (JSON has no NaN) and numpy scalars by Python ones."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def atomic_write_json(path: str | Path, obj) -> Path:
    """``obj`` as indented strict JSON (NaN -> null), written atomically."""
    return atomic_write_text(path, json.dumps(clean_json(obj), indent=2) + "\n")
