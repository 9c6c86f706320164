"""Sparse scanning: choose where to put the probe, reconstruct the image
(`emauto/SparseScan-v0`).

- The one interface is a scan strategy, registered in `registry.STRATEGIES`: a static one
  plans every position up front (`strategies.make_plan`); an adaptive one,
  ``(shape, coverage, measure, seed) -> (ScanPlan, values)``, chooses each batch from what it
  has measured (``uncertainty``; ``rl``, whose PPO policy scores patches through
  `adaptive.PatchChooser`). Reconstructions are registered in `registry.RECONSTRUCTIONS`.
- ``env``: the env the RL policy trains on; ``bench``: ``emauto bench sparse-scan``;
  ``run``: ``emauto scan`` on a microscope; ``cli``: the commands; ``completion_training``:
  the completion network's examples (the network is `emauto.models.completion`).
"""
