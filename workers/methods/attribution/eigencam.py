"""Eigen-CAM (Muhammad & Yeasin 2020).

The layer's activations as positions × channels (hw×K), centred over positions, projected on their first
principal component (the first right singular vector): map = ReLU(projection), h×w. No gradient and no class:
the map is the same whatever the target. A singular vector's sign is arbitrary; it is taken here so that the
projection grows with the activations' total at each position (pytorch-grad-cam keeps LAPACK's sign).
"""

from __future__ import annotations

import numpy as np

from core.methods import Attribution, ForwardTask
from workers.methods.mechanics.forward_cam import forward_cam


def principal_projection(task: ForwardTask, activations: np.ndarray, target: int, logits: np.ndarray) -> np.ndarray:
    channels, height, width = activations.shape[1:]
    positions = activations[0].reshape(channels, -1).T.astype(np.float64)
    centred = positions - positions.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projection = centred @ vt[0]
    if projection @ positions.sum(axis=1) < 0:
        projection = -projection
    task.progress(1, 1)
    return projection.reshape(1, height, width)


def run(task: ForwardTask) -> Attribution:
    return forward_cam(task, principal_projection)
