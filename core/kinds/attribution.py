"""The attribution kinds and their params: what to explain (a class logit or one unit), each method's knobs,
and the faithfulness scores every attribution kind computes by default (`evaluate`): ROAD against random maps
of the map's own grain, then deletion/insertion. A kind is its params class and its `Kind` entry in `KINDS`
(the registry collects them), and its method `workers/methods/attribution/<kind>.py`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from core.kinds.kind import Engine, Family, Kind
from core.kinds.params import Params, Target, Workload, batches, layer_or_last, spatial_layer
from core.methods import Attribution
from core.model_record import ModelRecord

EVALUATION_FIELDS = ("evaluate", "road_fractions", "road_noise", "road_random_maps", "evaluation_steps",
                     "deletion_baseline")
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

Fill = Literal["zeros", "black", "mean", "blur"]
FILLS = ("zeros: 0 in model-input space; black: a black image; mean: the image's mean colour; blur: the image "
         "blurred (Gaussian, radius 1/16 of its size)")


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


class AttributionParams(ClassTargetParams):
    """What every attribution kind shares: the faithfulness scores of its map, computed after the map from forward
    passes only, `forward_batch` perturbed copies per ONNX Runtime call. ROAD (Rong et al. 2022) first: pixels
    removed most (MoRF) and least (LeRF) relevant first and filled by noisy linear imputation, so the model is not
    judged on images far from any it was trained on; the same score of random maps at the map's own grain is the
    level a map must beat. Deletion/insertion (Petsiuk et al. 2018) second, with its baseline named."""

    evaluate: bool = Field(True, description="score the map: ROAD (metrics `road_score`, `road_random_mean`, "
                                             "`road_random_sd`, `beats_random`) and deletion/insertion (metrics "
                                             "`deletion_auc`, `insertion_auc`); curves in `evaluation.json`, the "
                                             "ranking map in `ranking.npy`")
    road_fractions: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: list(ROAD_FRACTIONS), min_length=1, max_length=50,
        description="fractions of the pixels ROAD removes, each most relevant first (MoRF) and least relevant "
                    "first (LeRF); `road_score` = mean(LeRF − MoRF) / 2 of the target's probability")
    road_noise: float = Field(0.01, ge=0, le=10, description="σ of the Gaussian noise added to imputed pixels "
                                                             "(model-input space), seeded by `seed`")
    road_random_maps: int = Field(4, ge=0, le=64, description="random maps at the attribution's own grain scored "
                                                              "the same way: the level `beats_random` compares with "
                                                              "(road_score > mean + 2·sd); 0: none")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of ROAD's noise and random maps")
    evaluation_steps: int = Field(32, ge=2, le=1024, description="deletion/insertion: points on each curve after the "
                                                                 "first: the image changes by 1/steps of its pixels "
                                                                 "at each")
    deletion_baseline: Fill = Field("blur", description=f"deletion: what deleted pixels become: {FILLS}; blur "
                                    "by default: black pixels are far from any training image and add evidence "
                                    "of their own (ROAD's reason)")

    @field_validator("road_fractions")
    @classmethod
    def _fractions_once_each(cls, fractions: list[float]) -> list[float]:
        if len(set(fractions)) != len(fractions):
            raise ValueError("each ROAD fraction may be given once")
        return sorted(fractions)

    def road_passes(self) -> int:
        """Forward passes of ROAD: MoRF and LeRF at every fraction, for the map and each random map."""
        return 2 * len(self.road_fractions) * (1 + self.road_random_maps)

    def scored(self) -> bool:
        """Whether the map is scored: asked for, and of a class (the scores follow a class's probability)."""
        return self.evaluate and self.explains_class()

    def deletion_passes(self) -> int:
        """Forward passes of deletion/insertion: both curves at steps + 1 points, the unchanged image shared."""
        return 2 * self.evaluation_steps + 1

    def scoring_batches(self, forward_batch: int) -> tuple[int, int]:
        """(ROAD's, deletion/insertion's) batches of perturbed copies: a progress step each; (0, 0) unscored."""
        if not self.scored():
            return 0, 0
        return batches(self.road_passes(), forward_batch), batches(self.deletion_passes(), forward_batch)

    def scoring_steps(self, work: Workload) -> int:
        """The scores' steps: one per batch of ROAD's imputed copies, then one per batch of deletion/insertion's."""
        return sum(self.scoring_batches(work.forward_batch))

    def method_steps(self, work: Workload) -> int:
        """One pass by default."""
        return 1

    def total_steps(self, work: Workload) -> int:
        """The method's steps, then the scores'."""
        return self.method_steps(work) + self.scoring_steps(work)


class ObjectiveParams(AttributionParams):
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


class HirescamParams(CamParams):
    """Draper et al. 2020 (HiResCAM): ReLU(Σ_k ∂logit/∂A^k ⊙ A^k), the gradient times the activation at each
    position: for a model whose logit is a linear function of the layer (global average pooling then a linear
    layer), the map sums to the logit's share that comes through the layer, unlike Grad-CAM's averaged gradient."""


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
    attribution("hirescam", HirescamParams, 120,
                "HiResCAM (Draper et al. 2020): gradient times activation at each position of a layer's grid."),
    attribution("smoothgrad", SmoothgradParams, 900,
                "SmoothGrad (Smilkov et al. 2017): gradients averaged over noisy copies."),
    attribution("integrated_gradients", IntegratedGradientsParams, 900,
                "Integrated gradients (Sundararajan et al. 2017) from a baseline image."),
    attribution("rise", RiseParams, 900,
                "RISE (Petsiuk et al. 2018): the target's probability under random masks, forward passes only.",
                engine=Engine.ONNXRUNTIME),
    attribution("kernel_shap", KernelShapParams, 900,
                "Kernel SHAP (Lundberg & Lee 2017) over SLIC superpixels, forward passes only.",
                engine=Engine.ONNXRUNTIME),
)
BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KINDS}

AttributionKind = Literal[tuple(BY_NAME)]  # type: ignore[valid-type]  (the names above, as the API validates them)
