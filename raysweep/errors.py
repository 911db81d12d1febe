"""Errors raysweep raises for bad input, and the one shape of their messages.

Every user-facing error is a :class:`RaysweepError`; the CLI prints its message
on one line and exits with status 2. Messages name the offending field, the bad
value and the allowed values, always in one shape (:func:`bad_value`)::

    WHERE: got VALUE: WHAT IS WRONG; allowed: ALLOWED

``WHERE`` is a key path (``search.budget_flops``, ``config key 'lr'``),
prefixed with the file where there is one (``studies/x.yaml: sizes[2]``).
:func:`check_number` is the one number validator of every config raysweep
reads (studies, search options, training configs): scientific notation
given as a string (PyYAML reads ``1e18`` as ``'1e18'``) is a number there.
"""

from __future__ import annotations

import math
from typing import Any


class RaysweepError(ValueError):
    """Bad input: a malformed spec, study, table or option."""


class SpecError(RaysweepError):
    """A representation spec string that does not parse."""


class StudyError(RaysweepError):
    """A study file that does not validate."""


class FitError(RaysweepError):
    """A table the fitter cannot produce an estimate from."""


class TableError(RaysweepError):
    """A results table that is missing or cannot be read."""


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (an error line stays one line)."""
    s = repr(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def bad_value(where: str, value: Any, problem: str, allowed: Any = None,
              error: type[RaysweepError] = RaysweepError) -> RaysweepError:
    """An error naming where, the bad value, what is wrong and the allowed values."""
    msg = f"{where}: got {short_repr(value)}" if where else f"got {short_repr(value)}"
    if problem:
        msg += f": {problem}"
    if allowed is not None:
        if isinstance(allowed, (list, tuple)):
            allowed = ", ".join(str(a) for a in allowed)
        msg += f"; allowed: {allowed}"
    return error(msg)


def number_range(lo: float | None = None, hi: float | None = None, integer: bool = False,
                 open_lo: bool = False) -> str:
    """The words for a number's allowed range: ``a number > 0``, ``an integer in [1, 4]``."""
    kind = "an integer" if integer else "a number"
    if lo is not None and hi is not None and math.isfinite(hi):
        return f"{kind} in {'(' if open_lo else '['}{lo:g}, {hi:g}]"
    if lo is not None:
        return f"{kind} {'>' if open_lo else '>='} {lo:g}"
    if hi is not None and math.isfinite(hi):
        return f"{kind} <= {hi:g}"
    return kind


def as_number(value: Any) -> Any:
    """``value`` with a numeric string (``'1e18'``, as PyYAML reads it) made a float."""
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return value
    return value


def check_number(where: str, value: Any, lo: float | None = None, hi: float | None = None,
                 integer: bool = False, open_lo: bool = False,
                 error: type[RaysweepError] = RaysweepError) -> float | int:
    """A finite number within its range (booleans are not numbers); an int if ``integer``."""
    allowed = number_range(lo, hi, integer, open_lo)
    v = as_number(value)
    kind = "an integer" if integer else "a number"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise bad_value(where, value, f"not {kind}", allowed, error)
    if integer and not float(v).is_integer():
        raise bad_value(where, value, f"not {kind}", allowed, error)
    low = lo is not None and (v <= lo if open_lo else v < lo)
    if low or (hi is not None and v > hi):
        raise bad_value(where, value, "out of range", allowed, error)
    return int(v) if integer else float(v)
