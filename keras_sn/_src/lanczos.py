"""Golub-Kahan-Lanczos estimate of the top singular pair (numpy, float64).

The one Lanczos implementation of the package: the wrapper's warm-up (matrix
and convolution operators) and `keras_sn.spectral_norm`'s large-operator path
both call `top_singular_pair` with the operator given as two closures.

Plain power iteration converges like ``(sigma_2 / sigma_1)^(2k)``, which for
freshly initialized kernels (whose top singular values nearly tie) leaves
sigma percents low after 15 steps. Lanczos bidiagonalization with full
reorthogonalization spends the same products per step (one ``A v`` and one
``Aᵀ u``) but builds a Krylov subspace. How close it gets in a given number of
steps depends on the spectrum; `benchmarks/warmup_accuracy.py` measures the
default warm-up against numpy's SVD (the figures are in the docs' "Lipschitz
networks" page, the one place they are stated) and
`tests/test_power_iteration.py` pins it on known spectra.
"""

import numpy as np


def _unit(x, fallback):
    norm = np.linalg.norm(x)
    return x / norm if norm > 0 else fallback


def top_singular_pair(matvec, rmatvec, u0, steps, tolerance=None):
    """Estimates the top singular pair of a linear map ``A``.

    Args:
        matvec: ``v -> A v``, float64 1-D arrays (input space to output).
        rmatvec: ``u -> Aᵀ u`` (output space to input).
        u0: float64 `(n_out,)`, a non-zero start vector in the output space.
        steps: int >= 0, the most Lanczos steps.
        tolerance: `None`, or stop once the residual of the top Ritz pair is
            at most `tolerance` times the Ritz value. ``A v = sigma u`` holds
            exactly and ``||Aᵀ u - sigma v|| = alpha |p_last|``, where
            ``alpha <= ||A||`` is the next step's norm and `p_last` the last
            entry of the top left singular vector of the bidiagonal matrix,
            so the rule is ``|p_last| <= tolerance``.

    Returns:
        `(u, v, ritz)`: unit vectors finished with one power step, so that
        ``v = normalize(Aᵀ u_prev)`` and ``u = normalize(A v)`` hold as after
        a training step, and the last top Ritz value (a lower bound of sigma;
        0.0 when no step ran). For ``A = 0``: `u0` normalized, and the first
        unit vector as `v`.
    """
    u = u0 / np.linalg.norm(u0)
    n_in = rmatvec(u).shape[0]
    v_default = np.zeros(n_in)
    v_default[0] = 1.0
    left, right, alphas, betas = [u], [], [], []
    ritz, u_best, solved = 0.0, u, 0
    for _ in range(min(steps, n_in, u.shape[0])):
        v = rmatvec(left[-1])
        if right:
            v -= betas[-1] * right[-1]
            basis = np.stack(right)
            v -= basis.T @ (basis @ v)  # full reorthogonalization
        alpha = np.linalg.norm(v)
        if alpha <= 1e-300:
            break
        right.append(v / alpha)
        alphas.append(alpha)
        w = matvec(right[-1]) - alpha * left[-1]
        basis = np.stack(left)
        w -= basis.T @ (basis @ w)
        beta = np.linalg.norm(w)
        betas.append(beta)
        invariant = beta <= 1e-12 * alpha  # the estimate is exact
        if not invariant:
            left.append(w / beta)
        if invariant or tolerance is not None:
            ritz, u_best, p_last = _top_ritz(left, alphas, betas)
            solved = len(alphas)
            if invariant or abs(p_last) <= tolerance:
                break
    if alphas and solved != len(alphas):
        ritz, u_best, _ = _top_ritz(left, alphas, betas)
    if alphas:
        u = _unit(u_best, u)
    v = _unit(rmatvec(u), v_default)
    u = _unit(matvec(v), u)
    return u, v, ritz


def _top_ritz(left, alphas, betas):
    """Top Ritz value, its left vector and the last entry of its coordinates.

    ``A V_k = U_{k+1} B`` with ``B`` lower bidiagonal ((k+1) x k, or k x k
    once an invariant subspace is found).
    """
    k = len(alphas)
    bidiagonal = np.zeros((len(left), k))
    bidiagonal[np.arange(k), np.arange(k)] = alphas
    below = np.arange(min(k, len(left) - 1))
    bidiagonal[below + 1, below] = np.asarray(betas)[below]
    p, singular, _ = np.linalg.svd(bidiagonal)
    return float(singular[0]), np.stack(left).T @ p[:, 0], p[-1, 0]


def matrix_top_singular_pairs(matrices, u0, steps):
    """`top_singular_pair` for each block of a `(blocks, d_in, d_out)` stack.

    Each block is ``K = Mᵀ`` as the power iteration reads it, so u is in
    R^d_out, v in R^d_in and ``A v = Kᵀ v``.

    Returns:
        `(u, v)`: float64 arrays `(blocks, d_out)` and `(blocks, d_in)`.
    """
    pairs = [
        top_singular_pair(lambda v, k=k: k.T @ v, lambda u, k=k: k @ u, u,
                          steps)[:2]
        for k, u in zip(matrices, u0)
    ]
    return np.stack([u for u, _ in pairs]), np.stack([v for _, v in pairs])
