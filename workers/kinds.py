"""The one registry of job kinds: kind → params model → method → time limit. Torch-free.

The API reads it to build the `POST /v1/jobs` body (a union discriminated on `kind`, so
OpenAPI shows every kind's parameters and bad values are refused with 422 before anything is
queued); the worker reads it to find the function to call. Adding a kind is one `Kind` entry
here plus one module in `workers/methods/` exposing `run(task)`, returning an `Attribution`
(attribution kinds), a `Made` (image-making kinds) or a dataset result.

Params models hold the static bounds; `resolve(record)` checks what depends on the model (class
labels, layer names, channel counts) and fills in model-dependent defaults, so the Job a client
gets back shows every parameter it will run with.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from models.record import ModelRecord
from workers.image_params import (AdversarialParams, ClassModelParams, DeepdreamParams, FeatureVisParams,
                                  InversionParams, StyleTransferParams, TextureParams)
from workers.params import Params, Target, layer_or_last, spatial_layer

class ClassTargetParams(Params):
    target: Target | None = Field(None, description="class index or label; default the model's top-1 class "
                                                    "for the image. The score is the class logit.")

    def resolve(self, record: ModelRecord) -> "Params":
        if self.target is not None:
            record.class_index(self.target)
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

    def resolve(self, record: ModelRecord) -> "Params":
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

    def resolve(self, record: ModelRecord) -> "Params":
        layer = layer_or_last(record, self.layer)
        return super(GradcamParams, self.model_copy(update={"layer": layer})).resolve(record)


class SmoothgradParams(ClassTargetParams):
    """Smilkov et al. 2017: the mean gradient over copies of the input with Gaussian noise."""

    samples: int = Field(25, ge=1, le=1000, description="noisy copies averaged")
    noise: float = Field(0.15, ge=0.0, le=1.0, description="noise σ as a fraction of the input's value range "
                                                           "(max − min of the input tensor)")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the noise; the same seed gives the same result")


class IntegratedGradientsParams(ClassTargetParams):
    """Sundararajan et al. 2017: (x − x') ⊙ ∫₀¹ ∇F(x' + α(x − x')) dα, by quadrature."""

    steps: int = Field(50, ge=1, le=2000, description="points on the path from baseline to input")
    baseline: Literal["zeros", "black", "blur"] = Field(
        "black", description="zeros: 0 in model-input space; black: a black image; blur: the image blurred "
                             "(Gaussian, radius 1/16 of its size)")
    rule: Literal["gauss_legendre", "riemann_middle"] = Field(
        "gauss_legendre", description="quadrature along the path: Gauss–Legendre nodes, or the midpoint rule")


# Dataset kinds: ONNX Runtime over a stored dataset (workers/dataset_feed.py); every one looks at one spatial
# layer, by default the last; CNN codes are that layer pooled over positions (for the default, the penultimate
# representation the classifier reads).


def umap_available() -> bool:
    return importlib.util.find_spec("umap") is not None


class DatasetLayerParams(Params):
    layer: str | None = Field(None, min_length=1, max_length=512,
                              description="a spatial layer; default the model's last spatial layer")

    def resolve(self, record: ModelRecord) -> "Params":
        return self.model_copy(update={"layer": layer_or_last(record, self.layer)})


class CodeParams(DatasetLayerParams):
    pool: Literal["mean", "max"] = Field("mean", description="how a C×h×w activation becomes a C-vector "
                                                             "(a CNN code): mean or max over positions")


class TopActivationsParams(DatasetLayerParams):
    """Zeiler & Fergus 2014: the k images (and receptive-field patches) that drive a channel hardest."""

    channel: int | None = Field(None, ge=0, description="one channel; omitted: every channel of the layer, "
                                                        "found in one pass over the dataset")
    k: int = Field(9, ge=1, le=100, description="images per channel (one patch per image, at its strongest "
                                                "position)")

    def resolve(self, record: ModelRecord) -> "Params":
        resolved = super().resolve(record)
        channels = spatial_layer(record, resolved.layer).shape[0]
        if self.channel is not None and self.channel >= channels:
            raise ValueError(f"layer {resolved.layer!r} has {channels} channels; channel {self.channel} is out of range")
        return resolved


class EmbeddingParams(CodeParams):
    """CNN codes reduced to 2-D (van der Maaten & Hinton 2008 t-SNE; PCA; McInnes et al. 2018 UMAP)."""

    method: Literal["tsne", "pca", "umap"] = Field("tsne", description="tsne (scikit-learn), pca, or umap "
                                                                       "(needs the `umap-learn` package)")
    perplexity: float | None = Field(None, ge=2, le=100, description="t-SNE perplexity; default "
                                                                      "min(30, (images - 1) / 3)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random state of t-SNE and UMAP")

    def resolve(self, record: ModelRecord) -> "Params":
        if self.method == "umap" and not umap_available():
            raise ValueError("method 'umap' needs the `umap-learn` package, which is not installed on this "
                             "service; use 'tsne' or 'pca'")
        return super().resolve(record)


class NeighborsParams(CodeParams):
    """Nearest neighbours of the image among the dataset's images, in CNN-code space."""

    k: int = Field(8, ge=1, le=100, description="neighbours returned, nearest first")
    metric: Literal["cosine", "l2"] = Field("cosine", description="cosine: 1 − cos(a, b); l2: Euclidean distance, "
                                                                  "in the layer's units")


class UnitStatsParams(DatasetLayerParams):
    """Per channel over the dataset: mean activation, how often it never fires, dead channels."""

    dead_fraction: float = Field(1.0, gt=0, le=1, description="a channel is dead when it never fires (max over "
                                                              "positions ≤ 0) on at least this fraction of images")


@dataclass(frozen=True)
class Kind:
    """One kind of job: its params, the function that runs it, its time limit and what it reads."""

    name: str
    params: type[Params]
    method: str  # "module:function", called as function(task) by the worker
    time_limit_s: int  # at time-limit scale 1; the job then fails with code `timeout`
    summary: str
    reads: tuple[str, ...] = ("image",)  # request fields beside `params`: image, style_image, dataset


KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("saliency", SaliencyParams, "workers.methods.saliency:run", 120,
         "Gradient of the class logit with respect to the input (Simonyan et al. 2014)."),
    Kind("guided_backprop", GuidedBackpropParams, "workers.methods.guided_backprop:run", 120,
         "Guided backpropagation (Springenberg et al. 2015) of a class logit or one unit."),
    Kind("deconvnet", DeconvnetParams, "workers.methods.deconvnet:run", 120,
         "Deconvnet projection (Zeiler & Fergus 2014) of a class logit or one unit."),
    Kind("gradcam", GradcamParams, "workers.methods.gradcam:run", 120,
         "Grad-CAM (Selvaraju et al. 2017) at a layer's grid."),
    Kind("smoothgrad", SmoothgradParams, "workers.methods.smoothgrad:run", 900,
         "SmoothGrad (Smilkov et al. 2017): gradients averaged over noisy copies."),
    Kind("integrated_gradients", IntegratedGradientsParams, "workers.methods.integrated_gradients:run", 900,
         "Integrated gradients (Sundararajan et al. 2017) from a baseline image."),
    Kind("class_model", ClassModelParams, "workers.methods.class_model:run", 900,
         "An image that maximises a class logit (Simonyan et al. 2014; Yosinski et al. 2015).", ()),
    Kind("feature_vis", FeatureVisParams, "workers.methods.feature_vis:run", 900,
         "An image that maximises one channel or neuron (Olah et al. 2017).", ()),
    Kind("inversion", InversionParams, "workers.methods.inversion:run", 1200,
         "An image reconstructed from its features at a layer (Mahendran & Vedaldi 2015)."),
    Kind("deepdream", DeepdreamParams, "workers.methods.deepdream:run", 900,
         "DeepDream (Mordvintsev et al. 2015): amplify what a layer sees, octave by octave."),
    Kind("adversarial", AdversarialParams, "workers.methods.adversarial:run", 600,
         "A targeted fooling image within an L-inf budget (Szegedy et al. 2014; Goodfellow et al. 2015)."),
    Kind("texture", TextureParams, "workers.methods.texture:run", 1200,
         "Texture synthesis by Gram-matrix matching (Gatys et al. 2015)."),
    Kind("style_transfer", StyleTransferParams, "workers.methods.style_transfer:run", 1200,
         "Style transfer: content of one image, Gram matrices of another (Gatys et al. 2016).",
         ("image", "style_image")),
    Kind("top_activations", TopActivationsParams, "workers.methods.top_activations:run", 1800,
         "Images and receptive-field patches that drive a channel hardest (Zeiler & Fergus 2014).", ("dataset",)),
    Kind("embedding", EmbeddingParams, "workers.methods.embedding:run", 1800,
         "2-D map (t-SNE, PCA or UMAP) of a dataset's CNN codes, thumbnails on a grid.", ("dataset",)),
    Kind("neighbors", NeighborsParams, "workers.methods.neighbors:run", 1800,
         "Nearest neighbours of an image among a dataset's images in CNN-code space.", ("dataset", "image")),
    Kind("unit_stats", UnitStatsParams, "workers.methods.unit_stats:run", 1800,
         "Per-channel mean activation, how often each never fires, and dead channels over a dataset.",
         ("dataset",)),
)}


def kind(name: str) -> Kind:
    """The registered kind `name` (KeyError when there is none)."""
    return KINDS[name]
