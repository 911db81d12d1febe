"""Validation helpers for study files: safe YAML and errors that say what to write instead.

Every error has the same shape, so a user can fix a study from the message
alone::

    studies/x.yaml: representations[2].weights: got 'int9': not a valid
    representation spec (...); allowed: see docs/formats.md, ...

that is ``FILE: KEY.PATH: got VALUE: WHAT IS WRONG; allowed: ALLOWED``.

The YAML loader is PyYAML's ``SafeLoader`` (plain data only: no Python tags, no
code execution) with one addition: a mapping that repeats a key is an error
instead of silently keeping the last value.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

from raysweep.errors import StudyError


def err(file: str, key: str, value: Any, problem: str, allowed: Any = None) -> StudyError:
    """A StudyError naming the file, the key path, the bad value and the allowed values."""
    where = f"{file}: {key}" if key else file
    msg = f"{where}: got {_short(value)}: {problem}"
    if allowed is not None:
        if isinstance(allowed, (list, tuple)):
            allowed = ", ".join(str(a) for a in allowed)
        msg += f"; allowed: {allowed}"
    return StudyError(msg)


def _short(value: Any) -> str:
    s = repr(value)
    return s if len(s) <= 80 else s[:77] + "..."


def load_yaml(text: str, file: str) -> Any:
    """Parse YAML safely (SafeLoader, duplicate keys rejected); errors name the file and line."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    def _mapping(loader, node, deep=False):
        keys = set()
        for k_node, _ in node.value:
            k = loader.construct_object(k_node, deep=deep)
            if k in keys:
                line = k_node.start_mark.line + 1
                raise err(file, str(k), k, f"duplicate key (line {line})", "each key once")
            keys.add(k)
        return loader.construct_mapping(node, deep=deep)

    _Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        raise StudyError(f"{file}: not valid YAML at {where}: {problem}; "
                         "allowed: plain YAML data (mappings, lists, strings, numbers)") from None


def check_keys(file: str, key: str, raw: dict, allowed: Iterable[str]) -> None:
    """Reject unknown keys, suggesting the closest allowed one."""
    allowed = list(allowed)
    for k in raw:
        if k not in allowed:
            near = difflib.get_close_matches(str(k), allowed, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            path = f"{key}.{k}" if key else str(k)
            raise err(file, path, k, f"unknown key{hint}", sorted(allowed))


def req_list(file: str, key: str, value: Any) -> list:
    """A non-empty list (a scalar is not silently promoted: the YAML probably has a typo)."""
    if not isinstance(value, list) or not value:
        raise err(file, key, value, "required, a non-empty list", "e.g. [a, b]")
    return value


def req_str(file: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise err(file, key, value, "required, a non-empty string")
    return value.strip()


def req_num(file: str, key: str, value: Any, lo: float | None = None, hi: float | None = None,
            integer: bool = False) -> float:
    """A finite number within [lo, hi] (booleans are not numbers here)."""
    kind = "an integer" if integer else "a number"
    rng = f" in [{lo}, {hi}]" if hi is not None else (f" >= {lo}" if lo is not None else "")
    if isinstance(value, str):
        try:  # YAML reads 1e6 (no dot) as a string
            value = float(value)
        except ValueError:
            raise err(file, key, value, f"not {kind}", f"{kind}{rng}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise err(file, key, value, f"not {kind}", f"{kind}{rng}")
    if integer and not float(value).is_integer():
        raise err(file, key, value, f"not {kind}", f"{kind}{rng}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise err(file, key, value, "out of range", f"{kind}{rng}")
    return value
