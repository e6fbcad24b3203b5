"""Visualization methods: plain functions `run(task) -> result`, one module per method.

No Redis, HTTP, files or printing here: a method gets tensors and params (a `Task`) and returns
arrays and metrics. Shared mechanics live once: `backprop` (one backward pass with swappable
rectifier rules, objectives, hooks that never outlive the call).
"""
