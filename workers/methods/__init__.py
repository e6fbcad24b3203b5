"""Visualization methods: plain functions `run(task) -> result`, one module per kind.

No Redis, HTTP, files or printing here: a method gets tensors and params (a `Task`) and returns
arrays and metrics. The kinds sit in one folder per family, as `core/kinds/` declares them
(`attribution/`, `making/`, `dataset/`, `trust/`, `atlas/`): kind `k` of family `f` is
`workers/methods/f/k.py`. What they share lives once in `mechanics/` (a backward pass with swappable
rectifier rules, the ascent loop, the faithfulness scores), and `task.py` is what torch methods receive.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from core.kinds.kind import Kind


def method_of(kind: Kind) -> Callable:
    """The function that runs `kind` (its module is imported on first use)."""
    module, _, function = kind.method.partition(":")
    return getattr(importlib.import_module(module), function)
