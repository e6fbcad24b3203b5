"""Swapped `forward`s (`workers.methods.mechanics.backprop.forwards_swapped`, under the backward rules, ascent's
redirected rectifiers and LRP's rules) are undone to what each module had before: its class's own, or a forward
already set on the instance by an enclosing swap, also when the swaps fail part way."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workers.methods.mechanics.ascent import redirected_rectifiers
from workers.methods.mechanics.backprop import backward_rule, forwards_swapped


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU6())


def instance_forwards(model: nn.Module) -> dict[int, object]:
    return {i: m.__dict__.get("forward") for i, m in enumerate(model.modules())}


def test_a_backward_rule_inside_the_redirected_rectifiers_gives_them_back_on_leaving():
    model = net()
    with redirected_rectifiers(model):
        outer = instance_forwards(model)
        assert outer[2] is not None and outer[4] is not None  # the ReLU and the ReLU6
        with backward_rule(model, "guided"):
            assert instance_forwards(model)[2] is not outer[2]
        assert instance_forwards(model) == outer  # the redirected forwards, not the classes' own
    assert all(f is None for f in instance_forwards(model).values())


def test_swaps_that_fail_part_way_are_undone():
    model = net()
    relu, relu6 = model[1], model[3]

    def swaps():
        yield relu, lambda x: x
        raise ValueError("no rule for this module")

    with pytest.raises(ValueError):
        with forwards_swapped(swaps()):
            pass
    assert "forward" not in relu.__dict__ and "forward" not in relu6.__dict__
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(model(x), model[3](model[2](torch.relu(model[0](x)))))
