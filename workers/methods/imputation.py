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

Why it is built the way it is. A direct sparse solve (pytorch-grad-cam's `spsolve`) factors a 2-D grid
problem of up to H·W unknowns: super-linear fill, so it is by far the slowest part of a ROAD curve. Plain
conjugate gradients with a diagonal preconditioner needs a number of iterations that grows with the size of
the removed blobs (a CAM's most relevant region is one blob of thousands of pixels: hundreds of iterations).
Multigrid removes that dependence; algebraic multigrid libraries (pyamg) converge well too but spend more on
building their hierarchy, per mask, than the whole solve may cost, and run one channel at a time. So this is
a geometric–algebraic multigrid written for the pixel grid, in vectorised NumPy:

- Coarse points are the removed pixels at (even row, even column): the pixel lattice halves in each
  direction at every level and every level stays a 9-point stencil on a grid, so each level is held as four
  "colour" sub-grids (row parity × column parity, the polyphase layout). Points of one colour are never
  neighbours, so Gauss–Seidel runs a colour at a time as whole-array operations on contiguous memory.
- Interpolation is classical AMG direct interpolation (Stüben) from the coarse neighbours, computed from the
  operator itself, so kept pixels (Dirichlet values) shrink it exactly where they should; coarse operators
  are Galerkin products P^T A P, evaluated as stencil arithmetic (no sparse matrix products).
- One V(1,1)-cycle, symmetric (the post-smoothing sweeps the colours in reverse), preconditions conjugate
  gradients run on all channels together; the coarsest grid (at most 16×16) is factored densely (Cholesky).
- The grid is cropped to the bounding box of the removed pixels plus one pixel: nothing outside can matter.

The cycle's contraction factor is of the order of 0.1 whatever the blob sizes, so a handful of iterations
reach the stopping rule below; the work per iteration is a fixed number of array passes over the cropped
grid.

Stopping rule and error. With r = b − L u the residual of an iterate u, the error e = u − u* obeys
|e| ≤ L⁻¹|r| componentwise (L⁻¹ ≥ 0 entrywise for an M-matrix), so ‖e‖_∞ ≤ ‖L⁻¹‖_∞ · ‖r‖_∞ with
‖L⁻¹‖_∞ = max_p (L⁻¹ 1)_p, a quantity of the mask alone (the expected time a random walk from p needs to
reach a kept pixel, in steps weighted by 1/s). It is tiny for scattered masks and grows for large blobs.
The solver therefore also runs the all-ones right-hand side, z ≈ L⁻¹ 1, alongside the channels until its own
residual is below 1/2 (then ‖L⁻¹‖_∞ ≤ 2 ‖z‖_∞ by the same inequality), and stops when
2 ‖z‖_∞ · max_c ‖r_c‖_∞ ≤ `_ERROR_BOUND`: an a-posteriori bound on the error of every channel, mask by mask,
that needs no constant measured on other inputs. The pytorch-grad-cam comparison in the tests checks it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.linalg import splu

EDGE, DIAGONAL = 1 / 6, 1 / 12  # neighbour weights of the imputation
# Certified bound on max |u − u*| over removed pixels and channels, u* the exact solution (see the docstring);
# ROAD's comparison with the direct solve allows 1e-4, a factor 5 above this.
_ERROR_BOUND = 5e-5
_MAX_ITERATIONS = 60  # never reached on ROAD masks; if it were, the sparse LU takes over
# Sparse LU when Σ (size of each 8-connected removed component)^1.5, a proxy for its cost on a grid, is at
# most this: then it is the faster of the two (small blobs, scattered pixels); multigrid above.
_LU_COST = 2e6
_COARSEST = 32  # a grid whose larger side is at most this is solved directly (sparse LU)
_STRENGTH = 0.25  # classical AMG strength threshold: a coarse neighbour interpolates if its coupling is this strong
_ONES_RESIDUAL = 1 / 2  # the all-ones column stops once max(1 − L z) ≤ this: ‖L⁻¹‖_∞ ≤ ‖z‖_∞ / (1 − 1/2)
_CYCLE = np.float32  # the preconditioner's arithmetic; the conjugate-gradient vectors and products are float64

# Stencil slot k = 3·(dy + 1) + (dx + 1) holds the coupling of a point with its neighbour at (dy, dx); 4 is the point.
_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
_CENTRE = 4
_WEIGHTS = np.array([DIAGONAL if dy and dx else EDGE for dy, dx in _OFFSETS])
_WEIGHTS[_CENTRE] = 0.0
_PRE = ((0, 0), (1, 1), (0, 1), (1, 0))  # Gauss–Seidel colour order before the coarse correction; reversed after
_POST = _PRE[::-1]


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


def solve(x: np.ndarray, removed: np.ndarray, stats: dict | None = None) -> np.ndarray:
    """The solution at the removed pixels, C×n float64 in raster order of `removed` (at least one pixel removed
    and one kept): by sparse LU when the removed components are small, else by multigrid (certified, see the
    module docstring; the LU takes over should it ever not certify). `stats`, if given, receives how."""
    stats = {} if stats is None else stats
    labels, _ = ndimage.label(removed, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel())[1:]
    stats["lu_cost"] = cost = float(np.sum(sizes.astype(np.float64) ** 1.5))
    if cost <= _LU_COST:
        stats["method"] = "lu"
        return solve_direct(x, removed)
    height, width = removed.shape
    rows, cols = np.nonzero(np.any(removed, axis=1))[0], np.nonzero(np.any(removed, axis=0))[0]
    top, bottom = max(rows[0] - 1, 0), min(rows[-1] + 2, height)
    left, right = max(cols[0] - 1, 0), min(cols[-1] + 2, width)
    crop = removed[top:bottom, left:right]
    window = (slice(top, bottom + 2), slice(left, right + 2))
    s, b = _weights_and_rhs(x, removed, window)
    u, info = _Hierarchy(crop, s).solve(b * crop)
    stats.update(info, method="multigrid")
    if not info["converged"]:
        stats["method"] = "lu (multigrid did not certify)"
        return solve_direct(x, removed)
    return u[:, crop]


def solve_direct(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The same solution by a sparse LU factorisation (SuperLU, minimum-degree ordering of L + Lᵀ, no pivoting:
    L is symmetric positive definite), C×n float64."""
    s, b = _weights_and_rhs(x, removed, (slice(None), slice(None)))
    factor = splu(system_matrix(removed, s[removed]), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                  options={"SymmetricMode": True})
    return factor.solve(np.ascontiguousarray(b[:, removed].T)).T


def system_matrix(removed: np.ndarray, diagonal: np.ndarray | None = None) -> sparse.csc_matrix:
    """L (n×n, n removed pixels in raster order): `diagonal` (default: each pixel's in-image neighbour weight
    sum s_p) on the diagonal, −w_pq between removed neighbours. pytorch-grad-cam's matrix is −L."""
    height, width = removed.shape
    count = int(np.count_nonzero(removed))
    if diagonal is None:
        inside = np.zeros((height + 2, width + 2))
        inside[1:-1, 1:-1] = 1.0
        diagonal = _neighbour_sum(inside)[removed]
    index = np.full((height + 2, width + 2), -1)
    index[1:-1, 1:-1][removed] = np.arange(count)
    columns = np.empty((count, 9), np.int64)
    values = np.empty((count, 9))
    for k, (dy, dx) in enumerate(_OFFSETS):
        columns[:, k] = index[1 + dy:1 + dy + height, 1 + dx:1 + dx + width][removed]
        values[:, k] = -_WEIGHTS[k]
    values[:, _CENTRE] = diagonal
    present = columns >= 0  # in the image and removed; each row's columns ascend (raster order of the offsets)
    pointers = np.zeros(count + 1, np.int64)
    np.cumsum(present.sum(axis=1), out=pointers[1:])
    # Row i of L in CSR is column i of L in CSC (L is symmetric).
    return sparse.csc_matrix((values[present], columns[present], pointers), shape=(count, count))


def _weights_and_rhs(x: np.ndarray, removed: np.ndarray, window: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Over `window` (slices of the image padded by one pixel, taking one pixel more on each side than the
    result): s = Σ_{q in the image} w_pq and b = Σ_{q kept} w_pq x_q (C×…), for every pixel."""
    height, width = removed.shape
    inside = np.zeros((height + 2, width + 2))
    inside[1:-1, 1:-1] = 1.0
    kept_x = np.zeros((x.shape[0], height + 2, width + 2))
    kept_x[:, 1:-1, 1:-1] = np.where(removed, 0.0, x)
    return _neighbour_sum(inside[window]), _neighbour_sum(kept_x[(slice(None),) + window])


def _neighbour_sum(padded: np.ndarray) -> np.ndarray:
    """Σ_q w_pq v_q over the 8 neighbours for every pixel of `padded` (…×(H+2)×(W+2), one ring of padding):
    ([1, 2, 1] ⊗ [1, 2, 1] − 4·centre) / 12, separably."""
    vertical = padded[..., :-2, :] + padded[..., 2:, :]
    vertical += 2 * padded[..., 1:-1, :]
    total = vertical[..., :-2] + vertical[..., 2:]
    total += 2 * vertical[..., 1:-1]
    total -= 4 * padded[..., 1:-1, 1:-1]
    total *= 1 / 12
    return total


def _split(full: np.ndarray, h: int, w: int) -> np.ndarray:
    """A …×H×W array as four colour sub-grids, 2×2×…×(h+2)×(w+2), each with a ring of zeros (H ≤ 2h, W ≤ 2w)."""
    out = np.zeros((2, 2) + full.shape[:-2] + (h + 2, w + 2))
    for a in (0, 1):
        for b in (0, 1):
            part = full[..., a::2, b::2]
            out[a, b, ..., 1:1 + part.shape[-2], 1:1 + part.shape[-1]] = part
    return out


def _merge(split: np.ndarray, height: int, width: int) -> np.ndarray:
    """The inverse of `_split` without its ring (2×2×…×h×w): the …×height×width array."""
    out = np.empty(split.shape[2:-2] + (height, width))
    for a in (0, 1):
        for b in (0, 1):
            part = out[..., a::2, b::2]
            part[...] = split[a, b, ..., :part.shape[-2], :part.shape[-1]]
    return out


def _neighbour(a: int, b: int, dy: int, dx: int, h: int, w: int) -> tuple:
    """Where the neighbour at (dy, dx) of the colour-(a, b) points lives in a split array: colour and slices."""
    ny, nx = a + dy, b + dx
    return ny % 2, nx % 2, slice(1 + ny // 2, 1 + ny // 2 + h), slice(1 + nx // 2, 1 + nx // 2 + w)


def _coarse_offsets(a: int, b: int) -> list[tuple[int, int, int]]:
    """For a fine point of colour (a, b) ≠ (0, 0): its coarse neighbours as (stencil slot, row shift, column
    shift), the shifts from the point's colour index to the coarse point's index."""
    return [(k, (a + dy) // 2, (b + dx) // 2) for k, (dy, dx) in enumerate(_OFFSETS)
            if k != _CENTRE and (a + dy) % 2 == 0 and (b + dx) % 2 == 0]


class _Level:
    """One grid: its 9-point stencil split into colours, the interpolation from the next coarser grid, and
    the work arrays of the cycle (allocated once per channel count, reused by every cycle)."""

    def __init__(self, coef: np.ndarray, active: np.ndarray):
        self.height, self.width = active.shape
        self.h, self.w = -(-self.height // 2), -(-self.width // 2)
        h, w = self.h, self.w
        self.full_coef, self.full_active = coef, active
        self.coef_padded = _split(coef, h, w)  # 2×2×9×(h+2)×(w+2), float64 for the Galerkin product
        self.active = _split(active.astype(np.float64), h, w)[..., 1:-1, 1:-1] > 0
        coef_inner = self.coef_padded[..., 1:-1, 1:-1]
        self.coef64 = np.ascontiguousarray(coef_inner)
        diag = coef_inner[:, :, _CENTRE]
        self.coef = coef_inner.astype(_CYCLE)
        self.inv_diag = np.where(self.active, 1.0 / np.where(self.active, diag, 1.0), 0.0).astype(_CYCLE)
        self.neighbours = {(a, b): [(k,) + _neighbour(a, b, dy, dx, h, w) for k, (dy, dx) in enumerate(_OFFSETS)
                                    if k != _CENTRE] for a in (0, 1) for b in (0, 1)}
        self.interpolation: dict = {}
        self.channels = 0

    def buffers(self, channels: int) -> None:
        if channels != self.channels:
            self.channels = channels
            self.u = np.zeros((2, 2, channels, self.h + 2, self.w + 2), _CYCLE)
            self.r = np.zeros((2, 2, channels, self.h, self.w), _CYCLE)
            self.tmp = np.empty((channels, self.h, self.w), _CYCLE)
            self.acc = np.empty((channels, self.h, self.w), _CYCLE)
            self.pairs = np.empty((channels, self.h, self.w + 2), _CYCLE)
            self.coarse_rhs = np.empty((channels, self.h, self.w), _CYCLE)
            self.coarse_correction = np.zeros((channels, self.h + 1, self.w + 1), _CYCLE)

    # Interpolation (classical direct interpolation) and the Galerkin coarse stencil.
    def coarsen(self) -> np.ndarray:
        """Interpolation weights from the coarse points (the active colour-(0, 0) points); returns the coarse
        grid's 9×h×w stencil P^T A P (float64)."""
        self.weights64 = {}
        for a, b in ((1, 0), (0, 1), (1, 1)):
            coef = self.coef64[a, b]
            off = np.delete(coef, _CENTRE, axis=0)
            negative = np.minimum(off, 0.0)
            threshold = _STRENGTH * -negative.min(axis=0)
            diag = coef[_CENTRE] + np.maximum(off, 0.0).sum(axis=0)  # positive couplings lumped on the diagonal
            chosen = []
            for k, cy, cx in _coarse_offsets(a, b):
                coupling = np.minimum(coef[k], 0.0)
                chosen.append((cy, cx, np.where(-coupling >= threshold, coupling, 0.0)))
            coarse_sum = sum(c for _, _, c in chosen)
            ok = self.active[a, b] & (coarse_sum < 0)
            scale = np.where(ok, negative.sum(axis=0) / np.where(ok, coarse_sum * diag, 1.0), 0.0)
            self.weights64[(a, b)] = [(cy, cx, -scale * c) for cy, cx, c in chosen]
        h, w = self.h, self.w
        self.interpolation = {colour: [(cy, cx, wt.astype(_CYCLE), (slice(None), slice(cy, None), slice(cx, None)),
                                        (slice(None), slice(0, h - cy), slice(0, w - cx)),
                                        (slice(None), slice(cy, cy + h), slice(cx, cx + w)))
                                       for cy, cx, wt in weights]
                              for colour, weights in self.weights64.items()}
        return self._galerkin()

    def _galerkin(self) -> np.ndarray:
        h, w = self.h, self.w
        # phi[δ][1 + I]: the value of coarse point I's interpolating function at the fine point 2I + δ.
        phi = {}
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                grid = np.zeros((h + 2, w + 2))
                if dy == 0 and dx == 0:
                    grid[1:-1, 1:-1] = self.active[0, 0]
                else:
                    a, b, sy, sx = dy % 2, dx % 2, dy // 2, dx // 2
                    weight = next(wt for cy, cx, wt in self.weights64[(a, b)]
                                  if (cy, cx) == ((a - dy) // 2, (b - dx) // 2))
                    grid[1 - sy:1 - sy + h, 1 - sx:1 - sx + w] = weight
                phi[(dy, dx)] = grid
        # a_phi[γ][1 + J]: (A φ_J)(2J + γ), γ in [−2, 2]².
        a_phi = {}
        tmp = np.empty((h, w))
        for gy in range(-2, 3):
            for gx in range(-2, 3):
                total = np.zeros((h + 2, w + 2))
                inner = total[1:-1, 1:-1]
                a, b, sy, sx = gy % 2, gx % 2, gy // 2, gx // 2
                for k, (oy, ox) in enumerate(_OFFSETS):
                    ty, tx = gy + oy, gx + ox
                    if -1 <= ty <= 1 and -1 <= tx <= 1:
                        np.multiply(self.coef_padded[a, b, k, 1 + sy:1 + sy + h, 1 + sx:1 + sx + w],
                                    phi[(ty, tx)][1:-1, 1:-1], out=tmp)
                        inner += tmp
                a_phi[(gy, gx)] = total
        coarse = np.zeros((9, h, w))
        for dy, dx in ((0, 0), (0, 1), (1, -1), (1, 0), (1, 1)):
            k = 3 * (dy + 1) + dx + 1
            for gy in range(-2, 3):
                for gx in range(-2, 3):
                    ty, tx = 2 * dy + gy, 2 * dx + gx
                    if -1 <= ty <= 1 and -1 <= tx <= 1:
                        np.multiply(phi[(ty, tx)][1:-1, 1:-1], a_phi[(gy, gx)][1 + dy:1 + dy + h, 1 + dx:1 + dx + w],
                                    out=tmp)
                        coarse[k] += tmp
            if (dy, dx) != (0, 0):  # symmetry: A_c[I, I − Δ] = A_c[I − Δ, I]
                coarse[8 - k][max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
                    coarse[k][max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
        return coarse

    # The cycle's pieces; split vectors are 2×2×C×(h+2)×(w+2) with a zero ring, right-hand sides 2×2×C×h×w.
    def smooth(self, u: np.ndarray, f: np.ndarray, order) -> None:
        """One Gauss–Seidel sweep, a colour at a time, in place."""
        tmp, t = self.tmp, self.acc
        for a, b in order:
            np.copyto(t, f[a, b])
            coef = self.coef[a, b]
            for k, na, nb, rows, cols in self.neighbours[(a, b)]:
                np.multiply(coef[k], u[na, nb, :, rows, cols], out=tmp)
                t -= tmp
            np.multiply(t, self.inv_diag[a, b], out=u[a, b, :, 1:-1, 1:-1])

    def residual(self, u: np.ndarray, f: np.ndarray, colours) -> np.ndarray:
        """f − A u on `colours` into self.r (the other colours' residual is 0 after the pre-smoothing)."""
        tmp = self.tmp
        for a, b in colours:
            o = self.r[a, b]
            coef = self.coef[a, b]
            np.multiply(coef[_CENTRE], u[a, b, :, 1:-1, 1:-1], out=o)
            for k, na, nb, rows, cols in self.neighbours[(a, b)]:
                np.multiply(coef[k], u[na, nb, :, rows, cols], out=tmp)
                o += tmp
            np.subtract(f[a, b], o, out=o)
        return self.r

    def restrict(self, r: np.ndarray) -> np.ndarray:
        """P^T r on the coarse grid (C×h×w, not split)."""
        out, tmp = self.coarse_rhs, self.tmp
        out[...] = r[0, 0]
        for (a, b), weights in self.interpolation.items():
            for _, _, weight, target, source, _ in weights:
                np.multiply(weight, r[a, b], out=tmp)
                out[target] += tmp[source]
        return out

    def prolong_add(self, u: np.ndarray, e: np.ndarray) -> None:
        """u += P e, e the split correction of the coarse grid (with its ring)."""
        padded, tmp = self.coarse_correction, self.tmp
        inner = padded[:, :self.h, :self.w]
        for a in (0, 1):
            for b in (0, 1):
                part = inner[:, a::2, b::2]
                part[...] = e[a, b, :, 1:1 + part.shape[-2], 1:1 + part.shape[-1]]
        u[0, 0, :, 1:-1, 1:-1] += inner
        for (a, b), weights in self.interpolation.items():
            target = u[a, b, :, 1:-1, 1:-1]
            for _, _, weight, _, _, source in weights:
                np.multiply(weight, padded[source], out=tmp)
                target += tmp


class _Fine(_Level):
    """The finest grid: the stencil is the constant imputation weights (a removed pixel couples with every
    removed neighbour, w_pq), so smoothing and products use neighbour sums instead of coefficient arrays.
    Vectors are kept at 0 on kept pixels, which makes the sums exact."""

    def __init__(self, removed: np.ndarray, s: np.ndarray):
        height, width = removed.shape
        padded = np.zeros((height + 2, width + 2), bool)
        padded[1:-1, 1:-1] = removed
        coef = np.empty((9, height, width))
        for k, (dy, dx) in enumerate(_OFFSETS):
            coef[k] = -_WEIGHTS[k] * (removed & padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width])
        coef[_CENTRE] = s * removed
        super().__init__(coef, removed)
        self.diag64 = self.coef64[:, :, _CENTRE]
        self.minus_twelfth64 = np.where(self.active, -1 / 12, 0.0)
        self.diag = self.diag64.astype(_CYCLE)
        self.twelfth = np.where(self.active, 1 / 12, 0.0).astype(_CYCLE)

    def _sums(self, u: np.ndarray, a: int, b: int, edges: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """12 · Σ_q w_pq u_q for the colour-(a, b) points (edge neighbours count 2, diagonal ones 1), into
        `edges` (C×h×w; `pairs`, C×h×(w+2), is scratch)."""
        h, w = self.h, self.w
        ry, rx = (-1 if a == 0 else 0), (-1 if b == 0 else 0)
        vertical, horizontal, diagonal = u[1 - a, b], u[a, 1 - b], u[1 - a, 1 - b]
        np.add(vertical[:, 1 + ry:1 + ry + h, 1:1 + w], vertical[:, 2 + ry:2 + ry + h, 1:1 + w], out=edges)
        edges += horizontal[:, 1:1 + h, 1 + rx:1 + rx + w]
        edges += horizontal[:, 1:1 + h, 2 + rx:2 + rx + w]
        np.add(diagonal[:, 1 + ry:1 + ry + h, :], diagonal[:, 2 + ry:2 + ry + h, :], out=pairs)
        edges *= 2
        edges += pairs[:, :, 1 + rx:1 + rx + w]
        edges += pairs[:, :, 2 + rx:2 + rx + w]
        return edges

    def smooth(self, u: np.ndarray, f: np.ndarray, order) -> None:
        for a, b in order:
            t = self._sums(u, a, b, self.acc, self.pairs)
            t *= self.twelfth[a, b]
            t += f[a, b]
            np.multiply(t, self.inv_diag[a, b], out=u[a, b, :, 1:-1, 1:-1])

    def residual(self, u: np.ndarray, f: np.ndarray, colours) -> np.ndarray:
        for a, b in colours:
            o = self.r[a, b]
            np.multiply(self._sums(u, a, b, self.acc, self.pairs), self.twelfth[a, b], out=o)
            o += f[a, b]
            np.multiply(self.diag[a, b], u[a, b, :, 1:-1, 1:-1], out=self.tmp)
            o -= self.tmp
        return self.r

    def apply64(self, u: np.ndarray, out: np.ndarray) -> np.ndarray:
        """A u in float64 (the conjugate-gradient products), u split with its ring, into out (2×2×C×h×w)."""
        shape = u.shape[2:3] + (self.h, self.w)
        if getattr(self, "_scratch64", np.empty(0)).shape[1:] != shape:
            self._scratch64 = np.empty((2,) + shape)
            self._pairs64 = np.empty(shape[:2] + (self.w + 2,))
        edges, tmp = self._scratch64
        for a in (0, 1):
            for b in (0, 1):
                o = out[a, b]
                np.multiply(self._sums(u, a, b, edges, self._pairs64), self.minus_twelfth64[a, b], out=o)
                np.multiply(self.diag64[a, b], u[a, b, :, 1:-1, 1:-1], out=tmp)
                o += tmp
        return out


class _Hierarchy:
    def __init__(self, removed: np.ndarray, s: np.ndarray):
        self.levels: list[_Level] = [_Fine(removed, s)]
        level = self.levels[0]
        while max(level.height, level.width) > _COARSEST and level.active[0, 0].any():
            coef = level.coarsen()
            level = _Level(coef, level.active[0, 0])
            self.levels.append(level)
        self._factor_coarsest()

    def _factor_coarsest(self) -> None:
        level = self.levels[-1]
        count = int(level.full_active.sum())
        self.coarse_factor = None
        if 0 < count <= 4 * _COARSEST ** 2:  # more only when the finest grid has no coarse point: smoothing alone
            matrix = _stencil_matrix(level.full_coef, level.full_active)
            self.coarse_factor = splu(matrix, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                                      options={"SymmetricMode": True})

    def _cycle(self, depth: int, f: np.ndarray) -> np.ndarray:
        """One V(1,1)-cycle from zero for the split right-hand side f (2×2×C×h×w): the split correction, with
        its ring, in the level's work array."""
        level = self.levels[depth]
        level.buffers(f.shape[2])
        u = level.u
        u.fill(0)
        if depth == len(self.levels) - 1:
            if self.coarse_factor is None:
                for _ in range(2):
                    level.smooth(u, f, _PRE)
                    level.smooth(u, f, _POST)
                return u
            rhs = _merge(f, level.height, level.width)
            values = self.coarse_factor.solve(np.ascontiguousarray(rhs[:, level.full_active].T, dtype=np.float64))
            full = np.zeros(rhs.shape, _CYCLE)
            full[:, level.full_active] = values.T
            u[..., 1:-1, 1:-1] = _split(full, level.h, level.w)[..., 1:-1, 1:-1]
            return u
        level.smooth(u, f, _PRE)
        r = level.residual(u, f, _PRE[:-1])  # the last colour swept has no residual left
        r[_PRE[-1]] = 0
        coarse = self.levels[depth + 1]
        rc = level.restrict(r)
        fc = _split(rc, coarse.h, coarse.w)[..., 1:-1, 1:-1]
        level.prolong_add(u, self._cycle(depth + 1, fc))
        level.smooth(u, f, _POST)
        return u

    def solve(self, b_full: np.ndarray) -> tuple[np.ndarray, dict]:
        """Preconditioned conjugate gradients on the channels of b (C×H×W) together with, until it has served,
        the all-ones right-hand side on the removed pixels. Returns the solution (C×H×W) and stats; stats'
        "bound" is the certified max error, ≤ _ERROR_BOUND when "converged"."""
        fine = self.levels[0]
        channels = b_full.shape[0]
        b = _split(b_full, fine.h, fine.w)[..., 1:-1, 1:-1]
        ones = fine.active[:, :, None].astype(np.float64)  # 2×2×1×h×w
        r = np.concatenate([b, ones], axis=2)
        x = np.zeros_like(r)
        p = np.zeros(r.shape[:3] + (fine.h + 2, fine.w + 2))
        q = np.empty_like(r)
        z = self._cycle(0, r.astype(_CYCLE))
        p[...] = z
        rz = _dot(r, z[..., 1:-1, 1:-1])
        zeta = bound = np.inf
        iterations = ones_iterations = 0
        for iterations in range(1, _MAX_ITERATIONS + 1):
            fine.apply64(p, q)
            alpha = rz / _dot(p[..., 1:-1, 1:-1], q)
            step = alpha[:, None, None]
            x += step * p[..., 1:-1, 1:-1]
            q *= step
            r -= q  # q is αq from here on
            highest = r.max(axis=(0, 1, 3, 4))
            residual = np.maximum(highest, -r.min(axis=(0, 1, 3, 4)))
            if x.shape[2] > channels and highest[-1] <= _ONES_RESIDUAL:
                # z = x[-1] with L z = 1 − r_z ≥ (1 − max r_z)·1 > 0: then z ≥ 0 and L⁻¹1 ≤ z / (1 − max r_z).
                zeta = x[:, :, -1].max() / (1 - highest[-1])
                x, r, p, q = (np.ascontiguousarray(v[:, :, :channels]) for v in (x, r, p, q))
                rz, residual = rz[:channels], residual[:channels]
                ones_iterations = iterations
            bound = zeta * residual[:channels].max()
            if bound <= _ERROR_BOUND:
                # Certify with the true residual b − L x rather than the recurrence's (they differ by rounding only).
                p[..., 1:-1, 1:-1] = x
                r = b - fine.apply64(p, q)
                bound = zeta * np.abs(r).max()
                if bound <= _ERROR_BOUND:
                    break
                p[...] = 0  # (never seen) go on from the true residual with a fresh search direction
                q[...] = 0
            z = self._cycle(0, r.astype(_CYCLE))
            inner = z[..., 1:-1, 1:-1]
            rz_new = _dot(r, inner)
            beta = -_dot(q, inner) / rz  # flexible CG (Polak–Ribière): z·(r − r_old) / rz_old, r − r_old = −αq
            p *= beta[:, None, None]
            p += z
            rz = rz_new
        u = _merge(x[:, :, :channels], fine.height, fine.width)
        return u, {"iterations": iterations, "ones_iterations": ones_iterations, "zeta": float(zeta),
                   "bound": float(bound), "converged": bool(bound <= _ERROR_BOUND)}


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ a·b per channel of two split arrays (2×2×C×h×w)."""
    return np.einsum("abcij,abcij->c", a, b)


def _stencil_matrix(coef: np.ndarray, active: np.ndarray) -> sparse.csc_matrix:
    """The matrix of a 9-point stencil (9×H×W, slot order of _OFFSETS) on the `active` points, in raster order."""
    height, width = active.shape
    count = int(active.sum())
    index = np.full((height + 2, width + 2), -1)
    index[1:-1, 1:-1][active] = np.arange(count)
    rows, cols, values = [], [], []
    for k, (dy, dx) in enumerate(_OFFSETS):
        other = index[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
        ok = active & (other >= 0) & (coef[k] != 0)
        rows.append(index[1:-1, 1:-1][ok])
        cols.append(other[ok])
        values.append(coef[k][ok])
    return sparse.csc_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(count, count))
