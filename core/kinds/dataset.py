"""The dataset kinds and their params (`KINDS`): they run a model forward over a stored dataset (ONNX Runtime).

Every one looks at one spatial layer, by default the last; CNN codes are that layer pooled over
positions (for the default, the penultimate representation the classifier reads).
"""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import Field

from core.kinds.kind import DATASET, IMAGE, Engine, Family, Input, Kind
from core.kinds.params import Params, Workload, layer_or_last, spatial_layer
from core.methods import Output
from core.model_record import ModelRecord


def umap_available() -> bool:
    """Whether `umap-learn` is importable: it is a main dependency, so False only on an install that left it
    out on purpose (method "umap" is then refused with 422 and a message that says why)."""
    return importlib.util.find_spec("umap") is not None


def pass_steps(images: int, batch: int) -> int:
    """Progress steps of one pass over `images` images, `batch` at a time: one per batch."""
    return -(-images // batch)


def load_steps(images: int, batch: int) -> int:
    """Progress steps of loading `images` chosen images one by one after the pass: one per `batch` of
    them but the last (`workers/dataset_feed.py`, `Feed.images`)."""
    return max(0, pass_steps(images, batch) - 1)


class DatasetLayerParams(Params):
    layer: str | None = Field(None, min_length=1, max_length=512,
                              description="a spatial layer; default the model's last spatial layer")

    def resolve(self, record: ModelRecord) -> Params:
        return self.model_copy(update={"layer": layer_or_last(record, self.layer)})

    def total_steps(self, work: Workload) -> int:
        """One pass over the dataset."""
        return pass_steps(work.images, work.batch)


class CodeParams(DatasetLayerParams):
    pool: Literal["mean", "max"] = Field("mean", description="how a C×h×w activation becomes a C-vector "
                                                             "(a CNN code): mean or max over positions")


class TopActivationsParams(DatasetLayerParams):
    """Zeiler & Fergus 2014: the k images (and receptive-field patches) that drive a channel hardest."""

    channel: int | None = Field(None, ge=0, description="one channel; omitted: every channel of the layer, "
                                                        "found in one pass over the dataset")
    k: int = Field(9, ge=1, le=100, description="images per channel (one patch per image, at its strongest "
                                                "position)")

    def resolve(self, record: ModelRecord) -> Params:
        resolved = super().resolve(record)
        channels = spatial_layer(record, resolved.layer).shape[0]
        if self.channel is not None and self.channel >= channels:
            raise ValueError(f"layer {resolved.layer!r} has {channels} channels; channel {self.channel} is out of range")
        return resolved

    def total_steps(self, work: Workload) -> int:
        """The pass, then loading at most `k` winners per channel (fewer when images win several channels)."""
        channels = 1 if self.channel is not None else spatial_layer(work.record, self.layer).shape[0]
        return super().total_steps(work) + load_steps(min(work.images, channels * self.k), work.batch)


class EmbeddingParams(CodeParams):
    """CNN codes reduced to 2-D (van der Maaten & Hinton 2008 t-SNE; PCA; McInnes et al. 2018 UMAP)."""

    method: Literal["tsne", "pca", "umap"] = Field("tsne", description="tsne (scikit-learn), pca, or umap "
                                                                       "(needs the `umap-learn` package)")
    perplexity: float | None = Field(None, ge=2, le=100, description="t-SNE perplexity; default "
                                                                      "min(30, (images - 1) / 3)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random state of t-SNE and UMAP")

    def resolve(self, record: ModelRecord) -> Params:
        if self.method == "umap" and not umap_available():
            raise ValueError("method 'umap' needs the `umap-learn` package, which is not installed on this "
                             "service; use 'tsne' or 'pca'")
        return super().resolve(record)


class NeighborsParams(CodeParams):
    """Nearest neighbours of the image among the dataset's images, in CNN-code space."""

    k: int = Field(8, ge=1, le=100, description="neighbours returned, nearest first")
    metric: Literal["cosine", "l2"] = Field("cosine", description="cosine: 1 − cos(a, b); l2: Euclidean distance, "
                                                                  "in the layer's units")

    def total_steps(self, work: Workload) -> int:
        """The pass, then loading the `k` nearest (at most every image)."""
        return super().total_steps(work) + load_steps(min(work.images, self.k), work.batch)


class UnitStatsParams(DatasetLayerParams):
    """Per channel over the dataset: mean activation, how often it never fires, dead channels."""

    dead_fraction: float = Field(1.0, gt=0, le=1, description="a channel is dead when it never fires (max over "
                                                              "positions ≤ 0) on at least this fraction of images")


def dataset_kind(name: str, params: type[Params], time_limit_s: int, summary: str,
                 reads: tuple[Input, ...] = (DATASET,)) -> Kind:
    """A kind that reads a dataset through ONNX Runtime and returns an `Output`."""
    return Kind(name, params, time_limit_s, summary, Family.DATASET, reads=reads, returns=Output,
                engine=Engine.ONNXRUNTIME)


KINDS = (
    dataset_kind("top_activations", TopActivationsParams, 1800,
                 "Images and receptive-field patches that drive a channel hardest (Zeiler & Fergus 2014)."),
    dataset_kind("embedding", EmbeddingParams, 1800,
                 "2-D map (t-SNE, PCA or UMAP) of a dataset's CNN codes, thumbnails on a grid."),
    dataset_kind("neighbors", NeighborsParams, 1800,
                 "Nearest neighbours of an image among a dataset's images in CNN-code space.",
                 reads=(DATASET, IMAGE)),
    dataset_kind("unit_stats", UnitStatsParams, 1800,
                 "Per-channel mean activation, how often each never fires, and dead channels over a dataset."),
)
