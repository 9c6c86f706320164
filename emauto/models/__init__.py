"""Learned models: estimator, classifier and few-shot head, completion network.

Their networks, training loops and shipped weights (`emauto.models.weights`). A model
imports no task: data that only a task can make is made in the task and passed in.
"""
