"""Calibrating the twin from a recorded session (`emauto calibrate SESSION --out sim.yaml`).

`plan` drives any Microscope through a short calibration plan (repeat frames at two doses, a
defocused pattern under probe shifts, a C10 step read at increasing delays, +/- steps on
each corrector axis, waits for drift), labelling each call in the session it is recorded
into. `estimators` are small functions, one per instrument parameter, each returning an
`Estimate` (value, standard uncertainty, unit). `fit` reads a session back, runs them and
builds the partial `SimConfig` that ``sim://?config=FILE`` and training accept.

This package sits above the tasks: it reuses the probe-shift measurement of probe tuning
(`emauto.tasks.probe_tuning.policies.probe_shift`) for the corrector axes' signs.
"""
