r"""Linear stability of the uniform state rho = 1/L.

Linearising the PDE about the uniform state, the Fourier mode k grows at the rate

.. math:: \sigma_k = -q_k^2\left(\beta^{-1} + \hat W(q_k)/L\right),\qquad q_k = 2\pi k/L .

Because ``W_hat`` is proportional to gamma, ``sigma_k = 0`` is linear in gamma
and the threshold ``gamma_sharp`` is solved in closed form over the modes. The
modes that need checking are bounded with ``|W_hat(q)| <= TV(W')/q**2``, where
``TV(W')`` is the total variation of W' (integrate by parts twice), so no mode
beyond that bound can become unstable first or grow fastest.
"""

import math

import numpy as np
from scipy.integrate import quad

from . import validation


def wavenumbers(model, k):
    """Return ``q_k = 2*pi*k/L``."""
    return 2.0 * math.pi * np.asarray(k, dtype=float) / model.L


def growth_rates(model, k):
    """Return ``sigma_k`` for the modes ``k`` (integers >= 1, array or scalar)."""
    k = validation.integers_at_least("k", k, 1)
    q = wavenumbers(model, k)
    return -q * q * (1.0 / model.beta + model.potential.fourier(q) / model.L)


def _relevant_modes(model, threshold):
    """Return the modes 1..K outside which ``|W_hat(q_k)|/L < threshold`` is guaranteed."""
    variation = model.potential.derivative_variation
    q_bound = math.sqrt(variation / (model.L * threshold))
    return np.arange(1, max(1, math.ceil(q_bound * model.L / (2.0 * math.pi))) + 1)


def gamma_sharp(model):
    """Return the smallest gamma > 0 at which some ``sigma_k`` reaches 0.

    It depends on the shape of the potential, on L and on beta; the strength
    ``model.gamma`` is ignored.

    Raises
    ------
    ValueError
        If ``W_hat(q_k) >= 0`` for every mode, so that no attractive strength
        destabilises the uniform state.
    """
    unit = model.with_gamma(1.0)
    # sigma_k = 0 at gamma = -L / (beta * w_k) with w_k = W_hat(q_k) at gamma = 1;
    # only modes with w_k < 0 ever destabilise. The mode k = 1 is always checked,
    # and the bound below uses the best value found there.
    first = unit.potential.fourier(wavenumbers(unit, 1))
    modes = _relevant_modes(unit, max(abs(first), 1e-300) / unit.L)
    w = unit.potential.fourier(wavenumbers(unit, modes))
    if not np.any(w < 0):
        raise ValueError("gamma_sharp does not exist: W_hat(q_k) >= 0 for every mode k, so the uniform state is never unstable")
    return float(unit.L / (unit.beta * np.max(-w[w < 0])))


def fastest_mode(model):
    """Return the mode ``k >= 1`` with the largest growth rate sigma_k, and that rate.

    ``L/k`` predicts the spacing of freshly formed clusters when the rate is
    positive. Modes beyond the bound in the module docstring have ``sigma_k < 0``.
    """
    modes = _relevant_modes(model, 1.0 / model.beta)
    rates = growth_rates(model, modes)
    best = int(np.argmax(rates))
    return int(modes[best]), float(rates[best])


def predicted_cluster_count(model):
    """Return the number of clusters the fastest mode predicts, 0 if the uniform state is stable."""
    k, rate = fastest_mode(model)
    return k if rate > 0 else 0


def count_probabilities(model, N):
    r"""Return the modes and the probability that each sets the number of clusters of N particles.

    The linear analysis behind the prediction: for N particles drawn
    uniformly, the Fourier coefficients ``mu_k`` of the empirical measure are,
    to leading order in 1/N, independent complex Gaussians with
    ``E|mu_k|**2 = 1/N``, so ``N |mu_k|**2`` is exponential with mean 1. Each
    grows like ``exp(sigma_k t)`` until the largest reaches order one, near
    ``t_form = ln N / (2 sigma_max)``, and the mode whose amplitude
    ``|mu_k| exp(sigma_k t_form)`` is then largest sets the count. With
    ``b_j = N**(sigma_j / sigma_max)`` the probability that mode k wins is

    .. math:: P_k = \int_0^\infty e^{-u} \prod_{j \ne k}\bigl(1 - e^{-u\, b_k / b_j}\bigr)\,du,

    computed by adaptive quadrature. Only the linear growth enters: clusters
    that merge after forming lower the count below this prediction.

    Parameters
    ----------
    model : Model
        Its uniform state must be linearly unstable (some ``sigma_k > 0``).
    N : int
        Number of particles, >= 2.

    Returns
    -------
    modes : ndarray of int, shape (K,)
        The modes 1..K beyond which ``sigma_k < 0`` is guaranteed.
    probabilities : ndarray, shape (K,)
        ``P_k``; they sum to 1 up to the quadrature error (below 1e-9).

    Raises
    ------
    ValueError
        If N < 2 or the uniform state is linearly stable.
    """
    N = validation.integer_at_least("N", N, 2)
    modes = _relevant_modes(model, 1.0 / model.beta)
    rates = growth_rates(model, modes)
    top = float(rates.max())
    if top <= 0.0:
        raise ValueError(f"the uniform state is linearly stable at gamma = {model.gamma!r} (largest rate "
                         f"{top:.3g}): clusters do not form by linear growth, so no count is predicted; "
                         "use a gamma above gamma_sharp")
    log_b = np.log(N) * rates / top
    probabilities = np.empty(modes.size)
    for index in range(modes.size):
        ratios = np.exp(np.delete(log_b, index) - log_b[index])  # b_j / b_k for the other modes

        def integrand(u, ratios=ratios):
            return math.exp(-u) * float(np.prod(-np.expm1(-u / ratios)))

        probabilities[index] = quad(integrand, 0.0, np.inf, limit=200, epsabs=1e-13, epsrel=1e-10)[0]
    return modes, probabilities
