"""Attribution methods side by side on one image and target, ranked by how faithful their maps are.

Each method makes its map (timed: `seconds`, the method alone), which is then scored (`faithfulness`) on the
model's forward pass (ONNX Runtime in a job): ROAD against random maps of the method's own grain, and
deletion/insertion (Petsiuk et al. 2018). The ranking orders methods by `road_score`, highest first: removing
what a faithful map ranks highest hurts the prediction, removing what it ranks lowest does not. A method that
does not beat its random control (`beats_random`) is not telling which regions the model uses at its grain. A
random map at pixel level, seeded, is also scored by deletion/insertion, the level those AUCs should beat.
"""

from __future__ import annotations

import time

import numpy as np

from core.kinds.params import Workload
from core.methods import Output, progress_part
from core.preprocessing import from_tensor
from workers.methods.mechanics import deletion_insertion, faithfulness
from workers.methods.mechanics.attributions import attribute, torch_classify
from workers.methods.mechanics.pictures import captioned_row, overlay, tile_side
from workers.methods.task import Task


def rank(rows: list[dict]) -> list[dict]:
    """Rows sorted by `road_score` (best first), each with its `rank`."""
    ordered = sorted(rows, key=lambda row: -row["road_score"])
    for position, row in enumerate(ordered, 1):
        row["rank"] = position
    return ordered


def run(task: Task) -> Output:
    """`ranking` table ({method, road_score, road_random_mean, road_random_sd, beats_random, deletion_auc,
    insertion_auc, seconds, rank}, best first), `panel` picture (each map over the image, in rank order), metrics:
    `target`, `best`, and the pixel-level random map's `random_deletion_auc` and `random_insertion_auc`."""
    p, network, record = task.params, task.network, task.network.record
    x = task.x.detach()
    x_np = x.cpu().numpy()
    classify = task.classify or torch_classify(network)
    work = Workload(record, batch=task.batch, forward_batch=task.forward_batch)
    probs = classify(x_np)[0]
    target = int(probs.argmax()) if p.target is None else record.class_index(p.target)
    inners = {method: p.inner(method).model_copy(update={"target": target}).resolve(record) for method in p.methods}
    total, done = p.total_steps(work), 0
    rows, heats = [], {}
    for method, params in inners.items():
        steps, scoring = params.method_steps(work), params.scoring_steps(work)
        started = time.perf_counter()
        out = attribute(method, params, network, x, classify, batch=task.batch, forward_batch=task.forward_batch,
                        model=task.model,
                        progress=progress_part(task.progress, done, steps, total))
        seconds = time.perf_counter() - started
        done += steps
        table = faithfulness.evaluate(x_np, out, target, classify, record, params, batch=task.forward_batch,
                                      progress=progress_part(task.progress, done, scoring, total))
        done += scoring
        rows.append({"method": method, **faithfulness.metrics_of(table), "seconds": round(seconds, 4)})
        heats[method] = out.heat
    noise = np.random.default_rng(p.seed).random((1, *x_np.shape[2:])).astype(np.float32)
    random = deletion_insertion.evaluate(x_np, noise, target, classify, record, steps=p.evaluation_steps,
                                         baseline=p.deletion_baseline, batch=task.forward_batch,
                                         progress=progress_part(task.progress, done, total - done, total))
    ranking = rank(rows)
    metrics = {"target": target, "target_label": record.label(target), "target_probability": float(probs[target]),
               "best": ranking[0]["method"], "random_deletion_auc": random["deletion_auc"],
               "random_insertion_auc": random["insertion_auc"]}
    return Output(pictures={"panel": panel(from_tensor(x_np[0], record), ranking, heats)}, tables={"ranking": ranking},
                  metrics=metrics)


def panel(fitted: np.ndarray, ranking: list[dict], heats: dict[str, np.ndarray]) -> np.ndarray:
    """Each method's heat over the image, in rank order, captioned with its rank, name and AUCs."""
    side = tile_side(len(ranking))
    tiles = [overlay(fitted, heats[row["method"]], side) for row in ranking]
    captions = [(f"{row['rank']}. {row['method']}", f"ROAD {row['road_score']:+.3f}"
                 + ("" if row["beats_random"] is None else " > random" if row["beats_random"] else " ~ random"))
                for row in ranking]
    return captioned_row(tiles, captions)
