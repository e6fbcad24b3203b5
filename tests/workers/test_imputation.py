"""ROAD's noisy linear imputation (workers/methods/mechanics/imputation.py) against pytorch-grad-cam's
`NoisyLinearImputer` (the authors' code, a direct sparse solve) to 1e-4, on photos and ROAD masks: most and
least relevant first, from a smooth CAM-like ranking and from pixel noise, at 224×224 and on a 32×32 image;
both of its solvers (sparse LU, certified multigrid); kept pixels, noise, empty and full masks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.sparse.linalg import spsolve

from tests.conftest import sample
from workers.methods.mechanics import imputation

TOLERANCE = 1e-4  # max |ours − pytorch-grad-cam's| on any pixel and channel


def photo(name: str, size: int) -> np.ndarray:
    """A scikit-image sample photo resized to size×size, normalised as (p/255 − 0.5)/0.5: 3×size×size float32."""
    from skimage.transform import resize

    pixels = resize(sample(name), (size, size), anti_aliasing=True, preserve_range=True)
    return np.ascontiguousarray(((pixels / 255 - 0.5) / 0.5).transpose(2, 0, 1)).astype(np.float32)


def smooth_ranking(size: int, rng: np.random.Generator) -> np.ndarray:
    """A 7×7 random map upsampled bilinearly to size×size, as a CAM is."""
    from skimage.transform import resize

    return resize(rng.random((7, 7)), (size, size), order=1, mode="edge")


def removed(ranking: np.ndarray, curve: str, fraction: float) -> np.ndarray:
    """ROAD's mask: MoRF removes pixels ≥ the (1 − f) percentile, LeRF those ≤ the f percentile."""
    if curve == "morf":
        return ranking >= np.percentile(ranking, 100 * (1 - fraction))
    return ranking <= np.percentile(ranking, 100 * fraction)


@pytest.fixture(scope="module")
def reference():
    """pytorch-grad-cam's imputer with noise 0 as a function (x, removed) → C×H×W. pytorch-grad-cam imports
    torchvision, whose PyPI wheel's native library cannot load next to a CPU torch: declaring the two op
    schemas its import registers fake kernels for lets the pure-Python parts import (as in
    test_methods_reference.py); the imputer uses no torchvision op."""
    try:
        import torch
    except ImportError as error:
        pytest.skip(f"torch is not installed: {error}")
    try:
        import torchvision  # noqa: F401
    except RuntimeError:
        library = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    except ImportError:
        pass
    try:
        from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    except Exception as error:  # noqa: BLE001 - any import failure means no oracle
        pytest.skip(f"pytorch-grad-cam (the reference) cannot be imported: {error!r}")
    imputer = NoisyLinearImputer(noise=0.0)

    def run(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        keep = torch.from_numpy((~mask).astype(np.float32))  # its convention: 1 = keep, 0 = fill
        with warnings.catch_warnings():  # its np.argwhere on tensors: NumPy 2's __array_wrap__ deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            return imputer(torch.from_numpy(x), keep).numpy()

    return run


def check_against(reference, x: np.ndarray, mask: np.ndarray) -> dict:
    stats = {}
    values = imputation.solve(x, mask, stats)
    ours = x.copy()
    ours[:, mask] = values
    theirs = reference(x, mask)
    error = float(np.abs(ours - theirs).max())
    assert error <= TOLERANCE, (stats, error)
    if stats["method"] == "multigrid":
        assert stats["converged"] and stats["bound"] <= imputation._ERROR_BOUND
        assert error <= stats["bound"] + 1e-6, (stats, error)  # the certificate, up to float32 rounding
    assert np.array_equal(imputation.impute(x, mask), ours.astype(np.float32))
    return stats


@pytest.mark.parametrize("name, ranking, curve, fraction", [
    ("chelsea", "smooth", "morf", 0.1),  # small blobs: sparse LU
    ("coffee", "smooth", "lerf", 0.9),  # most of the image: multigrid, the largest ‖L⁻¹‖
    ("rocket", "smooth", "morf", 0.6),
    ("chelsea", "scattered", "morf", 0.9),
    ("coffee", "scattered", "lerf", 0.5),  # just above percolation: multigrid
    ("rocket", "scattered", "lerf", 0.3),  # many small components: sparse LU
])
def test_equals_pytorch_grad_cam_at_224(reference, name, ranking, curve, fraction):
    rng = np.random.default_rng(7)
    x = photo(name, 224)
    rank = smooth_ranking(224, rng) if ranking == "smooth" else rng.random((224, 224))
    stats = check_against(reference, x, removed(rank, curve, fraction))
    expected = "lu" if (ranking, fraction) in (("smooth", 0.1), ("scattered", 0.3)) else "multigrid"
    assert stats["method"] == expected
    assert (stats["lu_cost"] <= imputation._LU_COST) == (expected == "lu")


@pytest.mark.parametrize("method", ["lu", "multigrid"])
def test_equals_pytorch_grad_cam_on_a_tiny_image(reference, monkeypatch, method):
    """All 18 ROAD masks of both rankings at 32×32, each solver forced (multigrid on three grids)."""
    if method == "multigrid":
        monkeypatch.setattr(imputation, "_LU_COST", 0.0)
        monkeypatch.setattr(imputation, "_COARSEST", 8)
    rng = np.random.default_rng(3)
    x = photo("chelsea", 32)
    for rank in (smooth_ranking(32, rng), rng.random((32, 32))):
        for curve in ("morf", "lerf"):
            for fraction in np.arange(1, 10) / 10:
                assert check_against(reference, x, removed(rank, curve, fraction))["method"] == method


def test_certificate_bounds_the_true_inverse_norm(monkeypatch):
    """The multigrid's ‖L⁻¹‖_∞ estimate is an upper bound of the exact max(L⁻¹ 1), and its bound holds."""
    monkeypatch.setattr(imputation, "_LU_COST", 0.0)
    rng = np.random.default_rng(11)
    x = photo("coffee", 96)
    for rank, curve in ((smooth_ranking(96, rng), "lerf"), (rng.random((96, 96)), "morf")):
        mask = removed(rank, curve, 0.8)
        stats = {}
        values = imputation.solve(x, mask, stats)
        exact_zeta = spsolve(imputation.system_matrix(mask), np.ones(int(mask.sum()))).max()
        assert stats["zeta"] >= exact_zeta * (1 - 1e-9)
        assert np.abs(values - imputation.solve_direct(x, mask)).max() <= stats["bound"] + 1e-12  # + LU's rounding


def test_multigrid_on_odd_shapes(monkeypatch):
    """Odd, thin and tiny grids through the multigrid (forced, three or more grids where they fit) agree with
    the sparse LU within the certified bound."""
    monkeypatch.setattr(imputation, "_LU_COST", 0.0)
    monkeypatch.setattr(imputation, "_COARSEST", 8)
    rng = np.random.default_rng(0)
    for height, width in ((33, 47), (1, 20), (2, 2), (5, 1), (64, 17), (100, 3)):
        x = rng.standard_normal((2, height, width)).astype(np.float32)
        mask = rng.random((height, width)) < 0.7
        mask.flat[0], mask.flat[-1] = True, False
        stats = {}
        values = imputation.solve(x, mask, stats)
        assert stats["method"] == "multigrid" and stats["converged"]
        assert np.abs(values - imputation.solve_direct(x, mask)).max() <= stats["bound"] + 1e-12  # + LU's rounding


def test_warm_up_compiles_the_kernels():
    imputation.warm_up()
    for kernel in (imputation.grid.sweep, imputation.grid.galerkin, imputation.grid.cg_step):
        assert kernel.signatures  # compiled (or loaded from numba's cache)


def test_kernels_compile_where_numba_cannot_cache(monkeypatch):
    """With no writable cache location numba refuses cache=True; the kernels are then compiled uncached."""
    import numba.core.caching

    monkeypatch.setattr(numba.core.caching.CacheImpl, "_locator_classes", [])
    with pytest.raises(RuntimeError):
        numba.njit(cache=True)(lambda a: a + 1)
    kernel = imputation.grid._jit(lambda a: a + 1)
    assert kernel(1) == 2 and isinstance(kernel._cache, numba.core.caching.NullCache)


def test_kept_pixels_bit_for_bit_and_float32():
    rng = np.random.default_rng(5)
    x = photo("rocket", 64)
    mask = removed(smooth_ranking(64, rng), "morf", 0.5)
    out = imputation.impute(x, mask)
    assert out.dtype == np.float32 and out.shape == x.shape and out is not x
    assert np.array_equal(out[:, ~mask], x[:, ~mask])
    assert not np.array_equal(out[:, mask], x[:, mask])


def test_noise():
    x = photo("chelsea", 64)
    mask = removed(np.random.default_rng(1).random((64, 64)), "lerf", 0.6)
    clean = imputation.impute(x, mask)
    first = imputation.impute(x, mask, noise=0.1, rng=np.random.default_rng(42))
    again = imputation.impute(x, mask, noise=0.1, rng=np.random.default_rng(42))
    other = imputation.impute(x, mask, noise=0.1, rng=np.random.default_rng(43))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.array_equal(first[:, ~mask], x[:, ~mask])
    difference = (first - clean)[:, mask]
    assert abs(difference.std() - 0.1) < 0.005 and abs(difference.mean()) < 0.005  # 3 × 2458 draws
    assert imputation.impute(x, mask, noise=0.1).shape == x.shape  # a fresh generator when none is given


def test_empty_and_full_masks(reference):
    x = photo("coffee", 32)
    empty = imputation.impute(x, np.zeros((32, 32), bool))
    assert np.array_equal(empty, x) and empty is not x
    full = np.ones((32, 32), bool)  # singular; pytorch-grad-cam's solve gives 0, as does ours
    assert np.array_equal(imputation.impute(x, full), np.zeros_like(x))
    assert np.array_equal(reference(x, full), np.zeros_like(x))
    noisy = imputation.impute(x, full, noise=0.5, rng=np.random.default_rng(0))
    assert 0.45 < noisy.std() < 0.55


def test_bad_shapes():
    with pytest.raises(ValueError):
        imputation.impute(np.zeros((8, 8), np.float32), np.zeros((8, 8), bool))
    with pytest.raises(ValueError):
        imputation.impute(np.zeros((3, 8, 8), np.float32), np.zeros((8, 9), bool))
