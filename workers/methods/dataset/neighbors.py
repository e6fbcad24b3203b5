"""Nearest neighbours of an image among a dataset's images in CNN-code space (Krizhevsky et al. 2012, fig. 4).

Codes are a layer's activations pooled over positions (default: the global-average-pooled last
spatial layer). Distances: cosine, 1 − a·b / (‖a‖‖b‖) (0 for the same direction, up to 2), or L2,
‖a − b‖ in the layer's units. The dataset streams through once; only the k nearest so far are kept.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.methods import DatasetTask, Output
from workers.methods.dataset.embedding import codes

TILE = 128
GAP = 6


def distances(query: np.ndarray, candidates: np.ndarray, metric: str) -> np.ndarray:
    """Distance from a D-vector `query` to each row of N×D `candidates` (float64 arithmetic)."""
    q, c = query.astype(np.float64), candidates.astype(np.float64)
    if metric == "l2":
        return np.sqrt(np.maximum(((c - q) ** 2).sum(axis=1), 0.0))
    norms = np.linalg.norm(c, axis=1) * np.linalg.norm(q)
    cosine = np.where(norms > 0, c @ q / np.where(norms > 0, norms, 1.0), 0.0)
    return np.clip(1.0 - cosine, 0.0, 2.0)


class Nearest:
    """The k smallest distances seen so far with their image indices (ties: lower index first)."""

    def __init__(self, k: int):
        self.k = k
        self.distance = np.empty(0, np.float64)
        self.index = np.empty(0, np.int64)

    def update(self, distance: np.ndarray, index: np.ndarray) -> None:
        d = np.concatenate([self.distance, distance])
        i = np.concatenate([self.index, index.astype(np.int64)])
        keep = np.lexsort((i, d))[:self.k]
        self.distance, self.index = d[keep], i[keep]


def strip(query: np.ndarray, neighbours: list[np.ndarray]) -> np.ndarray:
    """The query, a wider gap, then the neighbours nearest first, each TILE pixels square (H×W×3 uint8)."""
    def tile(pixels: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(pixels).resize((TILE, TILE), Image.BILINEAR, reducing_gap=2.0))

    width = TILE + 3 * GAP + len(neighbours) * (TILE + GAP)
    canvas = np.full((TILE + 2 * GAP, width, 3), 255, np.uint8)
    canvas[GAP:GAP + TILE, GAP:GAP + TILE] = tile(query)
    canvas[:, TILE + 2 * GAP - 2:TILE + 2 * GAP] = 160  # a rule between the query and its neighbours
    for n, pixels in enumerate(neighbours):
        left = TILE + 3 * GAP + n * (TILE + GAP)
        canvas[GAP:GAP + TILE, left:left + TILE] = tile(pixels)
    return canvas


def run(task: DatasetTask) -> Output:
    """Tables `neighbors` [{image_index, name, distance}] nearest first, pictures `neighbors` (the query as the
    model sees it, then them) and arrays `input` (the query's exact 1×C×H×W model input)."""
    params, feed, image = task.params, task.feed, task.query
    query = codes(feed.forward(image.x, (params.layer,))[params.layer], params.pool)[0]
    nearest = Nearest(params.k)
    for batch in feed.batches([params.layer], extra_steps=feed.steps_for(min(params.k, len(feed)))):
        found = codes(batch.features[params.layer], params.pool)
        nearest.update(distances(query, found, params.metric), batch.indices)
    listed = [{"image_index": int(i), "name": feed.name(int(i)), "distance": float(d)}
              for d, i in zip(nearest.distance, nearest.index)]
    pixels = dict(feed.images(nearest.index.tolist()))
    return Output(
        tables={"neighbors": listed},
        pictures={"neighbors": strip(image.fitted, [pixels[int(i)] for i in nearest.index])},
        arrays={"input": image.x},
        metrics={"layer": params.layer, "metric": params.metric, "pool": params.pool, "images": len(feed)})
