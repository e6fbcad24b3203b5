"""Each attribution method equals a well-known implementation on a small model with fixed weights:
captum (Saliency, GuidedBackprop, Deconvolution, IntegratedGradients, NoiseTunnel, LayerGradCam)
and pytorch-grad-cam (GradCAM)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop, IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency
from torch import nn

from core.kinds.attribution import (
    DeconvnetParams,
    GradcamParams,
    GuidedBackpropParams,
    IntegratedGradientsParams,
    SaliencyParams,
    SmoothgradParams,
)
from workers.methods.attribution import (
    deconvnet,
    gradcam,
    guided_backprop,
    integrated_gradients,
    saliency,
    smoothgrad,
)
from workers.methods.attribution.integrated_gradients import baseline_of
from workers.methods.task import Task

TIGHT = dict(rtol=1e-5, atol=1e-6)


def close(ours: np.ndarray, reference: torch.Tensor, **tolerance) -> None:
    np.testing.assert_allclose(ours, reference.detach().numpy(), **(tolerance or TIGHT))


def task(net, x, params, batch=8):
    return Task(net, x, params.resolve(net.record), batch=batch)


@pytest.mark.parametrize("target", [None, 3, "class1"])
def test_saliency_equals_captum(small_net, small_input, target):
    out = saliency.run(task(small_net, small_input, SaliencyParams(target=target)))
    index = out.metrics["target"]
    assert index == (int(small_net.module(small_input).argmax()) if target is None else small_net.record.class_index(target))
    reference = Saliency(small_net.module).attribute(small_input.clone(), target=index, abs=False)[0]
    close(out.attribution, reference)
    assert out.attribution.shape == (3, 16, 16) and out.attribution.dtype == np.float32


@pytest.mark.parametrize("method,reference", [(guided_backprop, GuidedBackprop), (deconvnet, Deconvolution)])
def test_rule_methods_equal_captum_for_a_class(small_net, small_input, method, reference):
    params = {guided_backprop: GuidedBackpropParams, deconvnet: DeconvnetParams}[method](target=2)
    out = method.run(task(small_net, small_input, params))
    expected = reference(small_net.module).attribute(small_input.clone(), target=2)[0]
    close(out.attribution, expected)
    plain = Saliency(small_net.module).attribute(small_input.clone(), target=2, abs=False)[0].numpy()
    assert not np.allclose(out.attribution, plain), "the swapped rule must change the result"


class UnitModel(nn.Module):
    """The small net up to `relu2`, returning one unit (channel, y, x) as a 1-logit output."""

    def __init__(self, net, channel, y, x):
        super().__init__()
        self.net, self.unit = net, (channel, y, x)

    def forward(self, inputs):
        c, y, x = self.unit
        return self.net.features(inputs)[:, c, y, x].unsqueeze(1)


@pytest.mark.parametrize("method,reference", [(guided_backprop, GuidedBackprop), (deconvnet, Deconvolution)])
def test_rule_methods_equal_captum_for_a_unit(small_net, small_input, method, reference):
    params = {guided_backprop: GuidedBackpropParams, deconvnet: DeconvnetParams}[method](layer="relu2", channel=5)
    out = method.run(task(small_net, small_input, params))
    maps = small_net.module.features(small_input)[0, 5]
    y, x = divmod(int(maps.argmax()), maps.shape[1])
    assert out.metrics["position"] == [y, x] and out.metrics["activation"] == pytest.approx(float(maps[y, x]))
    expected = reference(UnitModel(small_net.module, 5, y, x)).attribute(small_input.clone(), target=0)[0]
    close(out.attribution, expected)


def test_deconvnet_signal_passes_max_pool_switches_only(small_net, small_input):
    """A unit after a max-pool projects back only through the argmax of each pooling window."""
    out = deconvnet.run(task(small_net, small_input, DeconvnetParams(layer="relu2", channel=0, position=(3, 3))))
    reach = np.abs(out.attribution).sum(axis=0) > 0
    assert reach.any() and not reach.all()
    rows, cols = np.nonzero(reach)
    assert rows.min() >= 2 * 2 - 2 and rows.max() <= 2 * 4 + 3  # within the unit's receptive field


@pytest.mark.parametrize("rule,captum_method", [("gauss_legendre", "gausslegendre"),
                                                ("riemann_middle", "riemann_middle")])
@pytest.mark.parametrize("baseline", ["zeros", "black", "blur"])
def test_integrated_gradients_equals_captum(small_net, small_input, rule, captum_method, baseline):
    params = IntegratedGradientsParams(target=4, steps=20, baseline=baseline, rule=rule)
    out = integrated_gradients.run(task(small_net, small_input, params, batch=6))
    base = baseline_of(small_input, baseline, small_net.record)
    expected, delta = IntegratedGradients(small_net.module).attribute(
        small_input.clone(), baselines=base, target=4, n_steps=20, method=captum_method, internal_batch_size=6,
        return_convergence_delta=True)
    close(out.attribution, expected[0], rtol=1e-4, atol=1e-6)
    logits = small_net.module(torch.cat([small_input, base]))[:, 4]
    difference = float(logits[0] - logits[1])
    assert out.metrics["completeness_gap"] == pytest.approx(abs(float(delta)) / abs(difference), rel=1e-2, abs=1e-5)


def test_integrated_gradients_completeness_improves_with_steps(small_net, small_input):
    gaps = [integrated_gradients.run(task(small_net, small_input, IntegratedGradientsParams(
        steps=steps, baseline="zeros", rule="riemann_middle"))).metrics["completeness_gap"] for steps in (4, 64)]
    assert gaps[1] < gaps[0]


@pytest.mark.parametrize("samples,batch", [(10, 4), (8, 8)])
def test_smoothgrad_equals_captum_noise_tunnel(small_net, small_input, samples, batch):
    params = SmoothgradParams(target=1, samples=samples, noise=0.2, seed=7)
    out = smoothgrad.run(task(small_net, small_input, params, batch=batch))
    sigma = 0.2 * float(small_input.max() - small_input.min())
    assert out.metrics["sigma"] == pytest.approx(sigma)
    torch.manual_seed(7)
    expected = NoiseTunnel(Saliency(small_net.module)).attribute(
        small_input.clone(), nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=batch, stdevs=sigma,
        target=1, abs=False)
    close(out.attribution, expected[0], rtol=1e-4, atol=1e-6)


def test_smoothgrad_is_seeded(small_net, small_input):
    runs = [smoothgrad.run(task(small_net, small_input, SmoothgradParams(samples=4, seed=seed))).attribution
            for seed in (3, 3, 4)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


@pytest.fixture(scope="module")
def grad_cam_library(pytorch_grad_cam):
    return pytorch_grad_cam.GradCAM


@pytest.mark.parametrize("layer", ["relu2", "relu1"])
def test_gradcam_equals_pytorch_grad_cam_and_captum(small_net, small_input, grad_cam_library, layer):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    out = gradcam.run(task(small_net, small_input, GradcamParams(target=3, layer=layer)))
    module = small_net.module.get_submodule(layer)
    with grad_cam_library(model=small_net.module, target_layers=[module]) as cam:
        final = cam(input_tensor=small_input.clone().requires_grad_(), targets=[ClassifierOutputTarget(3)])
        activations = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = np.maximum(cam.get_cam_image(small_input, module, None, activations, grads), 0)
    np.testing.assert_allclose(out.attribution, raw, **TIGHT)
    np.testing.assert_allclose(final, cam_scale(out.attribution), rtol=1e-4, atol=1e-5)
    expected = LayerGradCam(small_net.module, module).attribute(small_input.clone(), target=3, relu_attributions=True)
    np.testing.assert_allclose(out.attribution, expected[0].detach().numpy(), **TIGHT)
    assert out.heat.max() == pytest.approx(1.0)


def cam_scale(cam: np.ndarray) -> np.ndarray:
    """The library's presentation of a map: min-max scaled, resized to the input, scaled again."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    return scale_cam_image(scale_cam_image(cam, (16, 16)))


def test_gradcam_defaults_to_the_last_spatial_layer(small_net):
    assert GradcamParams().resolve(small_net.record).layer == "relu2"


@pytest.mark.parametrize("n", [7, 150, 400])
def test_gauss_legendre_nodes_equal_numpy(n):
    from workers.methods.attribution.integrated_gradients import gauss_legendre

    nodes, weights = gauss_legendre(n)
    expected_nodes, expected_weights = np.polynomial.legendre.leggauss(n)
    np.testing.assert_allclose(nodes, expected_nodes, atol=1e-13)
    np.testing.assert_allclose(weights, expected_weights, atol=1e-13)
