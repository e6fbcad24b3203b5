"""The attribution kinds and their params: each method's knobs on top of what every attribution kind shares
(`core/kinds/explained.py`: the target, and the faithfulness scores of the map). A kind is its params class and
its `Kind` entry in `KINDS` here (the registry collects them), and its method `workers/methods/attribution/<kind>.py`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.kinds.explained import FILLS, AttributionParams, Fill, ObjectiveParams
from core.kinds.kind import Engine, Family, Kind
from core.kinds.params import Params, Target, Workload, batches, channels, layer_or_last
from core.methods import Attribution
from core.model_record import ModelRecord


class SaliencyParams(AttributionParams):
    """Simonyan et al. 2014: d logit[target] / d input."""


class GuidedBackpropParams(ObjectiveParams):
    """Springenberg et al. 2015: the gradient with every rectifier passing back only positive signal
    where its input was positive."""


class DeconvnetParams(ObjectiveParams):
    """Zeiler & Fergus 2014: rectifiers applied to the backward signal only; max-pool switches."""


class CamParams(AttributionParams):
    """What the class activation maps share: the layer whose activations are weighted (the map is at its grid)."""

    layer: str | None = Field(None, min_length=1, max_length=512,
                              description="a spatial layer; default the model's last spatial layer")

    def resolve(self, record: ModelRecord) -> Params:
        layer = layer_or_last(record, self.layer)
        return super(CamParams, self.model_copy(update={"layer": layer})).resolve(record)


class GradcamParams(CamParams):
    """Selvaraju et al. 2017: ReLU(Σ_k α_k A^k), α_k = spatial mean of d logit / d A^k."""


class GradcamPlusPlusParams(CamParams):
    """Chattopadhay et al. 2018 (Grad-CAM++): ReLU(Σ_k w_k A^k), w_k = Σ_ij a_kij ReLU(g_kij) with g = d logit / d A
    and a = g² / (2g² + Σ_ij A^k_ij · g³), the closed form for an exponential logit (as pytorch-grad-cam computes it):
    several instances of a class each weigh in, not only the largest."""


class XgradcamParams(CamParams):
    """Fu et al. 2020 (XGrad-CAM): ReLU(Σ_k w_k A^k), w_k = Σ_ij g_kij A^k_ij / Σ_ij A^k_ij: the gradient weighted by
    the activation, chosen so that the map satisfies the sensitivity and conservation axioms."""


class LayercamParams(CamParams):
    """Jiang et al. 2021 (Layer-CAM): ReLU(Σ_k ReLU(g_k) ⊙ A^k), positive gradients weighing each position: finer
    maps than Grad-CAM at early layers."""


class HirescamParams(CamParams):
    """Draelos & Carin 2020 (HiResCAM): ReLU(Σ_k ∂logit/∂A^k ⊙ A^k), the gradient times the activation at each
    position: for a model whose logit is a linear function of the layer (global average pooling then a linear
    layer), the map sums to the logit's share that comes through the layer, unlike Grad-CAM's averaged gradient."""


class EigencamParams(CamParams):
    """Muhammad & Yeasin 2020 (Eigen-CAM): the layer's activations (positions × channels, centred) projected on
    their first principal component. No gradient and no class: the map is the same for every target."""

    target: Target | None = Field(None, description="Eigen-CAM's map has no target: this only names the class "
                                                    "whose probability the faithfulness scores follow (default the "
                                                    "model's top-1 class for the image)",
                                  json_schema_extra={"x-map-independent": True})  # the explorer reads it


class ChannelPassesParams(CamParams):
    """A CAM whose channel weights each take one forward pass: `forward_batch` channels per ONNX Runtime call."""

    def method_steps(self, work: Workload) -> int:
        """One step per batch of channels."""
        return batches(channels(work.record, self.layer), work.forward_batch)


class ScorecamParams(ChannelPassesParams):
    """Wang et al. 2020 (Score-CAM): each channel, upsampled and scaled to [0, 1], masks the image; the softmax over
    channels of the target's logit on the masked images weighs the channels. Forward passes only, one per channel."""


class AblationcamParams(ChannelPassesParams):
    """Desai & Ramaswamy 2020 (Ablation-CAM): each channel is weighted by the relative drop of the target's logit
    when it is zeroed. Forward passes of the graph after the layer only, one per channel."""


LrpComposite = Literal["epsilon_plus_flat", "epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat"]


class LrpParams(AttributionParams):
    """Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019), with zennit's composites: the
    target's one-hot output relevance passed down layer by layer by each layer type's rule, BatchNorm merged into
    the convolution before it and residual additions split in proportion to their inputs first."""

    composite: LrpComposite = Field(
        "epsilon_plus_flat", description="the rules by layer, as zennit names them: epsilon_plus (ε for dense "
        "layers, z⁺ for convolutions), epsilon_plus_flat (the same, flat in the first layer), epsilon_gamma_box (γ "
        "for convolutions, z^B with the input's bounds in the first layer), epsilon_alpha2_beta1_flat (α2β1 for "
        "convolutions, flat in the first layer)")
    epsilon: float = Field(1e-6, gt=0, le=10, description="ε of the ε rule (dense layers), and every rule's stabiliser")
    gamma: float = Field(0.25, ge=0, le=100, description="γ of epsilon_gamma_box: how much the positive weights are "
                                                         "favoured")


class SmoothgradParams(AttributionParams):
    """Smilkov et al. 2017: the mean gradient over copies of the input with Gaussian noise."""

    samples: int = Field(25, ge=1, le=1000, description="noisy copies averaged")
    noise: float = Field(0.15, ge=0.0, le=1.0, description="noise σ as a fraction of the input's value range "
                                                           "(max − min of the input tensor)")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the noise (and of ROAD's noise and random maps); the "
                                                           "same seed gives the same result")

    def method_steps(self, work: Workload) -> int:
        """One step per batch of noisy copies."""
        return batches(self.samples, work.batch)


class IntegratedGradientsParams(AttributionParams):
    """Sundararajan et al. 2017: (x − x') ⊙ ∫₀¹ ∇F(x' + α(x − x')) dα, by quadrature."""

    steps: int = Field(50, ge=1, le=2000, description="points on the path from baseline to input")
    baseline: Literal["zeros", "black", "blur"] = Field(
        "black", description="zeros: 0 in model-input space; black: a black image; blur: the image blurred "
                             "(Gaussian, radius 1/16 of its size)")
    rule: Literal["gauss_legendre", "riemann_middle"] = Field(
        "gauss_legendre", description="quadrature along the path: Gauss–Legendre nodes, or the midpoint rule")

    def method_steps(self, work: Workload) -> int:
        """One step per batch of path points."""
        return batches(self.steps, work.batch)


class RiseParams(AttributionParams):
    """Petsiuk, Das & Saenko 2018 (RISE): the target's probability on randomly masked copies of the image, the
    map Σ_i p_i M_i / (N · p_keep); forward passes only, `forward_batch` masked copies per call."""

    masks: int = Field(2000, ge=1, le=100_000, description="random masks (one forward pass each)")
    cell: int = Field(28, ge=1, le=4096, description="side of a mask cell in input pixels: masks are random binary "
                                                     "grids of ⌈H/cell⌉×⌈W/cell⌉ cells, upsampled bilinearly and "
                                                     "shifted by up to one cell (28 at 224 px: 8×8 cells)")
    p_keep: float = Field(0.5, gt=0, lt=1, description="probability that a cell of a mask keeps the image")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the masks (and of ROAD's noise and random "
                                                           "maps); the same seed gives the same map")
    baseline: Fill = Field("zeros", description=f"what masked-out pixels become: {FILLS}")

    def method_steps(self, work: Workload) -> int:
        """One step per batch of masked copies."""
        return batches(self.masks, work.forward_batch)


class KernelShapParams(AttributionParams):
    """Lundberg & Lee 2017 (Kernel SHAP) over SLIC superpixels (Achanta et al. 2012): coalitions of superpixels
    sampled with the Shapley kernel, the target's probability with the others replaced by `baseline`, and the
    weighted linear regression whose coefficients are the superpixels' Shapley estimates."""

    segments: int = Field(50, ge=2, le=2000, description="superpixels asked of SLIC (it returns about as many)")
    compactness: float = Field(10.0, gt=0, le=1000, description="SLIC's balance of colour and space (higher: "
                                                                "squarer superpixels)")
    samples: int = Field(1000, ge=3, le=100_000, description="coalitions evaluated (one forward pass each), the "
                                                            "empty and the full one included, as captum's n_samples; "
                                                            "when every coalition fits, all are used (exact)")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the coalitions (and of ROAD's noise and random "
                                                           "maps); the same seed gives the same map")
    baseline: Fill = Field("zeros", description=f"what a superpixel left out of a coalition becomes: {FILLS}")

    def method_steps(self, work: Workload) -> int:
        """One step per batch of coalitions (fewer when every coalition fits: the job then ends early)."""
        return batches(self.samples, work.forward_batch)


def attribution(name: str, params: type[AttributionParams], time_limit_s: int, summary: str,
                engine: Engine = Engine.TORCH) -> Kind:
    """An attribution kind: reads an image, returns an `Attribution`; ONNX Runtime for forward-only ones."""
    return Kind(name, params, time_limit_s, summary, Family.ATTRIBUTION, returns=Attribution, engine=engine)


KINDS = (
    attribution("saliency", SaliencyParams, 120,
                "Gradient of the class logit with respect to the input (Simonyan et al. 2014)."),
    attribution("guided_backprop", GuidedBackpropParams, 120,
                "Guided backpropagation (Springenberg et al. 2015) of a class logit or one unit."),
    attribution("deconvnet", DeconvnetParams, 120,
                "Deconvnet projection (Zeiler & Fergus 2014) of a class logit or one unit."),
    attribution("gradcam", GradcamParams, 120, "Grad-CAM (Selvaraju et al. 2017) at a layer's grid."),
    attribution("gradcam_plus_plus", GradcamPlusPlusParams, 120,
                "Grad-CAM++ (Chattopadhay et al. 2018): positive gradients weighted per position, at a layer's grid."),
    attribution("xgradcam", XgradcamParams, 120,
                "XGrad-CAM (Fu et al. 2020): channel weights from activation-weighted gradients, at a layer's grid."),
    attribution("layercam", LayercamParams, 120,
                "Layer-CAM (Jiang et al. 2021): positive gradient times activation at each position of a layer's grid."),
    attribution("hirescam", HirescamParams, 120,
                "HiResCAM (Draelos & Carin 2020): gradient times activation at each position of a layer's grid."),
    attribution("eigencam", EigencamParams, 300,
                "Eigen-CAM (Muhammad & Yeasin 2020): a layer's first principal component; no target, forward only.",
                engine=Engine.ONNXRUNTIME),
    attribution("scorecam", ScorecamParams, 900,
                "Score-CAM (Wang et al. 2020): channel weights from the target's logit on channel-masked images, "
                "forward passes only.", engine=Engine.ONNXRUNTIME),
    attribution("ablationcam", AblationcamParams, 900,
                "Ablation-CAM (Desai & Ramaswamy 2020): channel weights from the logit's drop when each channel is "
                "zeroed, forward passes only.", engine=Engine.ONNXRUNTIME),
    attribution("smoothgrad", SmoothgradParams, 900,
                "SmoothGrad (Smilkov et al. 2017): gradients averaged over noisy copies."),
    attribution("integrated_gradients", IntegratedGradientsParams, 900,
                "Integrated gradients (Sundararajan et al. 2017) from a baseline image."),
    attribution("lrp", LrpParams, 300,
                "Layer-wise relevance propagation (Bach et al. 2015) with zennit's composites, relevance at the input."),
    attribution("rise", RiseParams, 900,
                "RISE (Petsiuk et al. 2018): the target's probability under random masks, forward passes only.",
                engine=Engine.ONNXRUNTIME),
    attribution("kernel_shap", KernelShapParams, 900,
                "Kernel SHAP (Lundberg & Lee 2017) over SLIC superpixels, forward passes only.",
                engine=Engine.ONNXRUNTIME),
)
BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KINDS}

AttributionKind = Literal[tuple(BY_NAME)]  # type: ignore[valid-type]  (the names above, as the API validates them)
