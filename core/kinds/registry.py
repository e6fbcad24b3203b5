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

from dataclasses import dataclass

from core.kinds.attribution import (DeconvnetParams, GradcamParams, GuidedBackpropParams, IntegratedGradientsParams,
                                    SaliencyParams, SmoothgradParams)
from core.kinds.dataset import EmbeddingParams, NeighborsParams, TopActivationsParams, UnitStatsParams
from core.kinds.making import (AdversarialParams, ClassModelParams, DeepdreamParams, FeatureVisParams,
                               InversionParams, StyleTransferParams, TextureParams)
from core.kinds.params import Params


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
