"""The CAM family (and LRP) against the libraries users would otherwise reach for, on the built-in model at 224×224,
on the same CPU in one run: each kind's method against its pytorch-grad-cam class (zennit's `Gradient` attributor
for `lrp`), on the same layer, target and image, and the ratio ours / theirs.

    python -m bench.attribution [--repeat 3] [--layer NAME] [--kinds gradcam,scorecam,...]

- gradient CAMs (`gradcam_plus_plus`, `xgradcam`, `layercam`, `hirescam`): our method on the torch network against
  the library's full call on the same module (it also upsamples and scales the map: a few ms);
- forward-only CAMs (`eigencam`, `scorecam`, `ablationcam`): our method on the worker's ONNX Runtime sessions
  (Ablation-CAM on the graph cut before the layer) against the library on the torch network; the layer is the
  model's last spatial layer unless `--layer` names another (Score-CAM and Ablation-CAM cost one pass per channel);
- `lrp`: our rules against zennit's composite on the same network (its canonizers on a copy).
Threads: torch and ONNX Runtime intra-op threads as the settings give a worker (`CONVSCOPE_WORKER_TORCH_THREADS`),
the same for both sides. Targets: ≤ 1.0× for the torch kinds, ≤ 0.5× for `scorecam` and `ablationcam`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import record as record_results  # noqa: E402
from bench.timing import median_s  # noqa: E402
from core import images, preprocessing  # noqa: E402
from core.kinds.registry import KINDS  # noqa: E402
from core.methods import ForwardTask  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.stores.models import ModelStore  # noqa: E402
from models.builtin import BUILTIN_ID  # noqa: E402
from models.runtimes import Runtimes  # noqa: E402
from tests import oracles  # noqa: E402
from tests.conftest import encode, sample  # noqa: E402
from workers.methods import method_of  # noqa: E402
from workers.methods.task import Task  # noqa: E402
from workers.networks import load_network  # noqa: E402

LIBRARY = {"gradcam": "GradCAM", "gradcam_plus_plus": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
           "layercam": "LayerCAM", "hirescam": "HiResCAM", "eigencam": "EigenCAM", "scorecam": "ScoreCAM",
           "ablationcam": "AblationCAM"}
TARGETS = {"scorecam": 0.5, "ablationcam": 0.5}  # the others: 1.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layer", default=None, help="layer of the CAMs (default the last spatial layer)")
    parser.add_argument("--kinds", default=",".join([*LIBRARY, "lrp"]))
    parser.add_argument("--no-record", action="store_true", help="print only; bench/RESULTS.md is left as it is")
    args = parser.parse_args(argv)
    settings = Settings()
    torch.set_num_threads(settings.worker_torch_threads)
    store = ModelStore.open(settings)
    record = store.get(BUILTIN_ID)
    network = load_network(record, store, torch.device("cpu"))
    runtime = Runtimes(store, settings, intra_threads=settings.worker_torch_threads).get(record)
    image = images.decode(encode(sample("chelsea")), max_bytes=10**8, max_pixels=10**8)
    x = preprocessing.to_tensor(preprocessing.fit(image, record), record)
    xt = torch.from_numpy(x)
    target = int(runtime.logits(x)[0].argmax())
    grad_cam = oracles.pytorch_grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    lines = [f"built-in model, 224×224, target {target}, torch/ORT threads {settings.worker_torch_threads}, "
             f"forward batch {settings.occlusion_batch}, median of {args.repeat}"]
    print(lines[0])
    for kind in args.kinds.split(","):
        spec = KINDS[kind]
        fields = {"target": target, "evaluate": False}
        if "layer" in spec.params.model_fields:
            fields["layer"] = args.layer
        params = spec.params(**fields).resolve(record)
        if spec.engine.value == "onnxruntime":
            def ours(params=params, spec=spec):
                return method_of(spec)(ForwardTask(record, params, x, classify=None, batch=settings.occlusion_batch,
                                                   model=runtime))
        else:
            def ours(params=params, spec=spec):
                return method_of(spec)(Task(network, xt, params))
        theirs = reference(kind, network, params, xt, target, grad_cam, ClassifierOutputTarget, settings)
        ours_s, theirs_s = median_s(ours, args.repeat), median_s(theirs, args.repeat)
        ratio, goal = ours_s / theirs_s, TARGETS.get(kind, 1.0)
        line = (f"{kind:<18} ours {ours_s * 1000:9.1f} ms  theirs {theirs_s * 1000:9.1f} ms  ratio {ratio:6.3g}× "
                f"(target ≤ {goal}×: {'met' if ratio <= goal else 'MISSED'})"
                + (f"  layer {params.layer}" if getattr(params, "layer", None) else ""))
        print(line)
        lines.append(line)
    if not args.no_record:
        record_results("bench/attribution.py: the CAM family and LRP against pytorch-grad-cam and zennit",
                       lines)


def reference(kind: str, network, params, xt: torch.Tensor, target: int, grad_cam, output_target,
              settings: Settings):
    """The library's call for `kind`, as a user of it would make it."""
    if kind == "lrp":
        import copy

        from tests.workers.lrp_reference import builtin_canonizers, reference

        zennit = oracles.zennit()
        module = copy.deepcopy(network.module)  # zennit's canonizers write parameters: a copy, as a user would
        canonizers = builtin_canonizers(zennit)
        return lambda: reference(zennit, network, module, xt, target, params.composite, canonizers)
    library = getattr(grad_cam, LIBRARY[kind])
    layer = network.layer_module(params.layer)
    cam = library(model=network.module, target_layers=[layer])
    if hasattr(cam, "batch_size"):
        cam.batch_size = settings.occlusion_batch  # Score-CAM's and Ablation-CAM's batch: the same as ours
    return lambda: cam(input_tensor=xt.clone().requires_grad_(), targets=[output_target(target)])


if __name__ == "__main__":
    main()
