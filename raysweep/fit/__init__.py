"""Fitting scaling laws to results tables (chinchilla, decoupled, unified and prior forms).

``fit_table(df, law="unified", bootstrap=0, holdout=None, seed=0, **opts)``
returns a :class:`FitResult`; see :mod:`raysweep.fit.core` for the method and
:mod:`raysweep.fit.laws` for the laws.
"""

from raysweep.fit.core import FitResult, FitStatus, fit_table
from raysweep.fit.data import make_design
from raysweep.fit.laws import LAWS
from raysweep.fit.single import single_run_rho, single_run_rho_table

__all__ = ["LAWS", "FitResult", "FitStatus", "fit_table", "make_design", "single_run_rho",
           "single_run_rho_table"]
