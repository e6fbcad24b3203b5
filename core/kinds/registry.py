"""The one registry of job kinds: kind → params model → method → time limit. Torch-free.

The API reads it to build the `POST /v1/jobs` body (a union discriminated on `kind`, so
OpenAPI shows every kind's parameters and bad values are refused with 422 before anything is
queued); the worker reads it to find the function to call. Adding a kind is one `Kind` entry
here plus one module in `workers/methods/` exposing `run(task)`, returning an `Attribution`
(attribution kinds), a `Made` (image-making kinds) or an `Output` (see `core.methods`).

A kind declares what it reads (`reads`: inputs, each with a source the API knows how to accept,
digest and keep, and the worker knows how to load) and what it returns (`returns`), and which
engine runs it (torch on the workers' device, or ONNX Runtime for forward-only kinds). A kind
that reads a new input is one `Input` here, one loader on each side (`service/job_inputs.py`,
`workers/inputs.py`) and its method module.

Params models hold the static bounds; `resolve(record)` checks what depends on the model (class
labels, layer names, channel counts) and fills in model-dependent defaults, so the Job a client
gets back shows every parameter it will run with.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.kinds.atlas import ActivationAtlasParams, LayerAtlasParams
from core.kinds.attribution import (
    DeconvnetParams,
    GradcamParams,
    GuidedBackpropParams,
    IntegratedGradientsParams,
    KernelShapParams,
    RiseParams,
    SaliencyParams,
    SmoothgradParams,
)
from core.kinds.dataset import EmbeddingParams, NeighborsParams, TopActivationsParams, UnitStatsParams
from core.kinds.making import (
    AdversarialParams,
    ClassModelParams,
    DeepdreamParams,
    FeatureVisParams,
    InversionParams,
    StyleTransferParams,
    TextureParams,
)
from core.kinds.params import Params
from core.kinds.trust import CompareParams, SanityCheckParams
from core.methods import Attribution, Made, Output


class Source(StrEnum):
    """Where an input comes from: how the API accepts it and the worker loads it."""

    IMAGE = "image"  # a multipart part, {"id"} of an uploaded image, or {"data"}: kept by content hash
    DATASET = "dataset"  # the id of one of the caller's datasets (which never change: the id is the content)


@dataclass(frozen=True)
class Input:
    """One input of a kind: the request field (and multipart part) `name`, its source, and whether a job of
    the kind must give it (an optional one is simply absent from the job's inputs when not given)."""

    name: str
    source: Source
    description: str
    required: bool = True


IMAGE = Input("image", Source.IMAGE, "the image to explain or start from")
STYLE_IMAGE = Input("style_image", Source.IMAGE, "the image whose style (Gram matrices) is copied")
DATASET = Input("dataset", Source.DATASET, "a dataset id from `POST /v1/datasets`")
SOME_DATASET = Input("dataset", Source.DATASET, "a dataset id from `POST /v1/datasets` (optional: top patches and "
                     "statistics of each channel)", required=False)


class Engine(StrEnum):
    TORCH = "torch"  # a network on the worker's device (gradients)
    ONNXRUNTIME = "onnxruntime"  # forward passes only, on the model's ONNX file


@dataclass(frozen=True)
class Kind:
    """One kind of job: its params, the function that runs it, its time limit, what it reads and returns."""

    name: str
    params: type[Params]
    method: str  # "module:function", called as function(task) by the worker
    time_limit_s: int  # at time-limit scale 1; the job then fails with code `timeout`
    summary: str
    reads: tuple[Input, ...] = (IMAGE,)
    returns: type = Attribution  # a result type of `core.methods`
    engine: Engine = Engine.TORCH


def image_maker(*args, reads: tuple[Input, ...] = (IMAGE,)) -> Kind:
    return Kind(*args, reads=reads, returns=Made)


def dataset_kind(*args, reads: tuple[Input, ...] = (DATASET,)) -> Kind:
    return Kind(*args, reads=reads, returns=Output, engine=Engine.ONNXRUNTIME)


def black_box(*args) -> Kind:
    """An attribution kind that needs forward passes only: it runs on the model's ONNX file."""
    return Kind(*args, engine=Engine.ONNXRUNTIME)


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
    black_box("rise", RiseParams, "workers.methods.rise:run", 900,
              "RISE (Petsiuk et al. 2018): the target's probability under random masks, forward passes only."),
    black_box("kernel_shap", KernelShapParams, "workers.methods.kernel_shap:run", 900,
              "Kernel SHAP (Lundberg & Lee 2017) over SLIC superpixels, forward passes only."),
    Kind("sanity_check", SanityCheckParams, "workers.methods.sanity_check:run", 1800,
         "Cascading weight randomisation (Adebayo et al. 2018): does a method's map depend on the model?",
         returns=Output),
    Kind("compare", CompareParams, "workers.methods.compare:run", 1800,
         "Attribution methods on one image, ranked by deletion and insertion scores (Petsiuk et al. 2018).",
         returns=Output),
    image_maker("class_model", ClassModelParams, "workers.methods.class_model:run", 900,
                "An image that maximises a class logit (Simonyan et al. 2014; Yosinski et al. 2015).", reads=()),
    image_maker("feature_vis", FeatureVisParams, "workers.methods.feature_vis:run", 900,
                "An image that maximises one channel or neuron (Olah et al. 2017).", reads=()),
    image_maker("inversion", InversionParams, "workers.methods.inversion:run", 1200,
                "An image reconstructed from its features at a layer (Mahendran & Vedaldi 2015)."),
    image_maker("deepdream", DeepdreamParams, "workers.methods.deepdream:run", 900,
                "DeepDream (Mordvintsev et al. 2015): amplify what a layer sees, octave by octave."),
    image_maker("adversarial", AdversarialParams, "workers.methods.adversarial:run", 600,
                "A targeted fooling image within an L-inf budget (Szegedy et al. 2014; Goodfellow et al. 2015)."),
    image_maker("texture", TextureParams, "workers.methods.texture:run", 1200,
                "Texture synthesis by Gram-matrix matching (Gatys et al. 2015)."),
    image_maker("style_transfer", StyleTransferParams, "workers.methods.style_transfer:run", 1200,
                "Style transfer: content of one image, Gram matrices of another (Gatys et al. 2016).",
                reads=(IMAGE, STYLE_IMAGE)),
    dataset_kind("top_activations", TopActivationsParams, "workers.methods.top_activations:run", 1800,
                 "Images and receptive-field patches that drive a channel hardest (Zeiler & Fergus 2014)."),
    dataset_kind("embedding", EmbeddingParams, "workers.methods.embedding:run", 1800,
                 "2-D map (t-SNE, PCA or UMAP) of a dataset's CNN codes, thumbnails on a grid."),
    dataset_kind("neighbors", NeighborsParams, "workers.methods.neighbors:run", 1800,
                 "Nearest neighbours of an image among a dataset's images in CNN-code space.",
                 reads=(DATASET, IMAGE)),
    Kind("layer_atlas", LayerAtlasParams, "workers.methods.layer_atlas:run", 3600,
         "Every channel of a layer: feature visualization, diversity variants, top dataset patches, statistics.",
         reads=(SOME_DATASET,), returns=Output),
    Kind("activation_atlas", ActivationAtlasParams, "workers.methods.activation_atlas:run", 3600,
         "Activation atlas (Carter et al. 2019): a layer's activations over a dataset mapped to 2-D, each cell's "
         "mean direction feature-visualized.", reads=(DATASET,), returns=Output),
    dataset_kind("unit_stats", UnitStatsParams, "workers.methods.unit_stats:run", 1800,
                 "Per-channel mean activation, how often each never fires, and dead channels over a dataset."),
)}
