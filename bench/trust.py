"""Cost of the trust kinds on the built-in model at 224×224, against baselines measured in the same run.

    python bench/trust.py [--repeat 3]

- deletion + insertion at 64 steps (the scores every attribution job computes, on ONNX Runtime), against
  passes × the batched per-image ONNX Runtime forward: the scores should cost forward passes only (≤ 1.2×);
- `rise` with 2,000 masks on ONNX Runtime, against 2,000 × the batched per-image forward;
- `kernel_shap` with 1,000 samples on ONNX Runtime, against captum's `KernelShap` on the torch model with the
  same superpixels, baseline, samples and batch (perturbations_per_eval).
Threads: ONNX Runtime intra-op and torch as the settings give them to a worker (1 and 1 by default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import images  # noqa: E402
from core.kinds.registry import KINDS  # noqa: E402
from core.methods import ForwardTask  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.stores.models import ModelStore  # noqa: E402
from models import forward  # noqa: E402
from models.builtin import BUILTIN_ID  # noqa: E402
from workers.methods import deletion_insertion, gradcam, kernel_shap, rise  # noqa: E402
from workers.methods.task import Task  # noqa: E402
from workers.networks import load_network  # noqa: E402


def median_s(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def once_s(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    settings = Settings()
    torch.set_num_threads(settings.worker_torch_threads)
    store = ModelStore(settings.data_dir)
    record = store.get(BUILTIN_ID)
    rt = forward.Runtimes(store, settings).get(record)
    network = load_network(record, store, torch.device("cpu"))
    batch = settings.occlusion_batch

    import skimage.data
    from PIL import Image

    x = images.to_tensor(images.fit(Image.fromarray(skimage.data.chelsea()), record), record)

    def classify(copies: np.ndarray) -> np.ndarray:
        return forward.softmax(rt.logits(copies)).astype(np.float32)

    copies = np.repeat(x, batch, axis=0)
    per_image = median_s(lambda: rt.logits(copies), max(3, args.repeat)) / batch

    def params(kind, **raw):
        return KINDS[kind].params(**raw).resolve(record)

    cam = gradcam.run(Task(network, torch.from_numpy(x), params("gradcam", evaluate=False)))
    target = cam.metrics["target"]
    steps = 64
    passes = deletion_insertion.passes(steps)
    scores = median_s(lambda: deletion_insertion.evaluate(x, cam.attribution, target, classify, record, steps=steps,
                                                          batch=batch), args.repeat)

    rise_s, _ = once_s(lambda: rise.run(ForwardTask(record, params("rise", masks=2000, target=target), x, classify,
                                                    batch=batch)))

    shap_params = params("kernel_shap", samples=1000, target=target)
    shap_s, shap = once_s(lambda: kernel_shap.run(ForwardTask(record, shap_params, x, classify, batch=batch)))
    labels = shap.arrays["segments"].astype(np.int64)

    from captum.attr import KernelShap

    module = network.module

    def softmax_forward(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(inputs).softmax(dim=1)

    torch.manual_seed(0)
    captum_s, _ = once_s(lambda: KernelShap(softmax_forward).attribute(
        torch.from_numpy(x), baselines=0.0, target=target, feature_mask=torch.from_numpy(labels)[None, None],
        n_samples=1000, perturbations_per_eval=batch))
    with torch.no_grad():
        torch_per_image = median_s(lambda: module(torch.from_numpy(copies)), max(3, args.repeat)) / batch

    print(f"built-in model {BUILTIN_ID}, 224×224, ONNX Runtime {rt.plain.get_providers()[0]} intra threads "
          f"{settings.ort_intra_threads}, torch threads {settings.worker_torch_threads}, batch {batch}, "
          f"target {target} ({record.label(target)})")
    print(f"batched per-image forward: ONNX Runtime {per_image * 1000:.1f} ms, torch {torch_per_image * 1000:.1f} ms")
    print(f"deletion+insertion, {steps} steps: {scores:.2f} s for {passes} forward passes; "
          f"time / (passes × per-image) = {scores / (passes * per_image):.2f}")
    print(f"rise, 2000 masks: {rise_s:.1f} s; time / (2000 × per-image) = {rise_s / (2000 * per_image):.2f}")
    print(f"kernel_shap, 1000 samples, {shap.metrics['segments']} superpixels ({shap.metrics['coalitions']} distinct "
          f"coalitions run): {shap_s:.1f} s; captum KernelShap on torch, same superpixels, baseline, samples and batch: "
          f"{captum_s:.1f} s; ours / captum = {shap_s / captum_s:.2f}")


if __name__ == "__main__":
    main()
