"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci 2022), and its random control.

A map is judged by what happens to the target's probability when the pixels it ranks highest are removed
(MoRF: most relevant first) and when those it ranks lowest are (LeRF). Deleting pixels to black or to a blur
puts the image far from anything the model was trained on, and the shape of the hole then leaks information:
a scattered mask breaks a prediction faster than removing any coherent region, so pixel-level noise "wins".
ROAD instead fills removed pixels by noisy linear imputation (`imputation.impute`: each one the weighted mean
of its eight neighbours, solved jointly, plus a little Gaussian noise), which keeps the image natural and the
mask's shape uninformative. `road_score` = mean over the fractions of (LeRF − MoRF) / 2, pytorch-grad-cam's
ROADCombined: high when removing the top of the ranking hurts and removing its bottom does not.

A score alone does not say whether a map is better than chance at its own grain (a 7×7 CAM removes blocks, a
pixel map scatters), so random maps at the attribution's own grid (h×w for CAMs, H×W for pixel maps, one value
per superpixel for Kernel SHAP) are scored the same way, in the same batches of forward passes; the map
`beats_random` when its score is above their mean by more than two (sample) standard deviations.

The ranking map is what a person sees: |attribution| summed over channels for a map in the model's input space
(C×H×W, a gradient map), the map itself, bilinearly resized, for a one-channel map (1×h×w: CAMs, RISE, SHAP).
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from PIL import Image

from core.methods import Classify, Progress, no_progress
from workers.methods.mechanics.imputation import impute

CURVES = ("morf", "lerf")


def ranking_map(attribution: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """H×W float32 (input_shape: the model input's 1×C×H×W): the map a person sees, which ROAD ranks pixels by."""
    channels, height, width = input_shape[-3:]
    values = np.asarray(attribution, np.float32)
    if values.shape == (channels, height, width) and channels > 1:
        return np.abs(values).sum(axis=0, dtype=np.float32)
    return resized(values.sum(axis=0, dtype=np.float32), height, width)


def resized(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """An h×w float map at H×W, bilinearly (as the heatmap shows it); unchanged when it is already that size."""
    if grid.shape == (height, width):
        return np.ascontiguousarray(grid, np.float32)
    return np.asarray(Image.fromarray(np.asarray(grid, np.float32)).resize((width, height), Image.BILINEAR),
                      np.float32)


def random_map(grain: tuple[int, int] | np.ndarray, input_shape: tuple[int, ...],
               rng: np.random.Generator) -> np.ndarray:
    """A random ranking map at a map's own grain: one uniform value per superpixel when `grain` is an H×W array of
    superpixel labels, else per cell of an h×w grid (resized as `ranking_map` resizes a map)."""
    height, width = input_shape[-2:]
    if isinstance(grain, np.ndarray):
        labels = grain.astype(np.int64)
        return rng.random(int(labels.max()) + 1).astype(np.float32)[labels]
    return resized(rng.random(tuple(grain)).astype(np.float32), height, width)


def removed(ranking: np.ndarray, curve: str, fraction: float) -> np.ndarray:
    """H×W bool: the pixels ROAD removes at `fraction`: those ranked at or above the (1 − f) quantile (MoRF), or
    at or below the f quantile (LeRF), as numpy's percentile interpolates it."""
    if curve == "morf":
        return ranking >= np.percentile(ranking, round(100 * (1 - fraction), 9))
    return ranking <= np.percentile(ranking, round(100 * fraction, 9))


def imputing_threads() -> int:
    """Threads that impute copies at once: the cores this process may use, at most four. The solver's kernels and
    the model's runs release the GIL, so the copies impute in parallel, one per core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 4))


def probabilities(x: np.ndarray, rankings: list[np.ndarray], target: int, classify: Classify, *,
                  fractions: list[float], noise: float, seed: int, batch: int,
                  progress: Progress = no_progress) -> np.ndarray:
    """maps × 2 (MoRF, LeRF) × fractions: the target's probability after each removal, for each ranking map,
    `batch` imputed copies per `classify` call. Copies are imputed on `imputing_threads()` threads, the next
    batch's while the model runs the current one. Each copy's noise has its own seed (`seed`, map, curve,
    fraction), so a map's curves do not depend on how many others are scored, nor on the order copies are made."""
    plan = [(m, c, f) for m in range(len(rankings)) for c in range(len(CURVES)) for f in range(len(fractions))]
    chunks = [plan[start:start + batch] for start in range(0, len(plan), batch)]
    out = np.empty((len(rankings), len(CURVES), len(fractions)), np.float64)

    def copy(m: int, c: int, f: int) -> np.ndarray:
        return impute(x[0], removed(rankings[m], CURVES[c], fractions[f]), noise=noise,
                      rng=np.random.default_rng([seed, m, c, f]))

    with ThreadPoolExecutor(max_workers=imputing_threads(), thread_name_prefix="road-impute") as pool:
        pending: list[Future] = [pool.submit(copy, *item) for item in chunks[0]]
        try:
            for done, chunk in enumerate(chunks, 1):
                ready = np.stack([made.result() for made in pending])
                if done < len(chunks):
                    pending = [pool.submit(copy, *item) for item in chunks[done]]
                for (m, c, f), p in zip(chunk, classify(ready)[:, target], strict=True):
                    out[m, c, f] = p
                progress(done, len(chunks))
        except BaseException:  # cancelled or timed out at a step: the copies not started are not made
            for made in pending:
                made.cancel()
            raise
    return out


def score(morf: np.ndarray, lerf: np.ndarray) -> float:
    """ROADCombined: mean over the fractions of (LeRF − MoRF) / 2."""
    return float(np.mean(np.asarray(lerf) - np.asarray(morf)) / 2)


def evaluate(x: np.ndarray, ranking: np.ndarray, grain: tuple[int, int] | np.ndarray, target: int,
             classify: Classify, *, fractions: list[float], noise: float, random_maps: int, seed: int, batch: int,
             progress: Progress = no_progress) -> dict:
    """One map's ROAD with its random control at `grain` (`random_map`): {fractions, morf, lerf, noise, score,
    random: {maps, grain, scores, mean, sd}, beats_random} (JSON-able; `evaluation.json` holds it under `road`)."""
    maps_rng = np.random.default_rng([seed, 1 << 20])
    controls = [random_map(grain, x.shape, maps_rng) for _ in range(random_maps)]
    probs = probabilities(x, [ranking, *controls], target, classify, fractions=list(fractions), noise=noise,
                          seed=seed, batch=batch, progress=progress)
    own = score(probs[0, 0], probs[0, 1])
    scores = [score(probs[m, 0], probs[m, 1]) for m in range(1, len(probs))]
    mean = float(np.mean(scores)) if scores else None
    sd = float(np.std(scores, ddof=1)) if len(scores) > 1 else (0.0 if scores else None)
    grain = "superpixels" if isinstance(grain, np.ndarray) else [int(n) for n in grain]
    return {"fractions": list(fractions), "morf": probs[0, 0].tolist(), "lerf": probs[0, 1].tolist(),
            "noise": noise, "score": own,
            "random": {"maps": random_maps, "grain": grain, "scores": scores, "mean": mean, "sd": sd},
            "beats_random": None if mean is None else bool(own > mean + 2 * sd)}
