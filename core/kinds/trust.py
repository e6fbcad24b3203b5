"""The kinds that judge attribution maps and their params: `sanity_check` (does the map depend on the model?) and
`compare` (which map is most faithful to it?). Torch-free.

Both run attribution kinds inside them; `resolve` checks each one's params against the model and fills in its
defaults, so the Job shows every inner method's params exactly as they will run.
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import Field, model_validator

from core.kinds import attribution
from core.kinds.attribution import AttributionKind
from core.kinds.explained import EVALUATION_FIELDS, FILLS, ROAD_FRACTIONS, AttributionParams, Fill
from core.kinds.kind import Family, Kind
from core.kinds.params import Params, Target, Workload, batches
from core.methods import Output
from core.model_record import ModelRecord

ATTRIBUTION_KINDS: tuple[str, ...] = get_args(AttributionKind)
SET_BY_OUTER = ("target", *EVALUATION_FIELDS)  # the outer kind sets these on every inner method


def params_of(kind: str) -> type[AttributionParams]:
    """The params model of an attribution kind."""
    return attribution.BY_NAME[kind].params


def inner_params(kind: str, given: dict[str, Any], **fixed) -> AttributionParams:
    """An inner method's params: `given` (which may not set what the outer kind sets) with `fixed` on top."""
    clash = sorted(set(given) & set(SET_BY_OUTER))
    if clash:
        raise ValueError(f"params of {kind} may not set {', '.join(clash)}: the outer kind sets them")
    return params_of(kind).model_validate({**given, **fixed})


def shown(params: AttributionParams) -> dict:
    """An inner method's params as the Job shows them: what the outer kind sets left out."""
    return params.model_dump(mode="json", exclude=set(SET_BY_OUTER))


class SanityCheckParams(Params):
    """Adebayo et al. 2018, cascading model-parameter randomisation: from the logits down, the weights of one
    more layer at a time are re-initialised (on a copy of the network) and `method`'s map is made again; each
    step reports its Spearman rank correlation and SSIM with the original map (absolute values summed over
    channels). A method whose maps stay alike while the model is destroyed does not explain the model."""

    method: AttributionKind = Field("saliency", description="the attribution kind to check")
    method_params: dict[str, Any] = Field(default_factory=dict, description="its params (not `target` nor the "
                                          "evaluation ones); shown filled in on the returned Job")
    target: Target | None = Field(None, description="class index or label; default the model's top-1 class for the "
                                                    "image (kept through the cascade)")
    steps: int = Field(16, ge=1, le=500, description="at most this many randomisation steps: the weighted layers "
                                                     "(a norm layer goes with the layer before it), top-down; a "
                                                     "network with more layers has consecutive ones randomised "
                                                     "together")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the re-initialised weights")

    @model_validator(mode="after")
    def _inner_is_valid(self):
        self.inner()
        return self

    def inner(self) -> AttributionParams:
        """The checked method's params (never scored: the check compares maps, not their faithfulness)."""
        return inner_params(self.method, self.method_params, target=self.target, evaluate=False)

    def resolve(self, record: ModelRecord) -> Params:
        resolved = self.inner().resolve(record)
        return self.model_copy(update={"method_params": shown(resolved)})

    def total_steps(self, work: Workload) -> int:
        """The original map, then one map per randomisation step (a network with fewer weighted layers than
        `steps` ends early)."""
        return (self.steps + 1) * self.inner().method_steps(work)


class CompareParams(Params):
    """Every attribution kind (or those listed) on one image and target, each scored by ROAD against random maps
    of its own grain (Rong et al. 2022) and by deletion and insertion (Petsiuk et al. 2018), and ranked by ROAD;
    a random map (pixel level, seeded) is scored by deletion/insertion beside them."""

    methods: list[AttributionKind] = Field(default_factory=lambda: list(ATTRIBUTION_KINDS), min_length=1,
                                           description="the attribution kinds to compare (default all)")
    method_params: dict[AttributionKind, dict[str, Any]] = Field(
        default_factory=dict, description="params per method (not `target` nor the evaluation ones); shown filled "
                                          "in on the returned Job")
    target: Target | None = Field(None, description="class index or label; default the model's top-1 class")
    road_fractions: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: list(ROAD_FRACTIONS), min_length=1, max_length=50,
        description="fractions of the pixels ROAD removes (each method's `road_fractions`)")
    road_noise: float = Field(0.01, ge=0, le=10, description="σ of ROAD's imputation noise (each method's `road_noise`)")
    road_random_maps: int = Field(4, ge=0, le=64, description="random maps at each method's own grain scored "
                                                              "beside it (each method's `road_random_maps`)")
    evaluation_steps: int = Field(32, ge=2, le=1024, description="points on each deletion/insertion curve after "
                                                                 "the first")
    deletion_baseline: Fill = Field("blur", description=f"what deleted pixels become: {FILLS}")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the random reference map")

    @model_validator(mode="after")
    def _methods_are_valid(self):
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("each method may be listed once")
        stray = sorted(set(self.method_params) - set(self.methods))
        if stray:
            raise ValueError(f"method_params names methods not compared: {', '.join(stray)}")
        for method in self.methods:
            if not self.inner(method).explains_class():
                raise ValueError(f"{method}: compare ranks explanations of a class, not of a layer's unit")
        return self

    def inner(self, method: str) -> AttributionParams:
        return inner_params(method, self.method_params.get(method, {}), target=self.target, evaluate=True,
                            road_fractions=self.road_fractions, road_noise=self.road_noise,
                            road_random_maps=self.road_random_maps, evaluation_steps=self.evaluation_steps,
                            deletion_baseline=self.deletion_baseline)

    def resolve(self, record: ModelRecord) -> Params:
        resolved = {method: shown(self.inner(method).resolve(record)) for method in self.methods}
        return self.model_copy(update={"method_params": resolved})

    def reference_passes(self) -> int:
        """Forward passes scoring the random reference map."""
        return 2 * self.evaluation_steps + 1

    def total_steps(self, work: Workload) -> int:
        """Each method with its scores, then the random map's scores."""
        return (sum(self.inner(method).total_steps(work) for method in self.methods)
                + batches(self.reference_passes(), work.forward_batch))


KINDS = (
    Kind("sanity_check", SanityCheckParams, 1800, "Cascading weight randomisation (Adebayo et al. 2018): does a "
         "method's map depend on the model?", Family.TRUST, returns=Output),
    Kind("compare", CompareParams, 1800, "Attribution methods on one image, ranked by deletion and insertion "
         "scores (Petsiuk et al. 2018).", Family.TRUST, returns=Output),
)
