"""ROAD's noisy linear imputation (workers/methods/mechanics/imputation.py) against the direct sparse solve it replaces,
measured in the same run.

    python -m bench.imputation [--repeat 3] [--size 224]

For chelsea at size×size, normalised as (p/255 − 0.5)/0.5, and two ranking maps, a smooth one (a 7×7 random map
upsampled bilinearly, like a CAM) and pixel noise (scattered masks), the 18 ROAD masks (most and least relevant
first at fractions 0.1 … 0.9) are each imputed with noise 0 by

- the baseline: pytorch-grad-cam's `NoisyLinearImputer` (scipy's `spsolve` of the system, as ROAD's authors
  wrote it) when it imports, otherwise the same system by `imputation.solve_direct` (sparse LU);
- `imputation.impute`;

and the mean time per mask of each (each mask's best of `repeat` runs), their ratio and the max |difference|
over all masks are printed. `time_per_mask` returns the same figures for another bench to call.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from workers.methods.mechanics import imputation  # noqa: E402

FRACTIONS = tuple(np.arange(1, 10) / 10)


def photo(name: str = "chelsea", size: int = 224) -> np.ndarray:
    """A scikit-image sample photo, size×size, (p/255 − 0.5)/0.5: 3×size×size float32."""
    import skimage.data
    from skimage.transform import resize

    pixels = resize(getattr(skimage.data, name)(), (size, size), anti_aliasing=True, preserve_range=True)
    return np.ascontiguousarray(((pixels / 255 - 0.5) / 0.5).transpose(2, 0, 1)).astype(np.float32)


def rankings(size: int = 224, seed: int = 0) -> dict[str, np.ndarray]:
    """The two ranking maps: "smooth" (7×7 random, bilinear) and "scattered" (pixel noise)."""
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    return {"smooth": resize(rng.random((7, 7)), (size, size), order=1, mode="edge"),
            "scattered": rng.random((size, size))}


def road_masks(ranking: np.ndarray) -> list[np.ndarray]:
    """The 18 masks (True = removed): MoRF then LeRF at each fraction."""
    masks = []
    for fraction in FRACTIONS:
        masks.append(ranking >= np.percentile(ranking, 100 * (1 - fraction)))
        masks.append(ranking <= np.percentile(ranking, 100 * fraction))
    return masks


def direct_baseline() -> tuple[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """(name, fn(x, removed) → C×H×W): pytorch-grad-cam's imputer with noise 0, or our system by sparse LU."""
    try:
        import torch

        try:
            import torchvision  # noqa: F401
        except RuntimeError:  # a CUDA torchvision wheel beside a CPU torch: see tests/workers/test_imputation.py
            library = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    except Exception:  # noqa: BLE001 - no pytorch-grad-cam: the same system, solved the same way, here
        def ours_direct(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
            out = x.copy()
            out[:, removed] = imputation.solve_direct(x, removed)
            return out

        return "the same system by sparse LU (pytorch-grad-cam not importable)", ours_direct
    imputer = NoisyLinearImputer(noise=0.0)
    torch.set_num_threads(1)

    def grad_cam(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return imputer(torch.from_numpy(x), torch.from_numpy((~removed).astype(np.float32))).numpy()

    return "pytorch-grad-cam NoisyLinearImputer (spsolve)", grad_cam


def best_s(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def time_per_mask(x: np.ndarray, ranking: np.ndarray, *, repeat: int = 3, baseline_repeat: int = 1,
                  baseline: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> dict:
    """Mean seconds per ROAD mask (18 masks of `ranking`) of the direct solve and of `impute` on image `x`
    (C×H×W), each mask's best of its repeats, the ratio and the max |difference|; plus how each mask was solved."""
    baseline = baseline or direct_baseline()[1]
    direct_s, ours_s, error, methods = [], [], 0.0, {}
    for removed in road_masks(ranking):
        seconds, theirs = best_s(lambda: baseline(x, removed), baseline_repeat)  # noqa: B023 - called at once
        direct_s.append(seconds)
        seconds, ours = best_s(lambda: imputation.impute(x, removed), repeat)  # noqa: B023
        ours_s.append(seconds)
        error = max(error, float(np.abs(ours - theirs).max()))
        stats = {}
        imputation.solve(x, removed, stats)
        methods[stats["method"]] = methods.get(stats["method"], 0) + 1
    direct, ours = float(np.mean(direct_s)), float(np.mean(ours_s))
    return {"masks": len(direct_s), "direct_s": direct, "impute_s": ours, "ratio": ours / direct,
            "max_abs_diff": error, "impute_max_s": float(np.max(ours_s)), "methods": methods}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3, help="runs of impute per mask (best counted)")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    name, baseline = direct_baseline()
    x = photo("chelsea", args.size)
    start = time.perf_counter()
    imputation.warm_up()  # numba: compiles the kernels, or loads them from its on-disk cache
    print(f"imputation.warm_up(): {time.perf_counter() - start:.2f} s (numba compile, or load from its cache)")
    print(f"chelsea {args.size}×{args.size}, 18 ROAD masks per ranking map; baseline: {name}")
    for kind, ranking in rankings(args.size).items():
        r = time_per_mask(x, ranking, repeat=args.repeat, baseline=baseline)
        print(f"{kind:9s}: direct {r['direct_s'] * 1e3:7.1f} ms/mask, impute {r['impute_s'] * 1e3:6.1f} ms/mask "
              f"(max {r['impute_max_s'] * 1e3:.1f}), impute / direct = {r['ratio']:.3f} "
              f"({1 / r['ratio']:.1f}× faster); max |diff| {r['max_abs_diff']:.1e}; solved by {r['methods']}")


if __name__ == "__main__":
    main()
