"""Guided backpropagation (Springenberg et al. 2015, "Striving for Simplicity").

At every rectifier the backward signal is kept only where both the forward input and the
incoming gradient are positive: R_in = max(R_out · f'(x), 0).
"""

from __future__ import annotations

from core.methods import Attribution
from workers.methods.mechanics.signal_projection import project
from workers.methods.task import Task


def run(task: Task) -> Attribution:
    return project(task, "guided")
