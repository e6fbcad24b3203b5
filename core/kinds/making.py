"""The kinds that make images and their params (`KINDS`, collected by `core/kinds/registry.py`). Torch-free.

Defaults are the ones that gave good-looking results on the built-in EfficientNet-Lite0 on a CPU
(looked at by eye, see `bench/contact_sheet.py`); sizes are output pixels, learning rates are for
Adam on the image parameters, pixel budgets are in 0–255 units.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from core.kinds.kind import IMAGE, STYLE_IMAGE, Family, Input, Kind
from core.kinds.params import Params, Target, Workload, middle_layer, spatial_layer
from core.methods import Made
from core.model_record import ModelRecord


class RenderParams(Params):
    """The gradient-ascent loop shared by the image-making kinds that render (`workers/methods/mechanics/ascent.py`)."""

    steps: int = Field(128, ge=1, le=2000, description="optimisation steps; each is one forward + one backward")
    lr: float = Field(0.05, gt=0, le=10, description="Adam learning rate on the image parameters")
    parameterisation: Literal["fourier", "pixel"] = Field(
        "fourier", description="fourier: decorrelated-colour Fourier image (Olah et al. 2017); pixel: plain pixels")
    transforms: int = Field(1, ge=0, le=3, description="robustness transforms strength (pad, jitter, scale, "
                                                        "rotate); 0 turns them off")
    l2: float = Field(0.0, ge=0, description="weight of the L2 penalty on pixels (0–1 scale) from grey")
    tv: float = Field(0.0, ge=0, description="weight of total variation TV^β (Mahendran & Vedaldi 2015)")
    tv_beta: float = Field(2.0, ge=1, le=4)
    blur_every: int = Field(0, ge=0, le=1000, description="pixel images: blur every N steps (Yosinski et al. 2015)")
    blur_sigma: float = Field(0.0, ge=0, le=8, description="initial blur σ in pixels, decaying to 0")
    clip_norm_pct: float = Field(0.0, ge=0, le=99, description="pixel images: reset the lowest-norm N% of pixels")
    seed: int = Field(0, ge=0, le=2**63 - 1)
    preview_every: int = Field(16, ge=0, le=2000, description="steps between preview events (0: none)")

    def total_steps(self, work: Workload) -> int:
        """One step per optimisation step."""
        return self.steps


class SizedRenderParams(RenderParams):
    """The loop, making a square image of a chosen size (inversion instead works at the model's input size)."""

    size: int = Field(128, ge=32, le=512, description="output side in pixels (square)")


def _layer_channel(record: ModelRecord, layer: str, channel: int | None) -> None:
    shape = spatial_layer(record, layer).shape
    if channel is not None and not 0 <= channel < shape[0]:
        raise ValueError(f"layer {layer!r} has {shape[0]} channels; channel {channel} is out of range")


class ClassModelParams(SizedRenderParams):
    """Class model visualisation (Simonyan et al. 2014) with Yosinski et al. (2015)'s regularisers:
    an image maximising the class logit."""

    target: Target = Field(description="class index or label whose logit is maximised")

    def resolve(self, record: ModelRecord) -> Params:
        record.class_index(self.target)
        return self


class FeatureVisParams(SizedRenderParams):
    """Feature visualisation (Olah et al. 2017): an image maximising one channel (its mean over the
    grid) or one neuron (`position` on the grid)."""

    layer: str = Field(min_length=1, max_length=512)
    channel: int = Field(ge=0)
    position: tuple[int, int] | None = Field(None, description="[y, x] on the layer's grid at the output "
                                                               "size: optimise that single neuron")

    def resolve(self, record: ModelRecord) -> Params:
        _layer_channel(record, self.layer, self.channel)
        return self


class InversionParams(RenderParams):
    """Feature inversion (Mahendran & Vedaldi 2015): an image, at the model's input size, whose
    features at `layer` match the input image's, regularised by total variation."""

    layer: str | None = Field(None, min_length=1, max_length=512, description="default: a layer two thirds deep")
    steps: int = Field(200, ge=1, le=2000)
    parameterisation: Literal["fourier", "pixel"] = "pixel"
    transforms: int = Field(0, ge=0, le=3)
    lr: float = Field(0.05, gt=0, le=10)
    tv: float = Field(0.5, ge=0, description="weight of TV^β")

    def resolve(self, record: ModelRecord) -> Params:
        layer = self.layer or middle_layer(record)
        spatial_layer(record, layer)
        return self.model_copy(update={"layer": layer})


class DeepdreamParams(Params):
    """DeepDream (Mordvintsev et al. 2015): amplify what a layer (or one channel) sees, octave by
    octave, at the image's own size."""

    layer: str | None = Field(None, min_length=1, max_length=512, description="default: a layer two thirds deep")
    channel: int | None = Field(None, ge=0, description="amplify only this channel")
    octaves: int = Field(3, ge=1, le=8)
    octave_scale: float = Field(1.4, ge=1.0, le=3.0, description="size ratio between octaves")
    steps: int = Field(10, ge=1, le=200, description="steps per octave")
    step_size: float = Field(0.02, gt=0, le=1, description="step on pixels in 0–1 units, gradient normalised")
    jitter: int = Field(16, ge=0, le=128, description="random shift in pixels each step")
    max_size: int = Field(512, ge=32, le=2048, description="longer side is scaled down to this first")
    seed: int = Field(0, ge=0, le=2**63 - 1)
    preview_every: int = Field(5, ge=0, le=1000)

    def total_steps(self, work: Workload) -> int:
        """`steps` at each of the `octaves`."""
        return self.octaves * self.steps

    def resolve(self, record: ModelRecord) -> Params:
        layer = self.layer or middle_layer(record)
        _layer_channel(record, layer, self.channel)
        return self.model_copy(update={"layer": layer})


class AdversarialParams(Params):
    """A targeted fooling image (Szegedy et al. 2014; Goodfellow et al. 2015): projected gradient
    descent on the target's log-probability within an L-inf ball of `epsilon` (0–255 units)."""

    target: Target = Field(description="the class the image should become")
    epsilon: float = Field(4.0, ge=1, le=64, description="L-inf budget in 0–255 pixel units (whole units count: "
                                                         "the 8-bit answer moves each pixel by at most floor(ε))")
    steps: int = Field(40, ge=1, le=1000, description="PGD steps (FGSM uses one)")
    step_size: float | None = Field(None, gt=0, le=64, description="0–255 units per step; default 2.5·ε/steps (≥ 0.5)")
    method: Literal["pgd", "fgsm"] = "pgd"

    def total_steps(self, work: Workload) -> int:
        """One step per gradient step: FGSM takes one."""
        return 1 if self.method == "fgsm" else self.steps

    def resolve(self, record: ModelRecord) -> Params:
        record.class_index(self.target)
        return self


def _default_style_layers(record: ModelRecord, count: int = 5) -> list[str]:
    """Evenly spaced rectified layers (or any spatial layers) through the network's depth."""
    layers = [layer.name for layer in record.layers or [] if layer.op in ("Relu", "Clip", "LeakyRelu")] or \
             [layer.name for layer in record.layers or []]
    if not layers:
        raise ValueError(f"model {record.id!r} has no spatial layer")
    picks = sorted({round(i * (len(layers) - 1) * 0.6 / max(count - 1, 1)) for i in range(count)})
    return [layers[i] for i in picks]


class TextureParams(SizedRenderParams):
    """Texture synthesis (Gatys et al. 2015): match Gram matrices of the example at several layers."""

    layers: list[str] | None = Field(None, max_length=16, description="default: five rectified layers "
                                                                      "spread over the first 60% of the depth")
    steps: int = Field(200, ge=1, le=2000)
    parameterisation: Literal["fourier", "pixel"] = "pixel"
    transforms: int = Field(0, ge=0, le=3)
    lr: float = Field(0.05, gt=0, le=10)

    def resolve(self, record: ModelRecord) -> Params:
        layers = self.layers or _default_style_layers(record)
        for name in layers:
            spatial_layer(record, name)
        return self.model_copy(update={"layers": layers})


class StyleTransferParams(TextureParams):
    """Style transfer (Gatys et al. 2016): content features of one image, Gram matrices of another."""

    content_layer: str | None = Field(None, min_length=1, max_length=512, description="default: a layer "
                                                                                     "two thirds deep")
    style_layers: list[str] | None = Field(None, max_length=16, description="default as for texture")
    layers: None = Field(None, description="use style_layers")
    content_weight: float = Field(1.0, ge=0)
    style_weight: float = Field(100.0, ge=0)
    size: int = Field(192, ge=32, le=512)

    @model_validator(mode="after")
    def _some_weight(self):
        if self.content_weight == 0 and self.style_weight == 0:
            raise ValueError("content_weight and style_weight cannot both be 0")
        return self

    def resolve(self, record: ModelRecord) -> Params:
        content = self.content_layer or middle_layer(record)
        spatial_layer(record, content)
        style = self.style_layers or _default_style_layers(record)
        for name in style:
            spatial_layer(record, name)
        return self.model_copy(update={"content_layer": content, "style_layers": style})


class CaricatureParams(RenderParams):
    """A caricature (Microscope's; Lucid's `render_caricature`): an image whose activations at `layer` are as
    similar as possible to the photo's, dot × cosine^`cossim_pow`, made from noise with the photo beside it in
    every step's batch, so the two pass through the same random transforms."""

    layer: str | None = Field(None, min_length=1, max_length=512, description="default: a layer two thirds deep")
    size: int | None = Field(None, ge=32, le=512, description="output side in pixels (square; the photo is resized "
                                                              "to it); default the model's input size")
    steps: int = Field(128, ge=1, le=2000)
    cossim_pow: float = Field(1.0, ge=0, le=8, description="objective: dot(image's, photo's activations) × cos^this")

    def resolve(self, record: ModelRecord) -> Params:
        layer = self.layer or middle_layer(record)
        spatial_layer(record, layer)
        fixed = (record.input.height, record.input.width)
        if self.size is not None and not record.input.dynamic_size and (self.size, self.size) != fixed:
            raise ValueError(f"the model's input is fixed at {fixed[0]}×{fixed[1]}; size {self.size} cannot be used")
        return self.model_copy(update={"layer": layer})


def image_maker(name: str, params: type[Params], time_limit_s: int, summary: str,
                reads: tuple[Input, ...] = (IMAGE,)) -> Kind:
    """A kind that makes images (a `Made`) by gradient ascent on the worker's network."""
    return Kind(name, params, time_limit_s, summary, Family.MAKING, reads=reads, returns=Made)


KINDS = (
    image_maker("class_model", ClassModelParams, 900,
                "An image that maximises a class logit (Simonyan et al. 2014; Yosinski et al. 2015).", reads=()),
    image_maker("feature_vis", FeatureVisParams, 900,
                "An image that maximises one channel or neuron (Olah et al. 2017).", reads=()),
    image_maker("inversion", InversionParams, 1200,
                "An image reconstructed from its features at a layer (Mahendran & Vedaldi 2015)."),
    image_maker("deepdream", DeepdreamParams, 900,
                "DeepDream (Mordvintsev et al. 2015): amplify what a layer sees, octave by octave."),
    image_maker("adversarial", AdversarialParams, 600,
                "A targeted fooling image within an L-inf budget (Szegedy et al. 2014; Goodfellow et al. 2015)."),
    image_maker("texture", TextureParams, 1200,
                "Texture synthesis by Gram-matrix matching (Gatys et al. 2015)."),
    image_maker("style_transfer", StyleTransferParams, 1200,
                "Style transfer: content of one image, Gram matrices of another (Gatys et al. 2016).",
                reads=(IMAGE, STYLE_IMAGE)),
    image_maker("caricature", CaricatureParams, 900,
                "A caricature: the image that most amplifies what a layer sees in a photo (Microscope, Lucid)."),
)
