"""Region search: find regions of interest on a survey field (`emauto/RegionSearch-v0`).

- The one interface is `policies.base.RegionSearchPolicy` (``reset`` / ``act`` /
  ``observe``), run by the one episode loop `policies.base.run_episode`; every method, the
  baselines too, is a policy registered in `policies.POLICIES` (channelling, rl, dkl,
  survey, raster, random).
- ``env``: the env; ``bench``: ``emauto bench region-search``; ``cli``: the commands;
  ``particles``: particles of an overview and their zone-axis model; ``channelling``: the
  overview mosaic and the model's fit (``channelling_model``: the shipped fit).
"""
