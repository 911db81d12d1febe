"""Active search: which runs of a study's grid to train under a FLOP budget.

- :mod:`~raysweep.active.options`: the ``search:`` options of a study, validated
- :mod:`~raysweep.active.surrogate`: an ensemble of decoupled-law fits (the posterior)
- :mod:`~raysweep.active.acquisition`: the pool, the initial design, the acquisition
- :mod:`~raysweep.active.planner`: the relaxed budgeted V-optimal design (``design: plan``)
  on ``raysweep fit``'s Huber fit, linearized
- :mod:`~raysweep.active.status`: budget and predicted targets for ``raysweep status``
- :mod:`~raysweep.active.sampler`: the acquisition as an Optuna sampler (resumable)
- :mod:`~raysweep.active.searcher`: the Ray Tune ``Searcher`` the sweep plugs in
"""
