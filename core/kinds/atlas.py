"""The atlas kinds and their params (`KINDS`, collected by `core/kinds/registry.py`). Torch-free.

`layer_atlas` is a Microscope-style page for a layer of the client's own model: every chosen channel's
feature visualization (and `diversity` variants of it), its top dataset patches and its statistics.
`activation_atlas` (Carter et al., Distill 2019) maps the activations of a layer over a dataset to 2-D,
and feature-visualizes the mean activation direction of every occupied cell of a lattice over the map.
Both optimise many images at once, one forward and one backward pass a step for the whole batch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.kinds.dataset import load_steps, pass_steps, umap_available
from core.kinds.kind import DATASET, SOME_DATASET, Family, Kind
from core.kinds.making import RenderParams
from core.kinds.params import Params, Workload, middle_layer, spatial_layer
from core.methods import Output
from core.model_record import ModelRecord

MAX_ATLAS_CHANNELS = 4096


class AtlasRenderParams(RenderParams):
    """The gradient-ascent loop of the atlases: small icons, fewer steps by default than `feature_vis`."""

    size: int = Field(64, ge=32, le=256, description="side of each icon in pixels (square)")
    steps: int = Field(128, ge=1, le=2000, description="optimisation steps of every icon; each step is one forward "
                                                      "and one backward pass for a whole batch of icons")
    batch: int | None = Field(None, ge=1, le=256, description="icons optimised at once; default from the worker's "
                                                              "settings (and its GPU's free memory)")
    preview_every: int = Field(0, ge=0, le=2000, description="a preview of the atlas comes after every batch of "
                                                             "icons; with N > 0 also every N steps within a batch")


class LayerAtlasParams(AtlasRenderParams):
    """Every chosen channel of a layer: its feature visualization, `diversity` variants of it (Lucid's diversity
    term on the variants' Gram matrices), and with a dataset its top-k patches and statistics."""

    layer: str = Field(min_length=1, max_length=512, description="a spatial layer")
    channels: list[int] | None = Field(None, min_length=1, max_length=MAX_ATLAS_CHANNELS,
                                       description="channels to show (default: all of the layer's)")
    diversity: int = Field(1, ge=1, le=8, description="images per channel; above 1 the variants are pushed apart "
                                                      "(Gram-matrix cosine similarity penalised)")
    diversity_weight: float = Field(1.0, ge=0, le=1000, description="weight of the diversity penalty, relative to "
                                                                    "the channel's own activation")
    k: int = Field(4, ge=0, le=64, description="top dataset patches per channel (with a dataset)")
    dead_fraction: float = Field(1.0, gt=0, le=1, description="a channel is dead when it never fires on at least "
                                                              "this fraction of the dataset's images")

    def resolve(self, record: ModelRecord) -> Params:
        shape = spatial_layer(record, self.layer).shape
        if self.channels is None:
            return self.model_copy(update={"channels": list(range(shape[0]))})
        bad = [c for c in self.channels if not 0 <= c < shape[0]]
        if bad:
            raise ValueError(f"layer {self.layer!r} has {shape[0]} channels; {bad[:5]} out of range")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels are listed more than once")
        return self

    def total_steps(self, work: Workload) -> int:
        """A pass over the dataset (when there is one) and the patches loaded, then one step per channel."""
        dataset = 0
        if work.images:
            shown = min(work.images, len(self.channels or []) * self.k)
            dataset = pass_steps(work.images, work.batch) + load_steps(shown, work.batch)
        return dataset + len(self.channels or [])


class ActivationAtlasParams(AtlasRenderParams):
    """An activation atlas (Carter et al. 2019) of one layer over a dataset."""

    layer: str = Field(min_length=1, max_length=512, description="a spatial layer")
    grid: int = Field(8, ge=2, le=40, description="cells per side of the lattice over the 2-D map")
    positions_per_image: int = Field(16, ge=1, le=256, description="random spatial positions sampled per image")
    method: Literal["umap", "tsne"] = Field("umap", description="the 2-D reduction: UMAP or t-SNE")
    min_count: int = Field(3, ge=1, le=10000, description="activations a cell needs to get an icon (a cell of one "
                                                          "activation has that activation as its direction)")
    size: int = Field(48, ge=32, le=256, description="side of each icon in pixels (square)")
    transforms: int = Field(0, ge=0, le=3, description="robustness transforms strength (pad, jitter, scale, rotate); "
                                                        "off by default: the objective reads one position, which "
                                                        "jitter would move (icons then match their cells more closely)")
    cossim_pow: float = Field(3.0, ge=0, le=8, description="the icon objective is dot(activation, direction) × "
                                                           "cos^this: higher keeps the icon on the direction")

    def resolve(self, record: ModelRecord) -> Params:
        spatial_layer(record, self.layer)
        if self.method == "umap" and not umap_available():
            raise ValueError("method 'umap' needs the `umap-learn` package; use 'tsne'")
        return self

    def total_steps(self, work: Workload) -> int:
        """A pass over the dataset, the 2-D map, then one step per icon (at most grid² of them)."""
        return pass_steps(work.images, work.batch) + 1 + self.grid * self.grid


def rectified_layer(record: ModelRecord) -> str:
    """A rectified layer (ReLU, Clip) about two thirds deep, else any layer there: non-negative activations,
    what NMF factorises without losing a negative part."""
    layers = record.layers or []
    if not layers:
        raise ValueError(f"model {record.id!r} lists no spatial layer")
    rectified = [layer.name for layer in layers[: len(layers) * 2 // 3 + 1] if layer.op in ("Relu", "Clip")]
    return rectified[-1] if rectified else middle_layer(record)


class NeuronGroupsParams(AtlasRenderParams):
    """Neuron groups (Olah et al., "The Building Blocks of Interpretability", Distill 2018): the layer's
    activations on one image (positions × channels, the negative part set to 0) factorised by NMF into `groups`
    factors; each group's spatial map over the image, its top channels, its share of the activations, and a
    feature visualization of its channel direction (the atlas icons' objective, at the centre of the grid)."""

    layer: str | None = Field(None, min_length=1, max_length=512, description="a spatial layer (default: a "
                                                                              "rectified layer two thirds deep)")
    groups: int = Field(6, ge=1, le=32, description="NMF components (neuron groups)",
                        json_schema_extra={"x-units-panel": True})  # the explorer shows the kind in its Units panel
    top_channels: int = Field(8, ge=1, le=256, description="channels listed per group, by weight")
    max_iter: int = Field(1000, ge=10, le=10000, description="NMF iterations at most (scikit-learn's coordinate "
                                                            "descent, tolerance 1e-4)")
    transforms: int = Field(0, ge=0, le=3, description="robustness transforms of the icons (off by default: the "
                                                        "objective reads the centre position, which jitter moves)")
    cossim_pow: float = Field(3.0, ge=0, le=8, description="icon objective: dot(activation, group direction) × "
                                                           "cos^this")

    def resolve(self, record: ModelRecord) -> Params:
        layer = self.layer or rectified_layer(record)
        channels, height, width = spatial_layer(record, layer).shape
        if self.groups > min(channels, height * width):
            raise ValueError(f"layer {layer!r} has {channels} channels at {height}×{width} positions; NMF gives at "
                             f"most {min(channels, height * width)} groups there")
        return self.model_copy(update={"layer": layer})

    def total_steps(self, work: Workload) -> int:
        """The factorisation, then one step per group's icon."""
        return 1 + self.groups


KINDS = (
    Kind("layer_atlas", LayerAtlasParams, 3600, "Every channel of a layer: feature visualization, diversity variants, "
         "top dataset patches, statistics.", Family.ATLAS, reads=(SOME_DATASET,), returns=Output),
    Kind("activation_atlas", ActivationAtlasParams, 3600, "Activation atlas (Carter et al. 2019): a layer's "
         "activations over a dataset mapped to 2-D, each cell's mean direction feature-visualized.", Family.ATLAS,
         reads=(DATASET,), returns=Output),
    Kind("neuron_groups", NeuronGroupsParams, 1800, "Neuron groups (Olah et al. 2018): NMF of a layer's activations "
         "on an image; each group's map over the image, top channels, share and feature visualization.",
         Family.ATLAS, returns=Output),
)
