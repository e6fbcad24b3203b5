"""The multigrid kernels of `imputation` (see its docstring for the method), as loops compiled by numba.

Layout: a grid vector is C×(h+2)×(w+2) float64 with a ring of zeros, so that neighbours need no bounds checks;
a 9-point stencil is h×w×9, slot k = 3·(dy + 1) + (dx + 1) holding the coupling with the neighbour at (dy, dx),
slot 4 the point itself, all zero on inactive points (kept pixels, coarse points that are not removed) and
for couplings leaving the grid. Coarse point (I, J) is fine point (2I, 2J); interpolation weights are h×w×9
too, weights[i, j, k] that of the coarse point at slot k of fine point (i, j) (1 in slot 4 of an active coarse
point). Inactive points have 1 / diagonal 0, so the smoother keeps them at 0 without a branch on the mask.
Kernels handle the first `nc` channels only (the conjugate gradients drop their all-ones column without
copying) and release the GIL (ROAD imputes on a thread beside the model).

Compilation: each kernel is compiled on its first call (seconds for all of them; `imputation.warm_up` does it
on a tiny mask) and cached on disk by numba where it finds a writable place, beside this file or else in the
user's cache directory; where it finds none, the kernels are compiled afresh in each process instead.
"""

from __future__ import annotations

import numba
import numpy as np


def _jit(function=None, **options):
    """numba.njit releasing the GIL, cached on disk; without caching where numba finds no writable cache
    location (it refuses to decorate then)."""
    if function is None:
        return lambda function: _jit(function, **options)
    try:
        return numba.njit(cache=True, nogil=True, **options)(function)
    except RuntimeError:  # numba: "cannot cache function …: no locator available for file …"
        return numba.njit(nogil=True, **options)(function)


def _inline(function):
    """A helper of the kernels, compiled into each (numba IR inlining) rather than called."""
    return numba.njit(inline="always")(function)


@_inline
def _neighbours(coef, v, i, j, constant):
    """Σ_q A_pq v_q over the eight neighbours of grid point (i, j) (at [i + 1, j + 1] in v); `constant`: the finest
    grid, whose couplings are −1/6 and −1/12 (v being 0 on kept pixels), read from no array."""
    if constant:
        edges = v[i, j + 1] + v[i + 1, j] + v[i + 1, j + 2] + v[i + 2, j + 1]
        return -(2 * edges + v[i, j] + v[i, j + 2] + v[i + 2, j] + v[i + 2, j + 2]) * (1 / 12)
    return (coef[i, j, 0] * v[i, j] + coef[i, j, 1] * v[i, j + 1] + coef[i, j, 2] * v[i, j + 2]
            + coef[i, j, 3] * v[i + 1, j] + coef[i, j, 5] * v[i + 1, j + 2] + coef[i, j, 6] * v[i + 2, j]
            + coef[i, j, 7] * v[i + 2, j + 1] + coef[i, j, 8] * v[i + 2, j + 2])


@_jit
def fine_system(x, removed, top, left, height, width):
    """The height×width window at (top, left) of the image: the stencil of L (−1/6, −1/12 to removed neighbours,
    the in-image neighbour weight sum s_p on the diagonal) and the right-hand side Σ_{q kept} w_pq x_q (then a
    column of ones), on the removed pixels only."""
    channels, rows, cols = x.shape
    inside = np.zeros((height + 2, width + 2))  # 1 on image pixels, with the window's ring
    gone = np.zeros((height + 2, width + 2))  # 1 on removed pixels
    kept = np.zeros((channels, height + 2, width + 2))  # x on kept pixels, else 0
    for i in range(height + 2):
        for j in range(width + 2):
            y, z = top + i - 1, left + j - 1
            if 0 <= y < rows and 0 <= z < cols:
                inside[i, j] = 1.0
                if removed[y, z]:
                    gone[i, j] = 1.0
                else:
                    for c in range(channels):
                        kept[c, i, j] = x[c, y, z]
    coef = np.zeros((height, width, 9))
    rhs = np.zeros((channels + 1, height + 2, width + 2))
    for i in range(height):
        for j in range(width):
            here = gone[i + 1, j + 1]
            for k in range(9):
                if k != 4:
                    weight = here * (1 / 12 if k % 2 == 0 else 1 / 6)
                    coef[i, j, k] = -weight * gone[i + k // 3, j + k % 3]
                    coef[i, j, 4] += weight * inside[i + k // 3, j + k % 3]
            rhs[channels, i + 1, j + 1] = here
    for c in range(channels):
        for i in range(height):
            for j in range(width):
                rhs[c, i + 1, j + 1] = -gone[i + 1, j + 1] * _neighbours(coef, kept[c], i, j, True)
    return coef, rhs


# The slots of a fine point's coarse neighbours, by parity 2·(row % 2) + column % 2: itself, left and right,
# above and below, the four diagonal ones.
_SLOTS = np.array([[4, 4, 4, 4], [3, 5, 5, 5], [1, 7, 7, 7], [0, 2, 6, 8]])
_COUNTS = np.array([1, 2, 2, 4])
_COLOURS = np.array([[0, 0], [1, 1], [0, 1], [1, 0]])  # the Gauss–Seidel order of the colours (forward)


@_jit
def interpolation(coef, strength):
    """Classical direct interpolation (Stüben): each fine point's weights on its coarse neighbours whose
    coupling is at least `strength` × its strongest, positive couplings lumped on the diagonal."""
    height, width, _ = coef.shape
    weights = np.zeros((height, width, 9))
    for i in range(height):
        for j in range(width):
            if coef[i, j, 4] == 0.0:
                continue
            if i % 2 == 0 and j % 2 == 0:
                weights[i, j, 4] = 1.0
                continue
            negative = strongest = coarse = 0.0
            diagonal = coef[i, j, 4]
            for k in range(9):
                if k != 4:
                    negative += min(coef[i, j, k], 0.0)
                    strongest = max(strongest, -coef[i, j, k])
                    diagonal += max(coef[i, j, k], 0.0)
            for k in range(9):
                if (i + k // 3 + 1) % 2 == 0 and (j + k % 3 + 1) % 2 == 0 and coef[i, j, k] <= -strength * strongest:
                    weights[i, j, k] = coef[i, j, k]
                    coarse += coef[i, j, k]
            for k in range(9):
                weights[i, j, k] *= -negative / (coarse * diagonal) if coarse < 0 else 0.0
    return weights


@_jit
def galerkin(coef, weights):
    """The coarse stencil PᵀAP: Σ P[i, I] A[i, j] P[j, J] over fine points i, their neighbours j and the coarse
    points I, J interpolating to them (the slots of each parity, `_SLOTS`)."""
    height, width, _ = coef.shape
    result = np.zeros(((height + 1) // 2, (width + 1) // 2, 9))
    for i in range(height):
        for j in range(width):
            if coef[i, j, 4] == 0.0:
                continue
            parity = 2 * (i & 1) + (j & 1)
            for m in range(_COUNTS[parity]):
                s = _SLOTS[parity, m]
                ws = weights[i, j, s]
                yi, xi = (i + s // 3 - 1) >> 1, (j + s % 3 - 1) >> 1  # the coarse point's index
                for k in range(9):
                    a = coef[i, j, k] * ws
                    if a == 0.0:  # also every neighbour, or coarse point, outside the grid
                        continue
                    y, z = i + k // 3 - 1, j + k % 3 - 1
                    other = 2 * (y & 1) + (z & 1)
                    for n in range(_COUNTS[other]):
                        t = _SLOTS[other, n]
                        slot = 3 * (((y + t // 3 - 1) >> 1) - yi) + ((z + t % 3 - 1) >> 1) - xi + 4
                        result[yi, xi, slot] += a * weights[y, z, t]
    return result


@_jit
def sweep(coef, inverse, u, f, nc, forward, constant):
    """One Gauss–Seidel sweep for A u = f in place, four colours (row parity × column parity: points of one
    colour are never neighbours, so none waits for the one before it) in `_COLOURS` order forward or backward
    (its transpose, so that a forward pre- and a backward post-smoothing make a symmetric cycle). `inverse`:
    1 / the diagonal, 0 on inactive points (which stay 0), so that no branch depends on the mask."""
    height, width, _ = coef.shape
    for step in range(4):
        colour = step if forward else 3 - step
        for c in range(nc):
            v, g = u[c], f[c]
            for i in range(_COLOURS[colour, 0], height, 2):
                for j in range(_COLOURS[colour, 1], width, 2):
                    v[i + 1, j + 1] = (g[i + 1, j + 1] - _neighbours(coef, v, i, j, constant)) * inverse[i, j]


@_jit
def smooth(coef, inverse, u, f, nc, pairs, constant):
    """u from zero by `pairs` forward and backward sweeps (the coarsest grid's solver)."""
    u[:nc] = 0.0
    for _ in range(pairs):
        sweep(coef, inverse, u, f, nc, True, constant)
        sweep(coef, inverse, u, f, nc, False, constant)


@_jit
def residual(coef, u, f, out, nc, constant):
    """out = f − A u on the active points; out = −A u where f is None."""
    height, width, _ = coef.shape
    for c in range(nc):
        v, o = u[c], out[c]
        for i in range(height):
            for j in range(width):
                total = coef[i, j, 4] * v[i + 1, j + 1] + _neighbours(coef, v, i, j, constant)
                total = -total if f is None else f[c, i + 1, j + 1] - total
                o[i + 1, j + 1] = total if coef[i, j, 4] != 0.0 else 0.0  # a select, not a branch


@_jit
def restrict(weights, r, out, nc):
    """out = Pᵀ r on the coarse grid: each coarse point gathers from the nine fine points around its own."""
    height, width, _ = weights.shape
    for c in range(nc):
        for yi in range(out.shape[1] - 2):
            for xi in range(out.shape[2] - 2):
                total = 0.0
                for k in range(9):
                    y, z = 2 * yi + k // 3 - 1, 2 * xi + k % 3 - 1
                    if 0 <= y < height and 0 <= z < width:
                        total += weights[y, z, 8 - k] * r[c, y + 1, z + 1]
                out[c, yi + 1, xi + 1] = total


@_jit
def prolong_add(weights, e, u, nc):
    """u += P e, e on the coarse grid: for each coarse point (I, J), fine points (2I, 2J) and the three after it,
    which interpolate from (I, J) and the coarse points right of and below it."""
    height, width, _ = weights.shape
    for c in range(nc):
        v, g = u[c], e[c]
        for yi in range((height + 1) // 2):
            for xi in range((width + 1) // 2):
                y, z = 2 * yi, 2 * xi
                centre, right = g[yi + 1, xi + 1], g[yi + 1, xi + 2]
                below, corner = g[yi + 2, xi + 1], g[yi + 2, xi + 2]
                v[y + 1, z + 1] += weights[y, z, 4] * centre
                if z + 1 < width:
                    v[y + 1, z + 2] += weights[y, z + 1, 3] * centre + weights[y, z + 1, 5] * right
                if y + 1 < height:
                    v[y + 2, z + 1] += weights[y + 1, z, 1] * centre + weights[y + 1, z, 7] * below
                    if z + 1 < width:
                        w = weights[y + 1, z + 1]
                        v[y + 2, z + 2] += w[0] * centre + w[2] * right + w[6] * below + w[8] * corner


@_jit
def cg_step(x, r, p, q, alpha, nc):
    """x += α p, r −= α A p with q = −A p on entry, q = −α A p on exit (for the flexible β), per channel."""
    for c in range(nc):
        a = alpha[c]
        xc, rc, pc, qc = x[c].ravel(), r[c].ravel(), p[c].ravel(), q[c].ravel()
        for n in range(xc.size):
            xc[n] += a * pc[n]
            qc[n] *= a
            rc[n] += qc[n]


@_jit
def direction(p, z, beta, nc):
    """p = z + β p, per channel."""
    for c in range(nc):
        pc, zc = p[c].ravel(), z[c].ravel()
        for n in range(pc.size):
            pc[n] = zc[n] + beta[c] * pc[n]


@_jit(fastmath=True)
def dot(a, b, nc):
    """Σ a·b per channel, over the first nc channels (summed in any order, so in SIMD lanes)."""
    out = np.zeros(nc)
    for c in range(nc):
        ac, bc = a[c].ravel(), b[c].ravel()
        for n in range(ac.size):
            out[c] += ac[n] * bc[n]
    return out
