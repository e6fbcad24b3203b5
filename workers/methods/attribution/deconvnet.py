"""Deconvnet projection (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks").

The rectifier is applied to the backward signal only, R_in = ReLU(R_out), whatever the forward
input was; max-pooling routes the signal through the recorded argmax positions (the switches).
With `layer` + `channel` (+ `position`, default the channel's strongest activation) one feature
map's unit is projected back to pixels, as in the paper's figures.
"""

from __future__ import annotations

from core.methods import Attribution
from workers.methods.mechanics.signal_projection import project
from workers.methods.task import Task


def run(task: Task) -> Attribution:
    return project(task, "deconvnet")
