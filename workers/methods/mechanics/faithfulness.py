"""The faithfulness scores of an attribution map: ROAD with its random control first (`road`), then
deletion/insertion (`deletion_insertion`), on the model's forward pass (ONNX Runtime in a job).

ROAD is the score to read; deletion/insertion stays beside it, second, with its baseline named, because it is
what earlier papers and tools report. The map's own files (`attribution.npy`, `heatmap.png`, `ranking.npy`)
exist before any of this runs: the runner publishes them first (`workers.execute`), so a client waiting for a
map does not wait for its scores.
"""

from __future__ import annotations

import numpy as np

from core.methods import Attribution, Classify, Progress, no_progress, progress_part
from core.model_record import ModelRecord
from workers.methods.mechanics import deletion_insertion, road

METRICS = ("road_score", "road_random_mean", "road_random_sd", "beats_random", "deletion_auc", "insertion_auc")


def ranking(out: Attribution, x: np.ndarray) -> np.ndarray:
    """`out`'s ranking map (H×W float32), kept in `out.arrays` as `ranking` (the artifact `ranking.npy`)."""
    if "ranking" not in out.arrays:
        out.arrays["ranking"] = road.ranking_map(out.attribution, x.shape)
    return out.arrays["ranking"]


def grain(out: Attribution) -> tuple[int, int] | np.ndarray:
    """The grid a map was made at, which its random control shares: its superpixels (Kernel SHAP's `segments`),
    the grid it declares (RISE's cells), or its array's h×w (a CAM's layer grid, a pixel map's H×W)."""
    if "segments" in out.arrays:
        return np.asarray(out.arrays["segments"])
    return out.grain or tuple(out.attribution.shape[-2:])


def evaluate(x: np.ndarray, out: Attribution, target: int, classify: Classify, record: ModelRecord, params, *,
             batch: int, progress: Progress = no_progress) -> dict:
    """The scores of one map of class `target`: {target, ranking, road, deletion/insertion's fields} (what
    `evaluation.json` holds), in the steps `params.scoring_batches` declares: ROAD's batches, then deletion and
    insertion's."""
    road_steps, deletion_steps = params.scoring_batches(batch)
    total = road_steps + deletion_steps
    road_table = road.evaluate(x, ranking(out, x), grain(out), target, classify, fractions=params.road_fractions,
                               noise=params.road_noise, random_maps=params.road_random_maps, seed=params.seed,
                               batch=batch, progress=progress_part(progress, 0, road_steps, total))
    table = deletion_insertion.evaluate(x, out.attribution, target, classify, record, steps=params.evaluation_steps,
                                        baseline=params.deletion_baseline, batch=batch,
                                        progress=progress_part(progress, road_steps, total - road_steps, total))
    return {"target": target, "ranking": "ranking.npy", "road": road_table, **table}


def metrics_of(table: dict) -> dict:
    """The metrics a scored map reports, from its `evaluate` table."""
    random = table["road"]["random"]
    return {"road_score": table["road"]["score"], "road_random_mean": random["mean"], "road_random_sd": random["sd"],
            "beats_random": table["road"]["beats_random"], "deletion_auc": table["deletion_auc"],
            "insertion_auc": table["insertion_auc"]}


def score(out: Attribution, x: np.ndarray, params, record: ModelRecord, classify: Classify, *, batch: int,
          progress: Progress = no_progress) -> Attribution:
    """`out` with the metrics of `METRICS` and table `evaluation`, for params with `evaluate` true. A map of a
    layer's unit is not scored (the scores follow a class's probability): its metrics are null."""
    ranking(out, x)
    if not params.evaluate:
        return out
    if not params.explains_class():
        out.metrics.update(dict.fromkeys(METRICS))
        return out
    table = evaluate(x, out, int(out.metrics["target"]), classify, record, params, batch=batch, progress=progress)
    out.metrics.update(metrics_of(table))
    out.tables["evaluation"] = table
    return out
