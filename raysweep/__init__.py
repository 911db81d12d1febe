"""raysweep: scaling laws for compressed representations, swept on Ray Tune.

``import raysweep`` is cheap: it imports neither torch nor ray. The heavy parts
live in submodules imported where they are used:

- ``raysweep.formats``: representations (spec strings -> project / gmse / bits)
- ``raysweep.kernels``: Triton kernels with torch references
- ``raysweep.model``, ``raysweep.layers``, ``raysweep.train``, ``raysweep.data``
- ``raysweep.study``, ``raysweep.sweep``: studies and the Ray Tune sweep
- ``raysweep.fit``, ``raysweep.report``: the unified law and the report
"""

from raysweep.errors import FitError, RaysweepError, SpecError, StudyError

__version__ = "0.1.0"
__all__ = ["FitError", "RaysweepError", "SpecError", "StudyError", "__version__"]
