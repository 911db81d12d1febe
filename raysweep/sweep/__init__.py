"""The sweep: studies, their trials, and running them on Ray Tune.

- :mod:`~raysweep.sweep.checks`: safe YAML and the study file's error format
- :mod:`~raysweep.sweep.study`: a study file -> a frozen :class:`~raysweep.sweep.study.Study`
- :mod:`~raysweep.sweep.trials`: a study -> its trial configs
- :mod:`~raysweep.sweep.runners`: a trial config -> its result row (train, simulated, replay)
- :mod:`~raysweep.sweep.registry`: the run log (``registry.jsonl``), source of truth
- :mod:`~raysweep.sweep.cost`: FLOPs, GPU packing and device-hours of a trial
- :mod:`~raysweep.sweep.progress`: the Tune callback that records and reports progress
- :mod:`~raysweep.sweep.run`: plan, run and status of a study
- :mod:`~raysweep.sweep.cli`: ``raysweep plan | run | status``
"""
