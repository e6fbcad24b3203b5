"""A 2-D map of a dataset's CNN codes, with thumbnails placed on a grid by their position.

CNN codes are a layer's activations pooled over positions (default: the global-average-pooled last
spatial layer, the penultimate representation). They are reduced to 2-D by t-SNE (van der Maaten &
Hinton 2008; scikit-learn, after PCA to at most 50 dimensions as its documentation advises), PCA,
or UMAP (McInnes et al. 2018), and the map shows each image in the grid cell nearest its point, as
in the well-known t-SNE maps of CNN codes (Karpathy 2014). Points are scaled to [0, 1] per axis.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from core.methods import DatasetTask, Output

MAX_PICTURE_PX = 2048  # a map of 5,000 photos is then about 8 MB of PNG
OPTIMAL_ASSIGNMENT_MAX = 1500  # points up to which grid cells are assigned optimally (Hungarian)


def codes(maps: np.ndarray, pool: str = "mean") -> np.ndarray:
    """N×C×h×w activations → N×C codes (mean or max over positions)."""
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1)
    return (flat.max(axis=2) if pool == "max" else flat.mean(axis=2)).astype(np.float32)


def unit_scale(points: np.ndarray) -> np.ndarray:
    """Each axis scaled to [0, 1] (a constant axis becomes 0.5)."""
    low, high = points.min(axis=0), points.max(axis=0)
    span = high - low
    return np.where(span > 0, (points - low) / np.where(span > 0, span, 1), 0.5)


def reduce(x: np.ndarray, method: str, *, perplexity: float | None = None, seed: int = 0,
           threads: int = 1) -> np.ndarray:
    """N×D codes → N×2 points in [0, 1]² by `method` (tsne, pca, umap) on at most `threads` BLAS/OpenMP
    threads (unbounded, OpenMP's spinning threads on a shared machine stall even a t-SNE of a dozen points);
    too few images for a method fall back to PCA (or a single point)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        return _reduce(x.astype(np.float64), method, perplexity, seed)


def _reduce(x: np.ndarray, method: str, perplexity: float | None, seed: int) -> np.ndarray:
    n = x.shape[0]
    if n == 1:
        return np.full((1, 2), 0.5)
    if method == "pca" or n < 5 or np.allclose(x, x[0]):
        return unit_scale(_pca(x, 2))
    if method == "umap":
        import umap

        return unit_scale(umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed,
                                    n_jobs=1).fit_transform(x))
    from sklearn.manifold import TSNE

    reduced = _pca(x, min(50, n, x.shape[1]))
    chosen = perplexity if perplexity is not None else min(30.0, (n - 1) / 3)
    chosen = min(chosen, n - 1.0)
    return unit_scale(TSNE(n_components=2, perplexity=chosen, init="pca", learning_rate="auto",
                           random_state=seed, n_jobs=1).fit_transform(reduced))


def warm_umap(points: int = 12, features: int = 32) -> None:
    """Fit UMAP once on a small random array with the parameters `reduce` uses, so that numba compiles
    (or loads from its on-disk cache) UMAP's kernels now instead of inside the first umap job.

    Covers the exact-neighbour path UMAP takes below 4,096 points; larger datasets also compile
    pynndescent's approximate search in their first job. No thread-pool limits are touched (they are
    process-wide, and this runs beside jobs in a background thread)."""
    _reduce(np.random.default_rng(0).random((points, features)), "umap", None, 0)


def _pca(x: np.ndarray, components: int) -> np.ndarray:
    """Projection of centred x on its top principal axes (N×components; zero-padded when rank is lower)."""
    centred = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    out = u[:, :components] * s[:components]
    return np.pad(out, ((0, 0), (0, components - out.shape[1])))


def grid_cells(points: np.ndarray, cols: int, rows: int) -> np.ndarray:
    """One distinct grid cell (row, col) per point, near its position: optimal assignment (squared
    distance) for up to OPTIMAL_ASSIGNMENT_MAX points, else greedy nearest free cell."""
    centres = np.stack(np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols,
                                   indexing="ij"), axis=-1).reshape(-1, 2)  # (y, x) of each cell
    targets = points[:, ::-1]  # points are (x, y)
    if len(points) <= OPTIMAL_ASSIGNMENT_MAX:
        from scipy.optimize import linear_sum_assignment

        cost = ((targets[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        _, cell = linear_sum_assignment(cost)
    else:
        cell = np.empty(len(points), np.int64)
        free = np.ones(len(centres), bool)
        for i in np.argsort(((targets - 0.5) ** 2).sum(axis=1)):  # centre outwards
            distance = ((centres - targets[i]) ** 2).sum(axis=1)
            distance[~free] = np.inf
            cell[i] = int(distance.argmin())
            free[cell[i]] = False
    return np.stack(np.divmod(cell, cols), axis=1)


def thumb_side(images: int) -> int:
    """Pixels per thumbnail so that the map stays within MAX_PICTURE_PX (16 to 128)."""
    return int(np.clip(MAX_PICTURE_PX // max(math.ceil(math.sqrt(images)), 1), 16, 128))


def thumbnail(pixels: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize((side, side), Image.BILINEAR, reducing_gap=2.0))


def map_picture(points: np.ndarray, thumbs: np.ndarray) -> np.ndarray:
    """Thumbnails (N×s×s×3) in a near-square grid, each in the free cell nearest its point (H×W×3 uint8,
    white where no image falls)."""
    n, side = thumbs.shape[0], thumbs.shape[1]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.full((rows * side, cols * side, 3), 255, np.uint8)
    for (row, col), thumb in zip(grid_cells(points, cols, rows), thumbs):
        canvas[row * side:(row + 1) * side, col * side:(col + 1) * side] = thumb
    return canvas


def run(task: DatasetTask) -> Output:
    """Tables `points` [{image_index, x, y}] (x, y in [0, 1], y down), pictures `map` (thumbnails on a grid);
    metrics: layer, method, images, code size."""
    params, feed = task.params, task.feed
    side = thumb_side(len(feed))
    parts, indices, thumbs = [], [], []
    for batch in feed.batches([params.layer]):
        parts.append(codes(batch.features[params.layer], params.pool))
        indices.extend(int(i) for i in batch.indices)
        thumbs.extend(thumbnail(p, side) for p in batch.pixels)
    x = np.concatenate(parts)
    points = reduce(x, params.method, perplexity=params.perplexity, seed=params.seed, threads=task.threads)
    listed = [{"image_index": i, "x": float(px), "y": float(py)} for i, (px, py) in zip(indices, points)]
    return Output(
        tables={"points": listed},
        pictures={"map": map_picture(points, np.stack(thumbs))},
        metrics={"layer": params.layer, "method": params.method, "images": len(feed), "code_size": int(x.shape[1])})
