"""Noisy linear imputation for ROAD (Rong, Leemann, Borisov, Kasneci & Kasneci, ICML 2022, "A Consistent and
Efficient Evaluation Strategy for Attribution Methods"), solved fast and exactly.

What it computes. Every removed pixel p takes the weighted mean of its in-image 8-neighbours, weight 1/6 for
the four edge neighbours and 1/12 for the four diagonal ones, all removed pixels jointly:

    s_p · u_p − Σ_{q removed} w_pq · u_q = Σ_{q kept} w_pq · x_q,     s_p = Σ_{q in the image} w_pq,

one sparse system L u = b shared by the C channels (C right-hand sides); Gaussian noise of σ `noise` is then
added to the removed pixels only. This is exactly the system of pytorch-grad-cam's `NoisyLinearImputer`
(`pytorch_grad_cam/metrics/road.py`, the authors' code): there the diagonal is −s_p (1 less the weights of
the neighbours that fall outside the image), the matrix −L; the same solution. Its mask is 1 = keep.

L is symmetric, a weighted graph Laplacian on the removed pixels plus, on the diagonal, the weights of kept
neighbours: an M-matrix, positive definite when every 8-connected component of removed pixels touches a kept
pixel. A component that touches none is closed under 8-adjacency, so it is the whole image: only "all
pixels removed" is singular. Its right-hand side is then 0 and pytorch-grad-cam's LU solve returns 0 for
every pixel, which is also the minimum-norm solution; that is what we return (plus noise).

Why it is built the way it is. pytorch-grad-cam factors the system with `spsolve` (SuperLU, column
ordering for a general matrix, partial pivoting): a 2-D grid problem of up to H·W unknowns, by far the
slowest part of a ROAD curve. Two solvers replace it here, chosen per mask from the sizes of the 8-connected
components of removed pixels (the system is block diagonal over them), by a cost proxy Σ size^1.5 (a grid
factorisation's work grows like n^1.5):

- Small or fragmented removed sets (a CAM's top tenth, pixels scattered below the percolation threshold) go
  to a sparse LU with the ordering suited to a symmetric positive definite matrix (minimum degree on L + Lᵀ,
  no pivoting): exact, and cheap while the components are small.
- Large blobs and percolating sets go to multigrid-preconditioned conjugate gradients, all channels at once,
  on the grid cropped to the bounding box of the removed pixels plus one pixel (nothing outside matters).
  Diagonal preconditioning needs a number of iterations that grows with the blob size; multigrid does not.
  General algebraic multigrid (pyamg) converges as well but spends more on building its hierarchy, per mask,
  than a whole solve may cost here, and runs one channel at a time. So the multigrid is written for the pixel
  grid, as loops compiled by numba (`imputation_grid`): as whole-array NumPy operations each stencil
  application was a dozen array passes and temporaries, and the per-operation overhead outweighed the
  arithmetic.
  - coarse points are the removed pixels at (even row, even column): the lattice halves in each direction and
    every level stays a 9-point stencil on a grid; on the finest grid the stencil is the constant weights
    (vectors are 0 on kept pixels), read from no array;
  - interpolation is classical AMG direct interpolation (Stüben), computed from the operator, so kept pixels
    (fixed values) shrink it exactly where they should; the coarse operators are the Galerkin products PᵀAP;
    the grids halve down to at most 8×8, which a few Gauss–Seidel sweeps solve;
  - one symmetric V(1,1)-cycle is the preconditioner: Gauss–Seidel by four colours (row parity × column
    parity; points of one colour are never neighbours, so no update waits for the previous one), forward
    before the coarse correction and in reverse after; β is the flexible (Polak–Ribière) one, which
    tolerates the preconditioner's rounding.
  The cycle's contraction factor stays near 0.1 whatever the blob sizes, so a handful of iterations reach
  the stopping rule below.

Stopping rule and error. With r = b − L u the residual of an iterate u, the error e = u − u* obeys
|e| ≤ L⁻¹|r| componentwise (L⁻¹ ≥ 0 entrywise for an M-matrix), so ‖e‖_∞ ≤ ‖L⁻¹‖_∞ · ‖r‖_∞ with
‖L⁻¹‖_∞ = max_p (L⁻¹ 1)_p, a property of the mask alone (how long a random walk from p takes to reach a kept
pixel): small for scattered masks, large for large blobs. So the conjugate gradients also run the all-ones
right-hand side alongside the channels until its iterate z has max(1 − L z) ≤ 1/2 (recomputed from z, not the
recurrence); then with ρ = max(1 − L z) < 1, L z ≥ (1 − ρ)·1, hence z ≥ 0 and L⁻¹1 ≤ z / (1 − ρ), i.e.
‖L⁻¹‖_∞ ≤ ζ = max z / (1 − ρ). The iteration stops once ζ · max_c ‖r_c‖_∞ ≤ `_ERROR_BOUND` = 5e-5, re-checked
with the true residual b − L u: a certified bound on the error of every pixel and channel, mask by mask, with
no constant measured on other inputs, half the 1e-4 allowed against the direct solve (the tests compare with
pytorch-grad-cam on ROAD masks and check the bound). Should it not certify within `_MAX_ITERATIONS`, a sparse
LU (`solve_direct`) solves the mask instead.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.linalg import splu

from workers.methods.mechanics import imputation_grid as grid

# Certified bound on max |u − u*| over removed pixels and channels, u* the exact solution (see the docstring);
# the comparison with the direct solve allows 1e-4, twice this.
_ERROR_BOUND = 5e-5
_MAX_ITERATIONS = 60  # never reached on ROAD masks; if it were, the sparse LU takes over
# Sparse LU when Σ (size of each 8-connected removed component)^1.5, a proxy for its cost on a grid, is at
# most this: then it is the faster of the two (small blobs, scattered pixels); multigrid above.
_LU_COST = 1e6
_COARSEST = 8  # a grid whose larger side is at most this is the coarsest: solved by Gauss–Seidel sweeps
_COARSEST_SWEEPS = 8  # forward and backward pairs there
_STRENGTH = 0.25  # classical AMG strength threshold: a coarse neighbour interpolates if its coupling is this strong
_ONES_RESIDUAL = 1 / 2  # the all-ones column stops once max(1 − L z) ≤ this: ‖L⁻¹‖_∞ ≤ ‖z‖_∞ / (1 − 1/2)


def impute(x: np.ndarray, removed: np.ndarray, *, noise: float = 0.0,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """`x` (C×H×W, model-input space) with the `removed` pixels (H×W bool, True = removed) filled by noisy
    linear imputation: a new C×H×W float32 array, kept pixels unchanged, removed ones the joint solution of
    "each is the weighted mean of its 8 neighbours" (the same system as pytorch-grad-cam's
    `NoisyLinearImputer`) plus N(0, noise²) noise drawn from `rng` (a fresh generator when None)."""
    x = np.asarray(x)
    removed = np.asarray(removed)
    if x.ndim != 3:
        raise ValueError(f"x must be C×H×W, got shape {x.shape}")
    if removed.shape != x.shape[1:]:
        raise ValueError(f"removed must be H×W = {x.shape[1:]}, got shape {removed.shape}")
    removed = removed.astype(bool, copy=False)
    out = x.astype(np.float32, copy=True)
    count = int(np.count_nonzero(removed))
    if count == 0:
        return out
    if count == removed.size:  # singular (no kept pixel): pytorch-grad-cam's solve gives 0, the minimum-norm answer
        values = np.zeros((x.shape[0], count))
    else:
        values = solve(out, removed)
    if noise:
        rng = np.random.default_rng() if rng is None else rng
        values = values + noise * rng.standard_normal(values.shape)
    out[:, removed] = values
    return out


def warm_up() -> None:
    """Compile the multigrid's kernels (or load them from numba's on-disk cache, see `imputation_grid`) on a small
    mask, so that the first ROAD curve does not wait for them."""
    removed = np.ones((24, 24), bool)
    removed[0] = False
    _solve_pcg(*grid.fine_system(np.ones((3, 24, 24), np.float32), removed, 0, 0, 24, 24))


def solve(x: np.ndarray, removed: np.ndarray, stats: dict | None = None) -> np.ndarray:
    """The solution at the removed pixels, C×n float64 in raster order of `removed` (at least one pixel removed
    and one kept): by sparse LU when the removed components are small, else by certified multigrid (see the
    module docstring; the LU takes over should it ever not certify). `stats`, if given, receives how."""
    stats = {} if stats is None else stats
    x, removed = np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(removed, dtype=bool)
    sizes = np.bincount(ndimage.label(removed, structure=np.ones((3, 3), bool))[0].ravel())[1:]
    stats["lu_cost"] = cost = float(np.sum(sizes.astype(np.float64) ** 1.5))
    if cost <= _LU_COST:
        stats["method"] = "lu"
        return solve_direct(x, removed)
    height, width = removed.shape
    rows, cols = np.nonzero(np.any(removed, axis=1))[0], np.nonzero(np.any(removed, axis=0))[0]
    top, bottom = max(rows[0] - 1, 0), min(rows[-1] + 2, height)
    left, right = max(cols[0] - 1, 0), min(cols[-1] + 2, width)
    coef, rhs = grid.fine_system(x, removed, top, left, bottom - top, right - left)
    u, info = _solve_pcg(coef, rhs)
    stats.update(info, method="multigrid")
    if not info["converged"]:
        stats["method"] = "lu (multigrid did not certify)"
        return solve_direct(x, removed)
    return u[:-1, 1:-1, 1:-1][:, removed[top:bottom, left:right]]


def solve_direct(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The same solution by a sparse LU factorisation (SuperLU, minimum-degree ordering of L + Lᵀ, no pivoting:
    L is symmetric positive definite), C×n float64."""
    coef, rhs = grid.fine_system(np.ascontiguousarray(x, dtype=np.float32), removed, 0, 0, *removed.shape)
    factor = splu(_stencil_matrix(coef, removed), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                  options={"SymmetricMode": True})
    return factor.solve(np.ascontiguousarray(rhs[:-1, 1:-1, 1:-1][:, removed].T)).T


def system_matrix(removed: np.ndarray) -> sparse.csc_matrix:
    """L (n×n, n removed pixels in raster order): s_p on the diagonal, −w_pq between removed neighbours.
    pytorch-grad-cam's matrix is −L."""
    coef, _ = grid.fine_system(np.zeros((0,) + removed.shape, np.float32), removed, 0, 0, *removed.shape)
    return _stencil_matrix(coef, removed)


def _stencil_matrix(coef: np.ndarray, active: np.ndarray) -> sparse.csc_matrix:
    """The matrix of a 9-point stencil (H×W×9) on the `active` points, in raster order."""
    height, width = active.shape
    index = np.full((height + 2, width + 2), -1)
    index[1:-1, 1:-1][active] = np.arange(int(active.sum()))
    rows, cols, values = [], [], []
    for k in range(9):
        other = index[k // 3:k // 3 + height, k % 3:k % 3 + width]
        ok = active & (other >= 0) & (coef[:, :, k] != 0)
        rows.append(index[1:-1, 1:-1][ok])
        cols.append(other[ok])
        values.append(coef[:, :, k][ok])
    count = int(active.sum())
    return sparse.csc_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(count, count))


class _Hierarchy:
    """The grids, finest first: stencils, 1 / their diagonals, interpolations (from each grid's next coarser
    one) and the cycle's work vectors."""

    def __init__(self, coef: np.ndarray, channels: int):
        self.coefs, self.inverses, self.weights, self.us, self.fs, self.rs = [], [], [], [], [], []
        while True:
            diagonal = coef[:, :, 4]
            self.coefs.append(coef)
            self.inverses.append(np.divide(1.0, diagonal, out=np.zeros_like(diagonal), where=diagonal != 0))
            for vectors in (self.us, self.fs, self.rs):
                vectors.append(np.zeros((channels, coef.shape[0] + 2, coef.shape[1] + 2)))
            if max(coef.shape[:2]) <= _COARSEST or not coef[::2, ::2, 4].any():
                break
            self.weights.append(grid.interpolation(coef, _STRENGTH))
            coef = grid.galerkin(coef, self.weights[-1])

    def cycle(self, nc: int) -> np.ndarray:
        """The preconditioner: one symmetric V(1,1)-cycle from zero for the right-hand side in fs[0] (forward
        sweeps on the way down, backward ones on the way up); the correction, us[0]."""
        depth = len(self.coefs) - 1
        for level in range(depth):  # level 0, the finest, has the constant stencil
            coef, inverse, u, f = self.coefs[level], self.inverses[level], self.us[level], self.fs[level]
            u[:nc] = 0.0
            grid.sweep(coef, inverse, u, f, nc, True, level == 0)
            grid.residual(coef, u, f, self.rs[level], nc, level == 0)
            grid.restrict(self.weights[level], self.rs[level], self.fs[level + 1], nc)
        grid.smooth(self.coefs[depth], self.inverses[depth], self.us[depth], self.fs[depth], nc,
                    _COARSEST_SWEEPS if depth else 1, depth == 0)
        for level in range(depth - 1, -1, -1):
            coef, inverse, u, f = self.coefs[level], self.inverses[level], self.us[level], self.fs[level]
            grid.prolong_add(self.weights[level], self.us[level + 1], u, nc)
            grid.sweep(coef, inverse, u, f, nc, False, level == 0)
        return self.us[0]


def _solve_pcg(coef: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, dict]:
    """Preconditioned conjugate gradients on the channels of b ((C+1)×(h+2)×(w+2), its last channel all ones)
    together with, until it has served, that all-ones column. Returns the solution (C+1 channels, the last
    meaningless) and stats; stats' "bound" is the certified max error, ≤ _ERROR_BOUND when "converged"."""
    levels = _Hierarchy(coef, b.shape[0])
    f = levels.fs[0]
    nc = channels = b.shape[0]
    r, x, q = b.copy(), np.zeros_like(b), np.zeros_like(b)
    f[...] = r
    p = levels.cycle(nc).copy()
    rz = grid.dot(r, p, nc)
    zeta = bound = np.inf
    iterations = ones_iterations = 0
    for iterations in range(1, _MAX_ITERATIONS + 1):
        grid.residual(coef, p, None, q, nc, True)  # q = −A p
        grid.cg_step(x, r, p, q, _ratio(-rz, grid.dot(p, q, nc)), nc)
        if nc == channels and r[-1].max() <= _ONES_RESIDUAL:
            ones = levels.rs[0]  # (free between cycles)
            grid.residual(coef, x, b, ones, channels, True)  # the ones column's true residual 1 − L z
            highest = ones[-1, 1:-1, 1:-1][coef[:, :, 4] > 0].max()
            if highest < 1:
                zeta = x[-1].max() / (1 - highest)
                nc, ones_iterations = channels - 1, iterations
                rz = rz[:nc]
        if nc < channels:
            bound = zeta * np.abs(r[:nc]).max()
        if bound <= _ERROR_BOUND:
            # Certify with the true residual b − L x rather than the recurrence's (they differ by rounding only).
            grid.residual(coef, x, b, r, nc, True)
            bound = zeta * np.abs(r[:nc]).max()
            if bound <= _ERROR_BOUND:
                break
            p[...] = 0.0  # (never seen) go on from the true residual with a fresh search direction
            q[...] = 0.0
        f[:nc] = r[:nc]
        z = levels.cycle(nc)
        rz_new = grid.dot(r, z, nc)
        # flexible CG (Polak–Ribière): β = z·(r − r_old) / rz_old, r − r_old = q
        grid.direction(p, z, _ratio(grid.dot(q, z, nc), rz), nc)
        rz = rz_new
    return x, {"iterations": iterations, "ones_iterations": ones_iterations, "zeta": float(zeta),
               "bound": float(bound), "converged": bool(bound <= _ERROR_BOUND)}


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, 0 where b is 0 (a channel solved exactly, e.g. a zero right-hand side)."""
    return np.divide(a, b, out=np.zeros_like(a), where=b != 0)
