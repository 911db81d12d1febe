"""Training: one compressed model trained as a pure function.

- :mod:`~raysweep.train.config`: the training config (keys, defaults, validation; torch-free)
- :mod:`~raysweep.train.sizes`: the size dial and parameter counts (torch-free)
- :mod:`~raysweep.train.model`: the Llama-style decoder
- :mod:`~raysweep.train.layers`: ``CompressedLinear`` and ``convert_linears``
- :mod:`~raysweep.train.data`: corpora and deterministic batches
- :mod:`~raysweep.train.prepare`: writing ``train.bin`` / ``val.bin`` corpora
- :mod:`~raysweep.train.loop`: ``train(config, report) -> row``
- :mod:`~raysweep.train.cli`: ``raysweep train`` and ``raysweep data``
"""
