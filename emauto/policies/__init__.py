"""Policies that drive a microscope through an env: RL, Bayesian optimisation, CNN, baselines."""
