"""What every attribution kind's params share: what to explain (a class logit, or one unit of a layer) and the
faithfulness scores computed by default after the map (`evaluate`): ROAD against random maps of the map's own
grain, then deletion/insertion. The kinds themselves are declared in `core/kinds/attribution.py`. Torch-free."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from core.kinds.params import Params, Target, Workload, batches, spatial_layer
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
