"""Errors raysweep raises for bad input.

Every user-facing error is a :class:`RaysweepError`; the CLI prints its message
on one line and exits with status 2. Messages name the offending field and the
allowed values.
"""

from __future__ import annotations


class RaysweepError(ValueError):
    """Bad input: a malformed spec, study, table or option."""


class SpecError(RaysweepError):
    """A representation spec string that does not parse."""


class StudyError(RaysweepError):
    """A study file that does not validate."""


class FitError(RaysweepError):
    """A table the fitter cannot produce an estimate from."""
