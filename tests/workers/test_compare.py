"""compare: each method's scores are those of its own map scored alone (ROAD with its random control, then
deletion/insertion), the ranking follows `road_score`, the deletion/insertion random reference is the seeded
pixel-level map; and the params of the judging kinds refuse what they cannot run."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from core.kinds.registry import KINDS
from core.methods import ForwardTask
from workers.methods.attribution import gradcam, rise, saliency
from workers.methods.mechanics import deletion_insertion, faithfulness, pictures
from workers.methods.task import Task
from workers.methods.trust import compare

METHODS = ["saliency", "gradcam", "rise"]


def test_scores_ranking_and_reference(small_net, small_input, small_classify):
    record = small_net.record
    raw = {"methods": METHODS, "target": 4, "evaluation_steps": 10, "seed": 9, "road_fractions": [0.3, 0.7],
           "road_random_maps": 3, "method_params": {"rise": {"masks": 40, "cell": 4}}}
    p = KINDS["compare"].params(**raw).resolve(record)
    assert p.method_params["gradcam"] == {"layer": "relu2", "seed": 0}  # resolved: the Job shows what runs
    out = compare.run(Task(small_net, small_input, p, classify=small_classify, forward_batch=8))
    rows = {row["method"]: row for row in out.tables["ranking"]}
    x = small_input.numpy()

    def scored(attribution):
        return deletion_insertion.evaluate(x, attribution, 4, small_classify, record, steps=10, batch=3,
                                           baseline=p.deletion_baseline)

    def road_scored(out, params):
        return faithfulness.evaluate(x, out, 4, small_classify, record, params, batch=5)["road"]

    inner = {m: p.inner(m).resolve(record) for m in METHODS}
    maps = {"saliency": saliency.run(Task(small_net, small_input, inner["saliency"])),
            "gradcam": gradcam.run(Task(small_net, small_input, inner["gradcam"])),
            "rise": rise.run(ForwardTask(record, inner["rise"], x, small_classify, batch=5))}
    for method, made in maps.items():
        table = scored(made.attribution)
        assert rows[method]["deletion_auc"] == pytest.approx(table["deletion_auc"], abs=1e-6)
        assert rows[method]["insertion_auc"] == pytest.approx(table["insertion_auc"], abs=1e-6)
        road = road_scored(made, inner[method])
        assert len(road["morf"]) == 2 and road["random"]["maps"] == 3
        assert rows[method]["road_score"] == pytest.approx(road["score"], abs=1e-6)
        assert rows[method]["road_random_mean"] == pytest.approx(road["random"]["mean"], abs=1e-6)
        assert rows[method]["beats_random"] == road["beats_random"]
        assert rows[method]["seconds"] >= 0
    ranking = out.tables["ranking"]
    scores = [row["road_score"] for row in ranking]
    assert scores == sorted(scores, reverse=True) and [row["rank"] for row in ranking] == [1, 2, 3]
    random = scored(np.random.default_rng(9).random((1, 16, 16)).astype(np.float32))
    assert out.metrics["random_deletion_auc"] == pytest.approx(random["deletion_auc"], abs=1e-6)
    assert out.metrics["best"] == ranking[0]["method"] and out.metrics["target"] == 4
    side = pictures.tile_side(3)
    assert out.pictures["panel"].shape == (side + pictures.CAPTION_PX + 2 * pictures.GAP,
                                           3 * (side + pictures.GAP) + pictures.GAP, 3)


def test_without_an_onnx_runtime_forward_compare_uses_the_network(small_net, small_input, small_classify):
    p = KINDS["compare"].params(methods=["saliency"], evaluation_steps=4).resolve(small_net.record)
    ours = compare.run(Task(small_net, small_input, p, classify=small_classify)).tables["ranking"][0]
    own = compare.run(Task(small_net, small_input, p)).tables["ranking"][0]
    assert own["deletion_auc"] == pytest.approx(ours["deletion_auc"], abs=1e-5)


@pytest.mark.parametrize("kind, raw, says", [
    ("compare", {"methods": ["saliency", "saliency"]}, "listed once"),
    ("compare", {"methods": ["saliency"], "method_params": {"gradcam": {}}}, "not compared"),
    ("compare", {"methods": ["guided_backprop"], "method_params": {"guided_backprop": {"layer": "relu2", "channel": 0}}},
     "not of a layer's unit"),
    ("compare", {"method_params": {"saliency": {"target": 1}}}, "may not set target"),
    ("compare", {"methods": ["occlusion"]}, "literal_error"),
    ("sanity_check", {"method_params": {"evaluate": True}}, "may not set evaluate"),
    ("sanity_check", {"method": "smoothgrad", "method_params": {"samples": 0}}, "greater than or equal to 1"),
    ("sanity_check", {"method": "rise", "method_params": {"bogus": 1}}, "extra"),
])
def test_judging_kinds_refuse_params_they_cannot_run(kind, raw, says):
    with pytest.raises(ValidationError) as caught:
        KINDS[kind].params(**raw)
    assert says in str(caught.value)


def test_inner_params_are_checked_against_the_model(small_net):
    with pytest.raises(ValueError, match="no layer"):
        KINDS["sanity_check"].params(method="gradcam", method_params={"layer": "nope"}).resolve(small_net.record)
    with pytest.raises(ValueError):
        KINDS["compare"].params(methods=["saliency"], target="no such class").resolve(small_net.record)


def test_the_attribution_kinds_are_those_of_the_registry():
    from core.kinds.trust import ATTRIBUTION_KINDS
    from core.methods import Attribution

    assert set(ATTRIBUTION_KINDS) == {name for name, kind in KINDS.items() if kind.returns is Attribution}
