"""Probe tuning: correct the probe's aberrations from Ronchigrams (`emauto/ProbeTuning-v0`).

- ``env``: the env (actions move aberration knobs, observations are Ronchigrams);
  ``config``: its models; ``observations``: Ronchigram images for policies.
- ``policies``: the one interface, `policies.base.TuningPolicy` (``reset`` / ``suggest`` /
  ``ingest``), the one episode loop `policies.base.run_episode`, and every policy by name in
  `policies.registry.POLICIES` (probe shift, CNN, CNN then shift, BO, simplex, RL, random).
- ``plan``: the daemon's ``align_probe`` step; ``bench``: ``emauto bench probe-tuning``;
  ``cli``: ``emauto dataset | train | evaluate``; ``estimator_data``: the estimator's twin
  data; ``minari``: offline-RL export of recorded sessions.
"""
