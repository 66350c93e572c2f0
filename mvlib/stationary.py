r"""Stationary states of the mean-field PDE, their branches in gamma and their stability.

A stationary state solves the fixed-point equation

.. math:: \rho = e^{-\beta W * \rho} / Z, \qquad Z = \int e^{-\beta W * \rho} .

It is solved here on the grid of :mod:`mvlib.grid`, not by running the PDE,
with Newton's method in the dimensionless potential :math:`\psi = \beta\, W * \rho`:

.. math:: G(\psi) = \psi - \beta\, W * \frac{e^{-\psi}}{Z(\psi)} = 0 .

This form stays well conditioned for concentrated clusters. The density in the
gap between clusters is exponentially small, but ``psi`` is bounded by
``beta * max|W|``. The Jacobian ``I + beta * C (diag(rho) - rho rho^T dx)``
(``C`` the convolution matrix) has entries of order ``beta * gamma * ell``. So
neither the unknowns nor the equations span many orders of magnitude. Every
state is checked by its residual :func:`relative_residual`, the maximum error
in ``log rho`` relative to the size of ``psi``.

A cluster can sit anywhere on the torus, so a cluster state lies on a
continuous family of translates, and the Jacobian has a (nearly) zero
eigenvalue in the direction of translation. :func:`solve` takes the
least-squares Newton step with singular values below ``SINGULAR_RTOL`` times
the largest one discarded, which leaves that direction alone.
:func:`continuation` instead works among densities symmetric about ``L/2``,
where translation is excluded and a plain LU solve is used.

Stability is read from the spectrum of the PDE linearised about the state (see
:func:`stability`). The order parameter of the bifurcation diagrams is the
modulus of the first Fourier coefficient (:func:`order_parameter`).
"""

import dataclasses
import functools
import logging
import math
import time

import numpy as np
import scipy.linalg
import scipy.optimize
from threadpoolctl import threadpool_limits

from . import validation
from .energy import check_grid, free_energy, uniform_free_energy
from .stability import gamma_sharp as _gamma_sharp

_logger = logging.getLogger(__name__)

# BLAS threads used by the dense linear algebra here. The matrices have at most a
# few thousand rows, where threads gain little. On 2 cores shared with other
# jobs, two BLAS threads made transition() about five times slower than one.
BLAS_THREADS = 1

# Singular values of the Newton Jacobian below this fraction of the largest are
# treated as zero in solve(). This removes the translation direction of a
# cluster, whose singular value is at round-off level. A genuinely small one,
# as near a fold, is dropped too once it is this close to zero.
SINGULAR_RTOL = 1e-10

# Backtracking halves a Newton step at most this many times before solve()
# reports that the residual could not be reduced.
MAX_BACKTRACKS = 30

# Eigenvalues of the linearised PDE within this fraction of the spectral radius
# count as neutral in is_stable(): a cluster's translation mode has eigenvalue
# zero up to round-off (about 1e-16 times the spectral radius).
NEUTRAL_RTOL = 1e-9

# Continuation: Newton iterations allowed per corrector, and the iteration count
# up to which the arclength step is grown after a successful correction.
CORRECTOR_MAX_ITER = 12
CORRECTOR_FAST_ITER = 4
STEP_GROWTH = 1.5

# A corrector that lands farther than this many arclength steps from its
# prediction is rejected: near a fold or a branch point it has jumped to
# another branch (the uniform state, typically) instead of following this one.
MAX_CORRECTION = 0.5

# Steps that reach the uniform state are halved down to this fraction of
# max_step, which places the last points of a branch next to its branch point.
END_STEP_FRACTION = 1e-3


@dataclasses.dataclass
class StationaryState:
    """A solution of ``rho = exp(-beta W*rho)/Z`` on a grid, with how it was found."""

    rho: np.ndarray
    """ndarray, shape (M,): the density, mass 1."""
    residual: float
    """Relative residual of the fixed-point equation, see :func:`relative_residual`."""
    converged: bool
    """Whether ``residual <= tol`` was reached within ``max_iter`` iterations."""
    iterations: int
    """Newton iterations taken."""
    free_energy: float
    """Free energy F(rho) on the grid."""
    gamma: float
    """Interaction strength of the model the state solves."""
    message: str
    """The reason the iteration ended."""


@dataclasses.dataclass
class Branch:
    """A branch of stationary states in gamma, traced by pseudo-arclength continuation."""

    gamma: np.ndarray
    """ndarray, shape (n,): interaction strength at each point."""
    rho: np.ndarray
    """ndarray, shape (n, M): the densities, each symmetric about ``L/2``."""
    free_energy: np.ndarray
    """ndarray, shape (n,): F(rho) on the grid."""
    order: np.ndarray
    """ndarray, shape (n,): :func:`order_parameter` of each density."""
    stable: np.ndarray
    """ndarray of bool, shape (n,): :func:`is_stable` at each point (all False if not computed)."""
    max_rate: np.ndarray
    """ndarray, shape (n,): the largest growth rate of the linearised PDE (nan if not computed)."""
    residual: np.ndarray
    """ndarray, shape (n,): :func:`relative_residual` of each point."""
    status: str
    """The reason the continuation ended: "interval" (gamma left the interval), "uniform" (the branch
    reached the uniform state), "max_points", or "failed" (the step fell below ``min_step``)."""
    message: str
    n_newton: int
    """Newton iterations over all correctors, rejected ones included."""
    n_rejected: int
    """Predictor steps rejected and retried with half the step."""
    wall_time: float


@dataclasses.dataclass
class Transition:
    """The thresholds of the single-cluster branch of a model on a grid."""

    gamma_fold: float
    """Smallest gamma on the branch (nan if the branch has no fold)."""
    gamma_c: float
    """The gamma where the cluster's free energy equals the uniform one."""
    gamma_sharp: float
    """Linear instability threshold of the uniform state (continuum formula)."""
    gamma_branch: float
    """The gamma at which the branch meets the uniform state, extrapolated (nan if it does not reach it)."""
    n_crossings: int
    """Sign changes of F - F(rho_inf) along the branch."""
    continuous: bool
    """True if F - F(rho_inf) never changes sign and the branch ends on the uniform state,
    so gamma_c is the branch point (a continuous transition)."""
    branch: Branch


def _limit_blas_threads(function):
    """Run ``function`` with at most BLAS_THREADS BLAS threads."""

    @functools.wraps(function)
    def limited(*args, **kwargs):
        with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
            return function(*args, **kwargs)

    return limited


def order_parameter(grid, rho):
    r"""Return the modulus of the first Fourier coefficient, ``|integral rho exp(2 pi i x/L)| / integral rho``.

    It is 0 for the uniform state, grows like the amplitude of the first mode
    near it, and tends to 1 as the density concentrates at a point.

    Parameters
    ----------
    grid : Grid
    rho : array_like, shape (M,) or (n, M)
    """
    rho = np.asarray(rho, dtype=float)
    phase = np.exp(2j * np.pi * grid.x / grid.L)
    return np.abs(rho @ phase) / np.sum(rho, axis=-1)


def cluster_guess(grid, centres, masses, width):
    """Return a density made of periodic Gaussian bumps, scaled to mass 1.

    Parameters
    ----------
    grid : Grid
    centres : array_like, shape (k,)
        Cluster centres in ``[0, L)``.
    masses : array_like, shape (k,)
        Relative masses, each > 0; they are scaled to sum to 1.
    width : float
        Standard deviation of each bump, in ``(0, L/2]``.

    Returns
    -------
    ndarray, shape (M,)
    """
    centres = np.atleast_1d(np.asarray(centres, dtype=float))
    masses = np.atleast_1d(np.asarray(masses, dtype=float))
    if centres.ndim != 1 or centres.size == 0 or masses.shape != centres.shape:
        raise ValueError(
            f"centres and masses have shapes {centres.shape} and {masses.shape}: expected two 1-D arrays of equal length k >= 1"
        )
    if not np.all(np.isfinite(centres)) or np.any(centres < 0) or np.any(centres >= grid.L):
        raise ValueError(f"centres = {centres.tolist()} is invalid: each centre must lie in [0, L) = [0, {grid.L:g})")
    if not np.all(np.isfinite(masses)) or np.any(masses <= 0):
        raise ValueError(f"masses = {masses.tolist()} is invalid: each mass must be finite and > 0")
    width = validation.in_interval("width", width, 0.0, 0.5 * grid.L, closed_high=True)

    # periodic bumps: each is summed over the images within 4 torus lengths
    rho = np.zeros(grid.M)
    for centre, mass in zip(centres, masses / masses.sum()):
        distance = grid.minimal_image(grid.x - centre)
        bump = sum(np.exp(-0.5 * ((distance + n * grid.L) / width) ** 2) for n in range(-4, 5))
        rho += mass * bump / grid.integrate(bump)
    return grid.normalize(rho)


def relative_residual(psi, residual_vector):
    """Return ``max|G| / (1 + max|psi|)``: the error in ``log rho`` relative to the size of ``beta W*rho``."""
    return float(np.max(np.abs(residual_vector)) / (1.0 + np.max(np.abs(psi))))


def _density(psi, dx):
    """Return ``exp(-psi)/Z`` and ``log`` of it, computed without overflow."""
    shifted = psi - psi.min()
    log_z = math.log(float(np.sum(np.exp(-shifted)) * dx))
    log_rho = -shifted - log_z
    return np.exp(log_rho), log_rho


def _check_tol(tol, max_iter):
    tol = validation.in_interval("tol", tol, 0.0, 1.0)
    max_iter = validation.integer_at_least("max_iter", max_iter, 1)
    return tol, max_iter


@_limit_blas_threads
def solve(model, grid, rho_guess, *, tol=1e-11, max_iter=100):
    """Solve ``rho = exp(-beta W*rho)/Z`` by damped Newton iteration from ``rho_guess``.

    The unknown is ``psi = beta W*rho`` (module docstring); the start is
    ``psi = beta W*rho_guess``. Each step solves the dense ``M x M`` Newton
    system in the least-squares sense, with singular values below
    ``SINGULAR_RTOL`` of the largest discarded, so a cluster does not drift
    along its translation direction. The step is halved until the residual
    decreases. Cost: one SVD, ``O(M**3)``, per iteration.

    Parameters
    ----------
    model : Model
    grid : Grid
        Must have the torus length of ``model`` and resolve its range.
    rho_guess : array_like, shape (M,)
        A density (>= 0, positive mass); it is renormalised to mass 1.
    tol : float
        Target for :func:`relative_residual`, in (0, 1).
    max_iter : int
        Maximum number of Newton iterations, >= 1.

    Returns
    -------
    StationaryState
        ``converged`` is False, with a message, if ``tol`` was not reached;
        no exception is raised for that.

    Raises
    ------
    ValueError
        If the grid does not match the model, ``rho_guess`` is not a density
        of shape (M,), or ``tol``/``max_iter`` are out of range.
    """
    check_grid(model, grid)
    rho_guess = grid.normalize(validation.density("rho_guess", rho_guess, grid.M))
    tol, max_iter = _check_tol(tol, max_iter)

    # the convolution as an explicit matrix: (W*rho)_i = sum_j C[i, j] rho_j
    convolution = grid.convolution(model.potential)
    matrix = scipy.linalg.circulant(convolution.kernel) * grid.dx
    beta, dx = model.beta, grid.dx

    def residual_of(psi):
        rho, _ = _density(psi, dx)
        return psi - beta * convolution(rho), rho

    psi = beta * convolution(rho_guess)
    residual_vector, rho = residual_of(psi)
    residual = relative_residual(psi, residual_vector)
    iterations = 0
    message = f"converged: residual {residual:.2e} <= tol = {tol:.1e}"
    while residual > tol:
        if iterations == max_iter:
            message = f"not converged: residual {residual:.2e} > tol = {tol:.1e} after max_iter = {max_iter} iterations"
            break
        iterations += 1

        # Jacobian of G: I + beta C (diag(rho) - rho rho^T dx), since d rho / d psi = -(diag(rho) - rho rho^T dx)
        jacobian = np.eye(grid.M) + beta * (matrix * rho[None, :] - np.outer(convolution(rho), rho) * dx)
        step = np.linalg.lstsq(jacobian, -residual_vector, rcond=SINGULAR_RTOL)[0]

        # backtracking on the maximum norm of G
        norm = np.max(np.abs(residual_vector))
        for _ in range(MAX_BACKTRACKS):
            trial = psi + step
            trial_vector, trial_rho = residual_of(trial)
            if np.max(np.abs(trial_vector)) < norm:
                break
            step = 0.5 * step
        else:
            message = f"not converged: no step reduced the residual {residual:.2e} at iteration {iterations}"
            break
        psi, residual_vector, rho = trial, trial_vector, trial_rho
        residual = relative_residual(psi, residual_vector)
        message = f"converged: residual {residual:.2e} <= tol = {tol:.1e}"

    converged = residual <= tol
    _logger.info("stationary solve at gamma = %g: %s (%d iterations)", model.gamma, message, iterations)
    energy = free_energy(model, grid, rho, convolution).total
    return StationaryState(rho, residual, converged, iterations, energy, model.gamma, message)


def _rate_matrix(model, grid, log_rho, kernel):
    """Return the symmetric matrix ``-S H S^T`` whose spectrum gives the growth rates (see stability())."""
    M, dx, beta = grid.M, grid.dx, model.beta

    # entropy part S diag(1/(beta rho)) S^T, with the geometric mean as edge
    # density: its entries are exponentials of differences of log rho, which
    # neither overflow nor underflow where rho itself would
    following = np.roll(log_rho, -1)
    after_next = np.roll(log_rho, -2)
    diagonal = 2.0 * np.cosh(0.5 * (following - log_rho)) / (beta * dx * dx)
    coupling = -np.exp(0.25 * (log_rho - 2.0 * following + after_next)) / (beta * dx * dx)
    matrix = np.diag(diagonal)
    index = np.arange(M)
    matrix[index, (index + 1) % M] += coupling
    matrix[(index + 1) % M, index] += coupling

    # interaction part S C S^T with C the convolution matrix: D C D^T is
    # formed by differencing rows and columns, then scaled by sqrt(edge density)
    convolution = scipy.linalg.circulant(kernel) * dx
    rows = np.roll(convolution, -1, axis=0) - convolution
    differenced = np.roll(rows, -1, axis=1) - rows
    sqrt_edge = np.exp(0.25 * (log_rho + following))
    matrix += differenced * np.outer(sqrt_edge, sqrt_edge) / (dx * dx)

    # exact symmetry, then the sign convention of growth rates
    return -0.5 * (matrix + matrix.T), sqrt_edge


def _rates_from_log(model, grid, log_rho, kernel):
    """Return the growth rates on mass-preserving perturbations, sorted descending."""
    rates, sqrt_edge = _rate_matrix(model, grid, log_rho, kernel)

    # S^T y = 0 exactly for y proportional to 1/sqrt(edge density): that vector
    # carries no perturbation, so a Householder reflection maps it to the first
    # axis and the first row and column are dropped
    if not np.all(sqrt_edge > 0):
        raise ValueError("rho underflows between cells: the linearised operator cannot be formed on this grid")
    log_null = -np.log(sqrt_edge)
    null = np.exp(log_null - log_null.max())
    null /= np.linalg.norm(null)
    axis = np.zeros_like(null)
    axis[0] = 1.0
    reflector = null - axis
    if np.linalg.norm(reflector) > 1e-12:
        reflector /= np.linalg.norm(reflector)
        product = rates @ reflector
        rates = (
            rates
            - 2.0 * np.outer(reflector, product)
            - 2.0 * np.outer(product, reflector)
            + 4.0 * (reflector @ product) * np.outer(reflector, reflector)
        )
    eigenvalues = scipy.linalg.eigh(rates[1:, 1:], eigvals_only=True)
    return eigenvalues[::-1]


@_limit_blas_threads
def stability(model, grid, rho):
    r"""Return the growth rates of the PDE linearised about the stationary state ``rho``.

    On the grid the PDE reads ``d rho/dt = -K mu`` with the chemical potential
    ``mu = log(rho)/beta + W*rho`` (up to a constant) and the weighted Laplacian
    ``K = D^T diag(rho_edge) D / dx**2`` (``D`` the forward difference,
    ``rho_edge`` the density at cell edges). At a stationary state ``mu`` is
    constant, so the variation of ``rho_edge`` drops out and the linearisation
    is exactly ``dh/dt = -K H h`` with the Hessian of the free energy
    ``H = diag(1/(beta rho)) + C`` (``C`` the convolution matrix).

    ``K`` is symmetric positive semi-definite with kernel the constants, so its
    range is the mass-preserving perturbations ``sum(h) = 0``, and ``-K H`` is
    self-adjoint in the inner product ``<f, K^+ g>`` there. Its eigenvalues are
    real. They are the nonzero eigenvalues of the symmetric ``-S H S^T`` with
    ``K = S^T S``, which is the matrix diagonalised here, after removing the
    one direction that carries no perturbation. By Sylvester's law of inertia the
    number of positive rates equals the number of negative directions of the
    free energy's Hessian among mass-preserving perturbations, which is why
    their sign decides stability. The edge density (the geometric mean here)
    changes the rates but not their signs.

    Parameters
    ----------
    model : Model
    grid : Grid
    rho : array_like, shape (M,)
        A stationary density, > 0 in every cell (it is renormalised to mass 1).

    Returns
    -------
    ndarray, shape (M - 1,)
        The rates, real and sorted in descending order. A positive rate is an
        unstable direction; a cluster's translation gives a rate zero up to
        round-off.

    Raises
    ------
    ValueError
        If the grid does not match the model or ``rho`` is not a density
        that is > 0 everywhere.

    Notes
    -----
    The result is only meaningful at a stationary state. Cost: a dense
    symmetric eigenvalue problem of size ``M - 1``.
    """
    check_grid(model, grid)
    rho = grid.normalize(rho)
    if np.any(rho <= 0):
        raise ValueError(
            f"rho vanishes at {np.count_nonzero(rho <= 0)} cells: the stability operator needs rho > 0 in every cell"
        )
    kernel = grid.kernel(model.potential)
    return _rates_from_log(model, grid, np.log(rho), kernel)


def is_stable(model, grid, rho):
    """Return True if no growth rate of :func:`stability` exceeds ``NEUTRAL_RTOL`` times the spectral radius.

    Rates within that band count as neutral, which covers a cluster's
    translation. NOTE: a multi-cluster state loses mass between its clusters at
    rates exponentially small in the well depth. Such a slow instability
    falls inside the neutral band, so the state is reported as stable.
    """
    rates = stability(model, grid, rho)
    return bool(rates[0] <= NEUTRAL_RTOL * np.max(np.abs(rates)))


class _SymmetricSystem:
    """The fixed-point equation among densities even about ``L/2``, with gamma as an unknown.

    A vector even under the reflection of cell ``i`` to cell ``M-1-i`` is
    stored by its first ``M/2`` entries. The unknown is ``(psi_half, p)`` with
    ``gamma = p * gamma_scale``.
    """

    def __init__(self, model, grid, gamma_scale):
        self.model, self.grid = model, grid
        self.half = grid.M // 2
        self.gamma_scale = gamma_scale
        self.beta = model.beta
        unit = model.potential.with_gamma(1.0)
        self.unit_convolution = grid.convolution(unit)
        self.unit_kernel = self.unit_convolution.kernel
        self.unit_matrix = scipy.linalg.circulant(self.unit_kernel) * grid.dx

    def full(self, half_vector):
        return np.concatenate([half_vector, half_vector[::-1]])

    def evaluate(self, psi_half, p):
        """Return ``G`` on the first half, the density and ``dG/dp``."""
        psi = self.full(psi_half)
        rho, _ = _density(psi, self.grid.dx)
        potential = self.unit_convolution(rho)
        residual = psi - self.beta * p * self.gamma_scale * potential
        return residual[: self.half], rho, -self.beta * self.gamma_scale * potential[: self.half]

    def jacobian(self, rho, p):
        """Return ``dG/dpsi_half``, shape (M/2, M/2)."""
        n, dx = self.half, self.grid.dx
        gamma = p * self.gamma_scale
        # a half-vector enters the full one twice, at j and M-1-j, where rho is equal
        columns = (self.unit_matrix[:n, :n] + self.unit_matrix[:n, ::-1][:, :n]) * rho[None, :n]
        potential = self.unit_convolution(rho)[:n]
        coupling = np.outer(potential, 2.0 * rho[:n]) * dx
        return np.eye(n) + self.beta * gamma * (columns - coupling)

    def solve_at(self, psi_half, p, tol, max_iter):
        """Newton at fixed ``p``; return ``(psi_half, residual, iterations, converged)``."""
        for iteration in range(max_iter + 1):
            residual_vector, rho, _ = self.evaluate(psi_half, p)
            residual = relative_residual(psi_half, residual_vector)
            if residual <= tol:
                return psi_half, residual, iteration, True
            if iteration == max_iter:
                break
            psi_half = psi_half + np.linalg.solve(self.jacobian(rho, p), -residual_vector)
        return psi_half, residual, max_iter, False


def _centre_on_half(grid, rho):
    """Shift ``rho`` by whole cells so that its circular mean is nearest ``L/2``, then symmetrise."""
    mean_angle = np.angle(np.sum(rho * np.exp(2j * np.pi * grid.x / grid.L)))
    mean_position = (mean_angle / (2.0 * np.pi) * grid.L) % grid.L
    # the reflection of cell i to cell M-1-i fixes the cell edge at L/2
    shift = int(round((0.5 * grid.L - mean_position) / grid.dx)) if np.any(rho != rho[0]) else 0
    shifted = np.roll(rho, shift)
    return 0.5 * (shifted + shifted[::-1])


def _signed_order(grid, rho):
    """First cosine coefficient about ``L/2``: positive for a cluster at ``L/2``, negative for one at 0."""
    return float(-np.sum(rho * np.cos(2.0 * np.pi * grid.x / grid.L)) / np.sum(rho))


@_limit_blas_threads
def continuation(
    model,
    grid,
    rho_start,
    gamma_start,
    gamma_stop,
    *,
    step=None,
    max_step=0.05,
    min_step=1e-7,
    max_points=2000,
    min_order=1e-3,
    tol=1e-10,
    compute_stability=True,
):
    """Follow a branch of stationary states in gamma by pseudo-arclength continuation.

    The branch is traced among densities symmetric about ``L/2``: ``rho_start``
    is shifted by whole cells so that its circular mean sits at the cell edge
    ``L/2``, symmetrised, and corrected by Newton's method at ``gamma_start``.
    From there the branch is followed towards ``gamma_stop``, through folds:
    each step predicts along the tangent of the curve in ``(psi, gamma)`` and
    corrects with Newton's method on the fixed-point equation plus the
    arclength condition. Arclength is measured with ``psi`` scaled by its
    maximum at the start and ``gamma`` by ``gamma_start``. The step is halved
    when a correction fails and grown by ``STEP_GROWTH`` when it is fast.

    The continuation ends in one of four ways. Gamma leaves the closed
    interval between ``gamma_start`` and ``gamma_stop`` (that point is not
    kept). The order parameter falls below ``min_order`` or its signed
    version changes sign, which means the branch has reached the uniform
    state at a branch point. ``max_points`` points are stored. Or the step
    falls below ``min_step``.

    Parameters
    ----------
    model : Model
        Its gamma is ignored: gamma is the continuation parameter.
    grid : Grid
        Must match the model, with an even number of cells M.
    rho_start : array_like, shape (M,)
        A density near a stationary state at ``gamma_start``.
    gamma_start, gamma_stop : float
        Positive and distinct; the branch starts moving towards ``gamma_stop``.
    step, max_step, min_step : float
        Initial, maximum and minimum arclength steps, with
        ``0 < min_step <= step <= max_step``; ``step`` defaults to
        ``max_step / 4``.
    max_points : int
        Maximum number of points kept, >= 2.
    min_order : float
        Order parameter in (0, 1) below which the branch counts as uniform.
    tol : float
        Target for :func:`relative_residual` at every point, in (0, 1).
    compute_stability : bool
        Whether to compute the stability of every point (one dense
        eigenvalue problem of size M - 1 each).

    Returns
    -------
    Branch

    Raises
    ------
    ValueError
        On invalid input, or if Newton's method fails at ``gamma_start``.
    """
    started = time.perf_counter()
    check_grid(model, grid)
    if grid.M % 2:
        raise ValueError(f"grid.M = {grid.M} is invalid: continuation needs an even number of cells")
    rho_start = grid.normalize(validation.density("rho_start", rho_start, grid.M))
    gamma_start = validation.positive("gamma_start", gamma_start)
    gamma_stop = validation.positive("gamma_stop", gamma_stop)
    if gamma_stop == gamma_start:
        raise ValueError(f"gamma_stop = {gamma_stop!r} is invalid: it must differ from gamma_start")
    min_step = validation.positive("min_step", min_step)
    max_step = validation.positive("max_step", max_step)
    if step is None:
        step = 0.25 * max_step
    step = validation.in_interval("step", step, min_step, max_step, closed_low=True, closed_high=True)
    max_points = validation.integer_at_least("max_points", max_points, 2)
    min_order = validation.in_interval("min_order", min_order, 0.0, 1.0)
    tol = validation.in_interval("tol", tol, 0.0, 1.0)
    low, high = sorted((gamma_start, gamma_stop))

    # the first point: Newton at gamma_start from the centred, symmetrised guess
    system = _SymmetricSystem(model, grid, gamma_start)
    n = system.half
    rho_start = _centre_on_half(grid, rho_start)
    psi_half = (model.beta * gamma_start * system.unit_convolution(rho_start))[:n]
    psi_half, residual, iterations, converged = system.solve_at(psi_half, 1.0, tol, 50)
    if not converged:
        raise ValueError(
            f"rho_start is invalid: Newton's method at gamma_start = {gamma_start:g} reached residual "
            f"{residual:.2e} > tol = {tol:.1e}; start closer to a stationary state"
        )
    n_newton = iterations

    # arclength weights: psi scaled by its size at the start, gamma by gamma_start
    psi_scale = max(1.0, float(np.max(np.abs(psi_half))))
    weights = np.concatenate([np.full(n, 1.0 / (n * psi_scale**2)), [1.0]])

    def extended_jacobian(psi_h, p):
        residual_vector, rho, d_p = system.evaluate(psi_h, p)
        return residual_vector, rho, np.hstack([system.jacobian(rho, p), d_p[:, None]])

    def tangent(jacobian, previous):
        bordered = np.vstack([jacobian, (weights * previous)[None, :]])
        right = np.zeros(n + 1)
        right[-1] = 1.0
        direction = np.linalg.solve(bordered, right)
        return direction / math.sqrt(float(np.sum(weights * direction**2)))

    y = np.concatenate([psi_half, [1.0]])
    _, rho, jacobian = extended_jacobian(psi_half, 1.0)
    seed = np.zeros(n + 1)
    seed[-1] = math.copysign(1.0, gamma_stop - gamma_start)
    direction = tangent(jacobian, seed)
    if direction[-1] * seed[-1] < 0:
        direction = -direction

    points = [(y.copy(), rho, residual)]
    start_sign = math.copysign(1.0, _signed_order(grid, rho))
    n_rejected = 0
    status, message = "max_points", f"stopped after max_points = {max_points} points"
    while len(points) < max_points:
        # predictor along the tangent, corrector on [G = 0, arclength condition]
        predicted = y + step * direction
        trial = predicted.copy()
        accepted = False
        for iteration in range(1, CORRECTOR_MAX_ITER + 1):
            residual_vector, rho, jacobian = extended_jacobian(trial[:n], trial[n])
            residual = relative_residual(trial[:n], residual_vector)
            n_newton += 1
            if residual <= tol and iteration > 1:
                correction = math.sqrt(float(np.sum(weights * (trial - predicted) ** 2)))
                accepted = correction <= MAX_CORRECTION * step
                break
            arclength = float(np.sum(weights * direction * (trial - predicted)))
            bordered = np.vstack([jacobian, (weights * direction)[None, :]])
            try:
                update = np.linalg.solve(bordered, -np.concatenate([residual_vector, [arclength]]))
            except np.linalg.LinAlgError:
                break
            trial = trial + update
            if not np.all(np.isfinite(trial)) or trial[n] <= 0:
                break
        if not accepted:
            n_rejected += 1
            step *= 0.5
            if step < min_step:
                status = "failed"
                message = f"the arclength step fell below min_step = {min_step:g} at gamma = {y[n] * gamma_start:.6g}"
                break
            continue

        # stop conditions: outside the interval, or back at the uniform state
        gamma = trial[n] * gamma_start
        if not low <= gamma <= high:
            status, message = "interval", f"gamma left [{low:g}, {high:g}] after {len(points)} points"
            break
        new_direction = tangent(jacobian, direction)
        if new_direction @ (weights * direction) < 0:
            new_direction = -new_direction
        # a step that reaches the uniform state is retried with half the step
        # until the step is END_STEP_FRACTION of max_step, so that the last
        # points resolve the approach to the branch point
        signed = _signed_order(grid, rho)
        reached_uniform = abs(signed) < min_order or signed * start_sign < 0
        if reached_uniform and step > END_STEP_FRACTION * max_step:
            step *= 0.5
            continue
        y, direction = trial, new_direction
        points.append((y.copy(), rho, residual))
        if reached_uniform:
            status, message = "uniform", f"the branch reached the uniform state at gamma = {gamma:.6g}"
            break
        if iteration <= CORRECTOR_FAST_ITER:
            step = min(max_step, STEP_GROWTH * step)

    # the points, their free energies and stability
    gammas = np.array([point[0][n] * gamma_start for point in points])
    densities = np.array([point[1] for point in points])
    residuals = np.array([point[2] for point in points])
    energies = np.empty(len(points))
    max_rates = np.full(len(points), np.nan)
    stable = np.zeros(len(points), dtype=bool)
    for index, (gamma, rho) in enumerate(zip(gammas, densities)):
        at_gamma = model.with_gamma(float(gamma))
        convolution = grid.convolution(at_gamma.potential)
        energies[index] = free_energy(at_gamma, grid, rho, convolution).total
        if compute_stability:
            psi = at_gamma.beta * convolution(rho)
            _, log_rho = _density(psi, grid.dx)
            rates = _rates_from_log(at_gamma, grid, log_rho, convolution.kernel)
            max_rates[index] = rates[0]
            stable[index] = rates[0] <= NEUTRAL_RTOL * np.max(np.abs(rates))
    orders = order_parameter(grid, densities)
    wall_time = time.perf_counter() - started
    _logger.info("continuation: %d points, %s (%.1f s)", len(points), message, wall_time)
    return Branch(gammas, densities, energies, orders, stable, max_rates, residuals, status, message, n_newton, n_rejected, wall_time)


def _default_start(model, grid, gamma_start):
    """Return a single cluster at ``L/2`` whose width matches the curvature of W at 0."""
    h = 1e-6 * model.potential.range
    curvature = float(model.potential.with_gamma(gamma_start).derivative(h)) / h
    width = min(grid.L / 8.0, 1.0 / math.sqrt(model.beta * curvature))
    return cluster_guess(grid, [0.5 * grid.L], [1.0], width)


@_limit_blas_threads
def transition(model, grid, *, start_factor=1.5, stop_factor=0.05, rho_start=None, tol=1e-10, **options):
    """Trace the single-cluster branch and return its fold, gamma_c and branch point.

    The branch starts at ``gamma_start = start_factor * gamma_sharp`` from a
    single cluster at ``L/2`` (or ``rho_start``) and is continued towards
    ``stop_factor * gamma_sharp`` with :func:`continuation`, through the fold,
    until it reaches the uniform state. Along it, ``F - F(rho_inf)`` with
    ``F(rho_inf)`` from :func:`mvlib.uniform_free_energy`:

    - if it changes sign, ``gamma_c`` is its first zero from the start,
      refined with Brent's method, solving the fixed-point equation at each
      trial gamma (a discontinuous transition);
    - if it never changes sign and the branch ends on the uniform state,
      ``gamma_c`` is that branch point (a continuous transition).

    ``gamma_fold`` is the minimum of gamma as a function of the signed order
    parameter, between the neighbours of the branch point with the smallest
    gamma, found by Brent's minimisation with the fixed-point equation solved
    at fixed order parameter (gamma an unknown) at each trial. The branch
    point is extrapolated linearly in ``order**2`` from the last two points.

    Parameters
    ----------
    model, grid : Model, Grid
    start_factor : float
        ``gamma_start / gamma_sharp``, > ``stop_factor``.
    stop_factor : float
        ``gamma_stop / gamma_sharp``, > 0.
    rho_start : array_like, shape (M,), optional
        Start density near the cluster state at ``gamma_start``.
    tol : float
        Residual target of every point.
    **options
        Passed on to :func:`continuation`.

    Returns
    -------
    Transition

    Raises
    ------
    ValueError
        On invalid input, or if the branch has no zero of ``F - F(rho_inf)``
        and does not end on the uniform state.
    """
    check_grid(model, grid)
    stop_factor = validation.positive("stop_factor", stop_factor)
    start_factor = validation.positive("start_factor", start_factor)
    if start_factor <= stop_factor:
        raise ValueError(f"start_factor = {start_factor!r} is invalid: it must be > stop_factor = {stop_factor!r}")
    sharp = _gamma_sharp(model)
    gamma_start = start_factor * sharp
    if rho_start is None:
        rho_start = _default_start(model, grid, gamma_start)
    branch = continuation(model, grid, rho_start, gamma_start, stop_factor * sharp, tol=tol, **options)

    # the fold: the minimum of gamma over the signed order parameter, which
    # parametrises the branch smoothly through the fold
    index = int(np.argmin(branch.gamma))
    if 0 < index < branch.gamma.size - 1:
        gamma_fold = _refine_fold(model, grid, branch, index, tol)
    else:
        gamma_fold = math.nan

    # where the branch meets the uniform state: order**2 is linear in gamma there
    nonuniform = np.flatnonzero(branch.order >= branch.order[-1] + 1e-12)
    if branch.status == "uniform" and nonuniform.size >= 2:
        g0, g1 = branch.gamma[nonuniform[-2:]]
        r0, r1 = branch.order[nonuniform[-2:]] ** 2
        gamma_branch = float(g1 - r1 * (g1 - g0) / (r1 - r0)) if r1 != r0 else float(g1)
    else:
        gamma_branch = math.nan

    # gamma_c: the first sign change of F - F(rho_inf) from the start
    excess = np.array([energy - uniform_free_energy(model.with_gamma(float(g))) for g, energy in zip(branch.gamma, branch.free_energy)])
    signs = np.sign(excess)
    changes = np.flatnonzero(signs[:-1] * signs[1:] < 0)
    n_crossings = int(changes.size)
    if n_crossings:
        first = int(changes[0])
        gamma_c = _refine_crossing(model, grid, branch, first, tol)
        continuous = False
    elif branch.status == "uniform":
        gamma_c, continuous = gamma_branch, True
    else:
        raise ValueError(
            f"the branch from gamma_start = {gamma_start:g} neither crosses F(rho_inf) nor reaches the "
            f"uniform state ({branch.message}); widen stop_factor or raise max_points"
        )
    return Transition(gamma_fold, gamma_c, sharp, gamma_branch, n_crossings, continuous, branch)


def _solve_at_order(system, grid, psi_half, p, target, tol, max_iter=50):
    """Newton on [G = 0, signed order = target] for ``(psi_half, p)``; return them and whether it converged."""
    n, dx = system.half, grid.dx
    cosine = -np.cos(2.0 * np.pi * grid.x[:n] / grid.L)
    for _ in range(max_iter):
        residual_vector, rho, d_p = system.evaluate(psi_half, p)
        order_error = float(2.0 * dx * np.sum(rho[:n] * cosine)) - target
        if relative_residual(psi_half, residual_vector) <= tol and abs(order_error) <= tol:
            return psi_half, p, True
        # d(order)/d(psi_half): rho depends on psi through exp(-psi)/Z, and each half entry appears twice
        weighted = rho[:n] * cosine
        d_order = -2.0 * dx * (weighted - rho[:n] * 2.0 * dx * np.sum(weighted))
        jacobian = np.zeros((n + 1, n + 1))
        jacobian[:n, :n] = system.jacobian(rho, p)
        jacobian[:n, n] = d_p
        jacobian[n, :n] = d_order
        update = np.linalg.solve(jacobian, -np.concatenate([residual_vector, [order_error]]))
        psi_half, p = psi_half + update[:n], p + update[n]
    return psi_half, p, False


def _refine_fold(model, grid, branch, index, tol):
    """Return the minimum of gamma along the branch near its point ``index`` (which has the smallest gamma)."""
    system = _SymmetricSystem(model, grid, float(branch.gamma[index]))
    n = system.half
    signed = np.array([_signed_order(grid, rho) for rho in branch.rho[index - 1 : index + 2]])
    psis = [(model.beta * g * system.unit_convolution(rho))[:n] for g, rho in zip(branch.gamma[index - 1 : index + 2], branch.rho[index - 1 : index + 2])]
    ps = branch.gamma[index - 1 : index + 2] / branch.gamma[index]

    def gamma_at(order):
        # start from the stored point nearest in order parameter
        nearest = int(np.argmin(np.abs(signed - order)))
        psi_half, p, converged = _solve_at_order(system, grid, psis[nearest], ps[nearest], order, tol)
        if not converged:
            raise RuntimeError(f"Newton's method failed at order parameter {order:.6g} while refining gamma_fold")
        return p * branch.gamma[index]

    low, high = sorted((signed[0], signed[2]))
    found = scipy.optimize.minimize_scalar(gamma_at, bounds=(low, high), method="bounded", options={"xatol": 1e-10})
    return float(min(found.fun, branch.gamma[index]))


def _refine_crossing(model, grid, branch, first, tol):
    """Return the zero of ``F - F(rho_inf)`` between points ``first`` and ``first + 1`` of the branch."""
    g0, g1 = branch.gamma[first : first + 2]
    system = _SymmetricSystem(model, grid, float(g0))
    n = system.half
    psi0 = (model.beta * g0 * system.unit_convolution(branch.rho[first]))[:n]
    psi1 = (model.beta * g1 * system.unit_convolution(branch.rho[first + 1]))[:n]

    def excess(gamma):
        weight = (gamma - g0) / (g1 - g0)
        guess = (1.0 - weight) * psi0 + weight * psi1
        psi_half, residual, _, converged = system.solve_at(guess, gamma / g0, tol, 50)
        if not converged:
            raise RuntimeError(f"Newton's method failed at gamma = {gamma:.6g} (residual {residual:.2e}) while refining gamma_c")
        rho, _ = _density(system.full(psi_half), grid.dx)
        at_gamma = model.with_gamma(float(gamma))
        return free_energy(at_gamma, grid, rho).total - uniform_free_energy(at_gamma)

    return float(scipy.optimize.brentq(excess, min(g0, g1), max(g0, g1), xtol=1e-12 * g0, rtol=1e-13))


def gamma_c(model, grid, **options):
    """Return the gamma at which the single-cluster branch's free energy equals the uniform one.

    See :func:`transition`, which this calls, for the method and ``options``.
    """
    return transition(model, grid, **options).gamma_c


def gamma_fold(model, grid, **options):
    """Return the smallest gamma on the single-cluster branch (nan without a fold), see :func:`transition`."""
    return transition(model, grid, **options).gamma_fold
