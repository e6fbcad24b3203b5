"""Params of the attribution kinds: what to explain (a class logit or one unit) and each method's knobs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from core.kinds.params import Params, Target, Workload, layer_or_last, spatial_layer
from core.model_record import ModelRecord


class ClassTargetParams(Params):
    target: Target | None = Field(None, description="class index or label; default the model's top-1 class "
                                                    "for the image. The score is the class logit.")

    def explains_class(self) -> bool:
        """Whether the objective is a class logit (then the model must have class scores)."""
        return True

    def resolve(self, record: ModelRecord) -> Params:
        if self.target is not None:
            record.class_index(self.target)
        elif self.explains_class():
            record.require_class_scores("the default objective (the image's top-1 class)")
        return super().resolve(record)


class ObjectiveParams(ClassTargetParams):
    """What to explain: a class logit (`target`), or one unit of a layer (`layer` + `channel`,
    optionally `position`), so that a single feature map is projected back to pixels."""

    layer: str | None = Field(None, min_length=1, max_length=512,
                              description="with `channel`: explain one unit of this layer instead of a class")
    channel: int | None = Field(None, ge=0, description="channel of `layer`")
    position: tuple[int, int] | None = Field(None, description="[y, x] on the layer's grid; default the "
                                                               "channel's strongest activation for the image")

    @model_validator(mode="after")
    def _one_objective(self):
        if (self.layer is None) != (self.channel is None):
            raise ValueError("give `layer` and `channel` together")
        if self.layer is not None and self.target is not None:
            raise ValueError("give either `target` or `layer` + `channel`, not both")
        if self.position is not None and self.layer is None:
            raise ValueError("`position` needs `layer` and `channel`")
        return self

    def explains_class(self) -> bool:
        return self.layer is None

    def resolve(self, record: ModelRecord) -> Params:
        if self.layer is not None:
            channels, height, width = (spatial_layer(record, self.layer).shape + [1, 1])[:3]
            if self.channel >= channels:
                raise ValueError(f"layer {self.layer!r} has {channels} channels; channel {self.channel} is out of range")
            if self.position is not None and not (0 <= self.position[0] < height and 0 <= self.position[1] < width):
                raise ValueError(f"position {list(self.position)} is outside the layer's {height}×{width} grid")
        return super().resolve(record)


class SaliencyParams(ClassTargetParams):
    """Simonyan et al. 2014: d logit[target] / d input."""


class GuidedBackpropParams(ObjectiveParams):
    """Springenberg et al. 2015: the gradient with every rectifier passing back only positive signal
    where its input was positive."""


class DeconvnetParams(ObjectiveParams):
    """Zeiler & Fergus 2014: rectifiers applied to the backward signal only; max-pool switches."""


class GradcamParams(ClassTargetParams):
    """Selvaraju et al. 2017: ReLU(Σ_k α_k A^k), α_k = spatial mean of d logit / d A^k."""

    layer: str | None = Field(None, min_length=1, max_length=512,
                              description="a spatial layer; default the model's last spatial layer")

    def resolve(self, record: ModelRecord) -> Params:
        layer = layer_or_last(record, self.layer)
        return super(GradcamParams, self.model_copy(update={"layer": layer})).resolve(record)


class SmoothgradParams(ClassTargetParams):
    """Smilkov et al. 2017: the mean gradient over copies of the input with Gaussian noise."""

    samples: int = Field(25, ge=1, le=1000, description="noisy copies averaged")
    noise: float = Field(0.15, ge=0.0, le=1.0, description="noise σ as a fraction of the input's value range "
                                                           "(max − min of the input tensor)")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the noise; the same seed gives the same result")

    def total_steps(self, work: Workload) -> int:
        """One step per batch of noisy copies."""
        return -(-self.samples // work.batch)


class IntegratedGradientsParams(ClassTargetParams):
    """Sundararajan et al. 2017: (x − x') ⊙ ∫₀¹ ∇F(x' + α(x − x')) dα, by quadrature."""

    steps: int = Field(50, ge=1, le=2000, description="points on the path from baseline to input")
    baseline: Literal["zeros", "black", "blur"] = Field(
        "black", description="zeros: 0 in model-input space; black: a black image; blur: the image blurred "
                             "(Gaussian, radius 1/16 of its size)")
    rule: Literal["gauss_legendre", "riemann_middle"] = Field(
        "gauss_legendre", description="quadrature along the path: Gauss–Legendre nodes, or the midpoint rule")

    def total_steps(self, work: Workload) -> int:
        """One step per batch of path points."""
        return -(-self.steps // work.batch)
