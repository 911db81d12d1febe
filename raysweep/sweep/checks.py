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
import re
from collections.abc import Iterable
from typing import Any

from raysweep.errors import StudyError, bad_value, check_number


def _where(file: str, key: str) -> str:
    return f"{file}: {key}" if key else file


def err(file: str, key: str, value: Any, problem: str, allowed: Any = None) -> StudyError:
    """A StudyError naming the file, the key path, the bad value and the allowed values."""
    return bad_value(_where(file, key), value, problem, allowed, StudyError)


MAX_YAML_BYTES = 1 << 20  # a study is a page of YAML; 1 MiB is far beyond any real one
MAX_YAML_NODES = 200_000  # nodes after aliases are expanded (an alias bomb has billions)


def read_text(path) -> str:
    """A study file's text: UTF-8, at most :data:`MAX_YAML_BYTES` (one-line errors)."""
    from pathlib import Path

    p = Path(path)
    size = p.stat().st_size
    if size > MAX_YAML_BYTES:
        raise StudyError(f"{p}: got {size} bytes: too large for a study file; allowed: at "
                         f"most {MAX_YAML_BYTES} bytes")
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StudyError(f"{p}: not UTF-8 text (byte {exc.start}); allowed: a UTF-8 YAML "
                         "file") from None


def _check_expansion(text: str, file: str, loader) -> None:
    """Count the nodes the document has once its aliases are expanded, before building it."""
    import yaml

    anchors: dict[str, int] = {}
    stack: list[list] = [[0, None]]  # [nodes so far, anchor] per open collection
    for ev in yaml.parse(text, Loader=loader):
        if isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            stack.append([1, ev.anchor])
            continue
        if isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            n, anchor = stack.pop()
        elif isinstance(ev, yaml.ScalarEvent):
            n, anchor = 1, ev.anchor
        elif isinstance(ev, yaml.AliasEvent):
            n, anchor = anchors.get(ev.anchor, 1), None
        else:
            continue
        if anchor is not None:
            anchors[anchor] = n
        stack[-1][0] += n
        if stack[-1][0] > MAX_YAML_NODES or n > MAX_YAML_NODES:
            raise StudyError(f"{file}: got a document of more than {MAX_YAML_NODES} nodes "
                             "once its aliases are expanded; allowed: a study of plain "
                             "mappings and lists (no alias bombs)")


_SCI_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$")


def load_yaml(text: str, file: str) -> Any:
    """Parse YAML safely (SafeLoader, duplicate keys rejected); errors name the file and line."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    # YAML 1.1 (PyYAML) reads 1e18 (no dot) as a string; YAML 1.2 and every user read it
    # as a number, so every numeric field of every file accepts it.
    _Loader.add_implicit_resolver("tag:yaml.org,2002:float", _SCI_FLOAT, list("-+0123456789"))

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
        _check_expansion(text, file, _Loader)
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
            integer: bool = False, open_lo: bool = False) -> float | int:
    """A finite number within [lo, hi] (:func:`raysweep.errors.check_number`, as a StudyError)."""
    return check_number(_where(file, key), value, lo, hi, integer, open_lo, StudyError)
