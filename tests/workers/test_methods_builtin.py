"""Methods on the built-in EfficientNet-Lite0 (ReLU6 rectifiers): saliency is plain autograd, the
guided rule really reaches the ReLU6 modules, and no hook or module swap outlives a call."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import GuidedBackprop
from torch import nn

from core.kinds.attribution import (
    DeconvnetParams,
    GradcamParams,
    GuidedBackpropParams,
    IntegratedGradientsParams,
    SaliencyParams,
    SmoothgradParams,
)
from workers.methods.attribution import deconvnet, gradcam, guided_backprop, integrated_gradients, saliency, smoothgrad
from workers.methods.mechanics.backprop import backward_rule
from workers.methods.task import Task


def test_saliency_equals_direct_autograd(lite0, cat):
    out = saliency.run(Task(lite0, cat, SaliencyParams()))
    x = cat.clone().requires_grad_(True)
    logits = lite0.module(x)
    target = int(logits.argmax())
    logits[0, target].backward()
    assert out.metrics["target"] == target and out.metrics["target_label"] == lite0.record.label(target)
    np.testing.assert_allclose(out.attribution, x.grad[0].numpy(), rtol=1e-5, atol=1e-7)


def test_guided_rule_reaches_relu6(lite0, cat):
    relu6 = [m for m in lite0.module.modules() if isinstance(m, nn.ReLU6)]
    assert len(relu6) > 30
    with backward_rule(lite0.module, "guided"):
        assert all("forward" in m.__dict__ for m in relu6)
    assert not any("forward" in m.__dict__ for m in relu6)
    guided = guided_backprop.run(Task(lite0, cat, GuidedBackpropParams())).attribution
    plain = saliency.run(Task(lite0, cat, SaliencyParams())).attribution
    assert not np.allclose(guided, plain, atol=1e-6)
    # captum's GuidedBackprop hooks nn.ReLU only, so on this ReLU6 network it is the plain gradient.
    target = int(lite0.module(cat).argmax())
    captum = GuidedBackprop(lite0.module).attribute(cat.clone(), target=target)[0].detach().numpy()
    np.testing.assert_allclose(captum, plain, rtol=1e-4, atol=1e-7)


def module_state(model: nn.Module) -> list:
    """Everything a method may touch on a model: hooks, instance-level forwards, grad flags, modes."""
    return [(name, dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks),
             dict(m._backward_pre_hooks), "forward" in m.__dict__, m.training,
             [p.requires_grad for p in m.parameters(recurse=False)]) for name, m in model.named_modules()]


def global_hooks() -> list:
    from torch.nn.modules import module as torch_module

    return [len(torch_module._global_forward_hooks), len(torch_module._global_backward_hooks),
            len(torch_module._global_forward_pre_hooks)]


CASES = [
    (saliency, SaliencyParams()),
    (guided_backprop, GuidedBackpropParams(layer="_blocks.5._relu1", channel=2)),
    (deconvnet, DeconvnetParams()),
    (gradcam, GradcamParams(layer="_blocks.10")),
    (smoothgrad, SmoothgradParams(samples=4)),
    (integrated_gradients, IntegratedGradientsParams(steps=4)),
]


@pytest.mark.parametrize("method,params", CASES, ids=[c[0].__name__.rsplit(".", 1)[-1] for c in CASES])
def test_nothing_outlives_a_call(lite0, cat, method, params):
    small = torch.nn.functional.interpolate(cat, size=(64, 64), mode="bilinear")
    before, hooks = module_state(lite0.module), global_hooks()
    method.run(Task(lite0, small, params, batch=2))
    assert module_state(lite0.module) == before and global_hooks() == hooks

    # A call that fails inside the method, after its rules are swapped and its hooks set: the first
    # convolution refuses a 2-channel input.
    with pytest.raises(RuntimeError, match=r"expected input\[.*\] to have 3 channels, but got 2 channels"):
        method.run(Task(lite0, small[:, :2], params, batch=2))
    assert module_state(lite0.module) == before and global_hooks() == hooks

    if method in (smoothgrad, integrated_gradients):  # the methods that report progress: stopped at step 1
        calls = []

        def stop(step, total):
            calls.append((step, total))
            raise RuntimeError("stopped")

        with pytest.raises(RuntimeError, match="^stopped$"):
            method.run(Task(lite0, small, params, batch=2, progress=stop))
        assert calls == [(1, 2)]  # 4 samples or steps, 2 per batch: it ends at the first report
        assert module_state(lite0.module) == before and global_hooks() == hooks
