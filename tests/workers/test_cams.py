"""The CAM family equals pytorch-grad-cam's class of the same name: the raw map (after ReLU, before scaling) on the
same layer and target, on the small net and on the built-in EfficientNet-Lite0; the gradient CAMs on the torch
twin, the forward-only ones (Eigen-CAM, Score-CAM, Ablation-CAM) on ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.kinds.params import Workload
from core.kinds.registry import KINDS
from core.methods import ForwardTask
from workers.methods import method_of
from workers.methods.mechanics.attributions import TorchLayers
from workers.methods.task import Task

GRADIENT_CAMS = {"gradcam": "GradCAM", "gradcam_plus_plus": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
                 "layercam": "LayerCAM", "hirescam": "HiResCAM"}


def reference_map(library, module, layer_module, x, target: int) -> np.ndarray:
    """pytorch-grad-cam's raw map: `get_cam_image` on the activations and gradients it captured, ReLU'd."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with library(model=module, target_layers=[layer_module]) as cam:
        cam(input_tensor=x.clone().requires_grad_(), targets=[ClassifierOutputTarget(target)])
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = cam.get_cam_image(x, layer_module, None, activations, grads, eigen_smooth=False)
    return np.maximum(raw, 0)


def ours(network, x, kind: str, **params):
    resolved = KINDS[kind].params(**params).resolve(network.record)
    return method_of(KINDS[kind])(Task(network, x, resolved))


def assert_same_map(out, expected: np.ndarray) -> None:
    scale = float(np.abs(expected).max())
    assert scale > 0, "the reference map is empty: the comparison would say nothing"
    np.testing.assert_allclose(out.attribution, expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("kind", list(GRADIENT_CAMS))
@pytest.mark.parametrize("layer", ["relu2", "relu1"])
def test_gradient_cams_equal_pytorch_grad_cam_on_the_small_net(pytorch_grad_cam, small_net, small_input, kind, layer):
    out = ours(small_net, small_input, kind, target=3, layer=layer)
    library = getattr(pytorch_grad_cam, GRADIENT_CAMS[kind])
    assert_same_map(out, reference_map(library, small_net.module, small_net.module.get_submodule(layer), small_input, 3))
    assert out.attribution.shape == (1, *small_net.record.layer(layer).shape[1:])
    assert out.heat.max() == pytest.approx(1.0) and out.metrics["layer"] == layer


@pytest.mark.parametrize("kind", list(GRADIENT_CAMS))
def test_gradient_cams_equal_pytorch_grad_cam_on_the_builtin_model(pytorch_grad_cam, lite0, cat, kind):
    out = ours(lite0, cat, kind)
    layer = out.metrics["layer"]
    assert layer == lite0.record.layers[-1].name
    library = getattr(pytorch_grad_cam, GRADIENT_CAMS[kind])
    assert_same_map(out, reference_map(library, lite0.module, lite0.layer_module(layer), cat, out.metrics["target"]))


def test_the_gradient_cams_are_different_maps(small_net, small_input):
    maps = {kind: ours(small_net, small_input, kind, target=3, layer="relu1").attribution for kind in GRADIENT_CAMS}
    for one in GRADIENT_CAMS:
        for other in GRADIENT_CAMS:
            if one < other:
                assert not np.allclose(maps[one], maps[other]), (one, other)


FORWARD_CAMS = {"eigencam": "EigenCAM", "scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}


def forward_ours(network, model, x: np.ndarray, kind: str, batch: int = 4, **params):
    resolved = KINDS[kind].params(**params).resolve(network.record)
    calls = []
    task = ForwardTask(network.record, resolved, x, classify=None, progress=lambda s, t: calls.append((s, t)),
                       batch=batch, model=model)
    out = method_of(KINDS[kind])(task)
    declared = resolved.method_steps(Workload(network.record, batch=1, forward_batch=batch))
    assert calls and {t for _, t in calls} == {declared} and calls[-1][0] == declared, calls
    return out


def assert_same_forward_map(kind: str, out, expected: np.ndarray) -> None:
    if kind == "eigencam":  # a singular vector's sign is arbitrary: the library's map is one of the two
        candidates = [np.maximum(sign * expected, 0) for sign in (1, -1)]
        expected = min(candidates, key=lambda c: float(np.abs(c - out.attribution).max()))
    assert_same_map(out, expected)


def forward_reference(pytorch_grad_cam, kind, module, layer_module, x, target):
    """The library's raw map, its ReLU applied (`get_cam_image` before scaling); Eigen-CAM's projection unrectified."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    library = getattr(pytorch_grad_cam, FORWARD_CAMS[kind])
    with library(model=module, target_layers=[layer_module]) as cam:
        x = torch.from_numpy(x)
        targets = [ClassifierOutputTarget(target)]
        cam(input_tensor=x, targets=targets)
        activations = cam.activations_and_grads.activations[0].numpy()
        raw = cam.get_cam_image(x, layer_module, targets, activations, None, eigen_smooth=False)
    return raw if kind == "eigencam" else np.maximum(raw, 0)


@pytest.mark.parametrize("kind", list(FORWARD_CAMS))
@pytest.mark.parametrize("layer", ["relu2", "relu1"])
def test_forward_cams_equal_pytorch_grad_cam_on_the_small_net(pytorch_grad_cam, small_net, small_input, kind, layer):
    x = small_input.numpy()
    out = forward_ours(small_net, TorchLayers(small_net), x, kind, target=3, layer=layer)
    expected = forward_reference(pytorch_grad_cam, kind, small_net.module, small_net.module.get_submodule(layer), x, 3)
    assert_same_forward_map(kind, out, expected)
    assert out.attribution.shape == (1, *small_net.record.layer(layer).shape[1:])


@pytest.mark.parametrize("kind", list(FORWARD_CAMS))
def test_forward_cams_on_onnx_runtime_equal_pytorch_grad_cam_on_the_builtin_model(
        pytorch_grad_cam, builtin_store, lite0, cat, kind):
    from core.settings import Settings
    from models.runtimes import Runtimes

    runtime = Runtimes(builtin_store, Settings()).get(lite0.record)
    layer = next(layer.name for layer in lite0.record.layers if layer.shape[0] <= 40)  # few channels: K passes
    x = cat.numpy()
    out = forward_ours(lite0, runtime, x, kind, batch=16, layer=layer)
    expected = forward_reference(pytorch_grad_cam, kind, lite0.module, lite0.layer_module(layer), x,
                                 out.metrics["target"])
    assert_same_forward_map(kind, out, expected)


def test_compare_and_sanity_check_take_every_cam(small_net, small_input):
    """The CAMs inside the trust kinds: compare ranks them all (the forward-only ones on the network itself when
    the runner gives no ONNX Runtime model), and sanity_check randomises under a forward-only one."""
    from workers.methods.trust import compare, sanity_check

    cams = [*GRADIENT_CAMS, *FORWARD_CAMS]
    p = KINDS["compare"].params(methods=cams, target=2, evaluation_steps=4, road_fractions=[0.5],
                                road_random_maps=0).resolve(small_net.record)
    calls = []
    out = compare.run(Task(small_net, small_input, p, progress=lambda s, t: calls.append((s, t)), forward_batch=4))
    assert {row["method"] for row in out.tables["ranking"]} == set(cams)
    declared = p.total_steps(Workload(small_net.record, batch=8, forward_batch=4))
    assert {t for _, t in calls} == {declared} and calls[-1][0] == declared
    check = KINDS["sanity_check"].params(method="scorecam", target=2, steps=2).resolve(small_net.record)
    rows = sanity_check.run(Task(small_net, small_input, check, forward_batch=4)).tables["similarity"]
    assert len(rows) == 2 and rows[-1]["spearman"] < 0.99  # one row per randomisation step
