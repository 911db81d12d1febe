"""raysweep: scaling laws for compressed representations, swept on Ray Tune.

``import raysweep`` is cheap: it imports neither torch nor ray. The package is
four wings over three shared leaves (docs/architecture.md):

- leaves: ``raysweep.errors`` (errors and the value checks), ``raysweep.atomic``
  (never half-written files), ``raysweep.results`` (a run's record and the table)
- ``raysweep.formats``, ``raysweep.kernels``: representations and Triton kernels
- ``raysweep.train``: the model, the compressed layers, the data, ``train()``
- ``raysweep.sweep``: studies, trials, runners, the registry, the Ray Tune sweep
- ``raysweep.active``: active search under a FLOP budget (Optuna, Ray Tune)
- ``raysweep.fit``: the laws, the fitter, the report
"""

from raysweep.errors import FitError, RaysweepError, SpecError, StudyError

__version__ = "0.1.0"
__all__ = ["FitError", "RaysweepError", "SpecError", "StudyError", "__version__"]
