"""The gradient-ascent loop on the small seeded network: every hook and rectifier swap it makes is undone
as soon as it returns or raises (not later, when the failed call's frames are garbage-collected), and the
redirected rectifier gradient holds for exactly the first `redirect_steps` steps."""

from __future__ import annotations

import pytest
import torch

from core.errors import Invalid
from tests.workers.test_methods_builtin import global_hooks, module_state
from workers.methods.mechanics import ascent, objectives
from workers.methods.mechanics.parameterisations import ModelSpace, PixelImage

SIZE = 16


def run(net, objective, steps: int = 3, redirect_steps: int = 2, progress=None):
    param = PixelImage((SIZE, SIZE), generator=torch.Generator().manual_seed(0))
    settings = ascent.Ascent(steps=steps, lr=0.05, redirect_steps=redirect_steps)
    return ascent.optimise(net, ModelSpace(net.record), param, objective, settings, progress)


def swapped(net) -> list[str]:
    """Names of the modules whose forward is an instance attribute (a swapped rectifier)."""
    return [name for name, module in net.module.named_modules() if "forward" in vars(module)]


def test_an_unknown_layer_leaves_nothing_behind(small_net):
    before, hooks = module_state(small_net.module), global_hooks()
    objective = objectives.channel("relu1", 0) + objectives.channel("no_such_layer", 0)  # relu1 is hooked first
    with pytest.raises(Invalid) as failure:
        run(small_net, objective)
    assert failure.value.code == "unknown_layer"
    # `failure` keeps the failed call's frames alive: whatever they still hold must already be undone.
    assert swapped(small_net) == []
    assert module_state(small_net.module) == before and global_hooks() == hooks


def test_a_failing_step_leaves_nothing_behind(small_net):
    before, hooks = module_state(small_net.module), global_hooks()

    def stop(step, total, preview=None):
        assert swapped(small_net) == ["relu1", "relu2"]  # still within the redirected steps
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped") as failure:
        run(small_net, objectives.channel("relu2", 1), progress=stop)
    assert failure.value is not None and module_state(small_net.module) == before and global_hooks() == hooks


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_rectifiers_are_redirected_for_the_first_steps_only(small_net, steps):
    before, hooks = module_state(small_net.module), global_hooks()
    seen = []
    image, value = run(small_net, objectives.channel("relu2", 1), steps=steps, redirect_steps=2,
                       progress=lambda step, total, preview=None: seen.append(bool(swapped(small_net))))
    assert seen == [step <= 2 for step in range(1, steps + 1)]
    assert image.shape == (1, 3, SIZE, SIZE) and 0 <= float(image.min()) and float(image.max()) <= 1
    assert module_state(small_net.module) == before and global_hooks() == hooks
