r"""Implicit, well-balanced time integration of the mean-field (McKean-Vlasov) PDE.

.. math::
    \partial_t \rho = \beta^{-1}\partial_x^2\rho + \partial_x(\rho\,\partial_x\Phi),
    \qquad \Phi = W * \rho ,

on the torus ``[0, L)``, discretised by finite volumes on the cells of a
:class:`mvlib.Grid`.

Space
-----
With ``D = 1/beta``, ``Phi = grid.convolution(potential)(rho)`` and
``z_i = beta*(Phi[i+1] - Phi[i])`` the flux through the face between cells
``i`` and ``i+1`` is the Scharfetter-Gummel (exponentially fitted) flux

.. math:: J_{i+1/2} = \frac{D}{dx}\bigl(B(z_i)\,\rho_i - B(-z_i)\,\rho_{i+1}\bigr),
          \qquad B(z) = \frac{z}{e^z - 1},

and ``d rho_i/dt = -(J_{i+1/2} - J_{i-1/2})/dx``. Because ``B(-z) = e^z B(z)``,
the flux vanishes exactly when ``rho_{i+1}/rho_i = exp(-z_i)``: for a frozen
``Phi`` the discrete Gibbs state ``exp(-beta*Phi)`` is a steady state, to
round-off, at any cell Peclet number ``|z|``. Writing the flux as
``(D/dx) B(z_i) exp(-beta Phi_i) (u_i - u_{i+1})`` with ``u = rho exp(beta Phi)``
shows that the semi-discrete free energy
``F = D sum rho log rho dx + 1/2 sum rho Phi dx`` never increases.

Time
----
The time stepping is variable-step BDF2,

.. math:: \rho^{n+1} - a\,\rho^n + b\,\rho^{n-1} = h_\mathrm{imp}\, f(\rho^{n+1}),
          \qquad a - b = 1,

with the potential ``Phi = W * rho^{n+1}`` implicit as well; ``a``, ``b`` and
``h_imp`` depend on the ratio of the step to the previous one (see
:func:`_bdf2_step`). For a given potential the step matrix
``A = I - h_imp L(Phi)`` is a column-diagonally-dominant M-matrix with column
sums exactly 1, so ``A^{-1}`` maps positive vectors to positive vectors and
keeps the mass. No linear multistep method of order two or more is positive for
every step size (Bolley and Crouzeix), and BDF2 is no exception: its right-hand
side ``a rho^n - b rho^{n-1}`` turns negative where the density fell by more than
the factor ``a/b`` (4 for equal steps) in one step. Such a step is taken by
backward Euler instead, ``A rho^{n+1} = rho^n``, whose right-hand side is always
positive. Every accepted density is therefore positive for every step size, and
the mass is kept to round-off. The first two steps are backward Euler as well,
since BDF2 needs two earlier nodes and a third for its error estimate.

Second order matters most while clusters form, where the density grows at rates
of order 1000: on the perturbed uniform state at gamma = 800 of
``benchmarks/pde.py`` (M = 512, rtol = 1e-5) backward Euler alone took 1675
steps until the first cluster emptied and BDF2 354, and their emptying times
differ by 0.3%.

The local error of a BDF2 step is estimated from the difference between its
result and the quadratic extrapolation of the last three nodes, and that of a
backward-Euler step as half the difference to an explicit Euler step. Either
estimate is filtered through ``A^{-1}``, so that stiff components which the
implicit step damps do not inflate it (the filter of Hairer and Wanner's stiff
codes). A step is accepted when the root-mean-square of the estimate, scaled by
``rtol*rho + atol``, is at most 1; the next step size follows the usual
``err**(-1/(p+1))`` rule for order p.

A step is also rejected, and retried with half the step, when the discrete free
energy would increase by more than round-off. Neither scheme is guaranteed to
dissipate the free energy for every step size with an attractive interaction,
whose energy is concave along some directions. This check is
what enforces monotonicity. ``PDEResult.n_rejected`` counts these rejections
together with the error-test ones.

The nonlinear step
------------------
The implicit system ``R(rho) = A(W * rho) rho - r = 0``, with ``r`` the
right-hand side of the step, is solved by
Newton's method. The Jacobian is ``A + N``: ``A`` is the periodic tridiagonal
matrix of the flux for the current potential and ``N`` the non-local part, the
derivative of the flux with respect to ``Phi`` applied through the FFT
convolution. Each Newton correction solves ``(I + A^{-1} N) delta = rho - P(rho)``
with GMRES, where ``P(rho) = A(W*rho)^{-1} r`` is the step with the potential
frozen; ``A^{-1}`` is the preconditioner. The iteration stops when ``rho - P(rho)``
is small and returns ``P(rho)``, which is exactly positive: the periodic
tridiagonal M-matrix is factorised without any subtraction (the pivots are
formed from the column sums, as in the Grassmann-Taksar-Heyman algorithm), so
every entry of the result is a sum of positive terms. Only the potential
vector, the face coefficients, the last ``HISTORY_NODES`` accepted densities
and GMRES's Krylov basis (at most ``GMRES_RESTART`` vectors) are stored:
memory is O(M) besides the snapshots.

Newton starts from the linear extrapolation of the last two accepted
densities, not from BDF2's quadratic predictor. At large steps the fixed-point
residual ``rho - P(rho)`` is ``A^{-1}`` times the residual of the step, so it
is nearly insensitive to errors along slow or neutral directions, such as the translation
of a cluster, and Newton leaves the guess there nearly as it was. A guess that
extrapolates quadratically then lets a round-off drift grow like t**2: a single
cluster at 1.5 gamma_sharp (M = 200, rtol = 1e-7) moved 3.6e-7 by t = 1e4 from
the quadratic guess, and 7e-12 from the linear one.

If Newton does not converge, the step is retried with a quarter of the step
size; below ``MIN_STEP_FRACTION * t_final`` the run ends with status
``"failed"`` and a message naming the cause.
"""

import dataclasses
import logging
import math
import sys
import time
import typing

import numpy as np
from scipy.special import xlogy

from . import clusters, validation
from ._jit import jit
from .energy import check_grid

_logger = logging.getLogger(__name__)

# B(z) = z/(e^z - 1) is summed from its Taylor series below this |z|: there the
# closed form loses about eps/|z| of relative accuracy to cancellation, and the
# series truncated after z**4 is exact to double precision (next term z**6/30240).
BERNOULLI_SERIES_BELOW = 1e-2

# The accepted range of the relative tolerance: below 1e-12 round-off in the
# flux differences is comparable to the error being controlled, above 0.1 the
# error estimate no longer describes the solution.
RTOL_RANGE = (1e-12, 0.1)

# Absolute tolerance floor, as a fraction of rtol/L: errors in cells whose
# density is below the uniform one are controlled absolutely, at rtol/L. The
# exponentially small densities between clusters are slaved to the clusters, so
# demanding relative accuracy there only shortens the steps: on two
# Hegselmann-Krause clusters (gamma = 500, ell = 0.1, M = 512, rtol = 1e-5) a
# floor 1000 times lower took 3.8 times more steps and moved the time at which
# the lighter cluster empties by 0.3%, less than the time error itself.
ATOL_FRACTION = 1.0

# Step-size control: safety factor and the limits of the change per step. The
# growth limit keeps the ratio of successive BDF2 steps below 1 + sqrt(2), where
# variable-step BDF2 stays zero-stable.
SAFETY = 0.85
MAX_GROWTH = 2.0
MIN_SHRINK = 0.1

# A BDF2 step may be at most this many times longer than the interval to the
# node before the current one. A shorter interval, such as one left by a step
# shortened to land on an output time, is merged with the interval before it.
MAX_STEP_RATIO = 2.0

# Accepted nodes kept for BDF2. It uses three, two in the formula and a third
# for its predictor, and a fourth lets a short interval be merged without a
# fall-back to backward Euler.
HISTORY_NODES = 4

# Newton stops when the RMS of rho - P(rho), in units of the error scale
# rtol*rho + atol, is below this: the algebraic error stays 1000 times below
# the local time error that is being controlled.
NEWTON_TOL = 1e-3
NEWTON_MAX_ITER = 10

# GMRES solves each Newton correction to this relative residual. Its Krylov
# basis has at most GMRES_RESTART vectors, and it restarts at most
# GMRES_MAX_RESTARTS times.
GMRES_RTOL = 1e-4
GMRES_RESTART = 60
GMRES_MAX_RESTARTS = 5

# A step is rejected when its free energy exceeds the previous one by more than
# this multiple of the sum of the absolute values of the free energy's terms.
# Summing M terms in double precision leaves a relative round-off of a few
# 1e-16 * sqrt(M), far below this.
FREE_ENERGY_ROUNDOFF = 1e-12

# Smallest step, relative to t_final, before a run is declared failed.
MIN_STEP_FRACTION = 1e-14

# Default density level (times 1/L) above which cells belong to a cluster in
# mass_below; see there.
DEFAULT_CLUSTER_THRESHOLD = 1e-2

# An arc above the detection level counts as a cluster in mass_below only if
# its peak exceeds PEAK_FACTOR times that level.
PEAK_FACTOR = 10.0

STATUSES = ("finished", "stopped", "failed")


# ---------------------------------------------------------------- kernels ----


@jit
def bernoulli(z):
    """Return B(z) = z/(e^z - 1), accurate and overflow-free for every real z."""
    if abs(z) < BERNOULLI_SERIES_BELOW:
        z2 = z * z
        return 1.0 - 0.5 * z + z2 / 12.0 - z2 * z2 / 720.0
    if z > 0.0:
        # z e^{-z} / (1 - e^{-z}): e^{-z} underflows harmlessly for large z
        return z * math.exp(-z) / -math.expm1(-z)
    return z / math.expm1(z)


@jit
def bernoulli_derivative(z):
    """Return B'(z), using B'(z) = (B(z)/z) (1 - B(-z)) away from 0."""
    if abs(z) < BERNOULLI_SERIES_BELOW:
        z2 = z * z
        return -0.5 + z / 6.0 - z * z2 / 180.0
    return bernoulli(z) / z * (1.0 - bernoulli(-z))


@jit
def _face_coefficients(phi, beta, scale, forward, backward):
    """Fill forward[i] = scale*B(z_i), backward[i] = scale*B(-z_i), z_i = beta*(phi[i+1]-phi[i])."""
    size = phi.size
    for i in range(size):
        z = beta * (phi[(i + 1) % size] - phi[i])
        forward[i] = scale * bernoulli(z)
        backward[i] = scale * bernoulli(-z)


@jit
def _flux_sensitivity(phi, beta, scale, rho, out):
    """Fill out[i] = d(face flux i)/d(phi[i+1] - phi[i]) for the flux scale*(B(z) rho_i - B(-z) rho_{i+1})."""
    size = phi.size
    for i in range(size):
        j = (i + 1) % size
        z = beta * (phi[j] - phi[i])
        out[i] = scale * beta * (bernoulli_derivative(z) * rho[i] + bernoulli_derivative(-z) * rho[j])


@jit
def _flux_divergence(forward, backward, rho, out):
    """Fill out[i] = F_i - F_{i-1} with the face flux F_i = forward[i] rho_i - backward[i] rho_{i+1}."""
    size = rho.size
    last = forward[size - 1] * rho[size - 1] - backward[size - 1] * rho[0]
    previous = last
    for i in range(size - 1):
        flux = forward[i] * rho[i] - backward[i] * rho[i + 1]
        out[i] = flux - previous
        previous = flux
    out[size - 1] = last - previous


@jit
def _nonlocal_apply(sensitivity, psi, out):
    """Fill out[i] = w_i - w_{i-1} with w_i = sensitivity[i] (psi[i+1] - psi[i])."""
    size = psi.size
    last = sensitivity[size - 1] * (psi[0] - psi[size - 1])
    previous = last
    for i in range(size - 1):
        w = sensitivity[i] * (psi[i + 1] - psi[i])
        out[i] = w - previous
        previous = w
    out[size - 1] = last - previous


@jit
def _solve_step_matrix(forward, backward, rhs, out, pivot, border_column, border_row):
    """Solve A x = rhs for the backward-Euler step matrix A = I + (flux divergence).

    Row i of A is ``x_i (1 + forward[i] + backward[i-1]) - backward[i] x_{i+1}
    - forward[i-1] x_{i-1}`` (indices mod M): a periodic tridiagonal M-matrix
    whose columns all sum to 1. Gaussian elimination without pivoting keeps the
    last row and column as a border. Every pivot is formed as its column's
    running sum plus the magnitudes of the column's remaining off-diagonal
    entries (Grassmann-Taksar-Heyman), so no step subtracts. For a positive
    rhs every entry of x is therefore positive and accurate to a few ulps. pivot, border_column and border_row are work arrays of length M.
    """
    n = rhs.size
    last = n - 1

    # magnitudes of the off-diagonal entries: A[i, i+1] = -up(i), A[i+1, i] = -down(i)
    for i in range(n):
        out[i] = rhs[i]
        border_column[i] = 0.0
        border_row[i] = 0.0
    border_column[0] = forward[last]  # A[0, M-1]
    border_column[last - 1] = backward[last - 1]  # A[M-2, M-1]
    border_row[0] = backward[last]  # A[M-1, 0]
    border_row[last - 1] = forward[last - 1]  # A[M-1, M-2]

    # column sums of the remaining Schur complement; 1 for every column of A
    margin_next = 1.0
    margin_last = 1.0
    for k in range(last):
        margin = margin_next
        margin_next = 1.0
        if k < last - 1:
            down = forward[k]  # |A[k+1, k]|
            up = backward[k]  # |A[k, k+1]|
            pivot[k] = margin + down + border_row[k]
            factor_row = down / pivot[k]
            factor_last = border_row[k] / pivot[k]
            out[k + 1] += factor_row * out[k]
            border_column[k + 1] += factor_row * border_column[k]
            border_row[k + 1] += factor_last * up
            out[last] += factor_last * out[k]
            margin_next = 1.0 + margin * up / pivot[k]
            margin_last += margin * border_column[k] / pivot[k]
        else:
            pivot[k] = margin + border_row[k]
            factor_last = border_row[k] / pivot[k]
            out[last] += factor_last * out[k]
            margin_last += margin * border_column[k] / pivot[k]
    pivot[last] = margin_last

    # back substitution; every term is added
    out[last] = out[last] / pivot[last]
    out[last - 1] = (out[last - 1] + border_column[last - 1] * out[last]) / pivot[last - 1]
    for k in range(last - 2, -1, -1):
        out[k] = (out[k] + backward[k] * out[k + 1] + border_column[k] * out[last]) / pivot[k]


def _gmres(matvec, rhs, rtol, atol, restart, max_restarts):
    """Solve ``matvec(x) = rhs`` by restarted GMRES from x = 0.

    Arnoldi with modified Gram-Schmidt and Givens rotations. The basis has at
    most ``restart + 1`` vectors of length M. This lean version replaces
    scipy's gmres because each Newton correction here needs only a few
    iterations, and the fixed cost of scipy's call dominated the step.

    Returns
    -------
    x : ndarray, shape (M,)
    iterations : int
        Matrix-vector products in the Arnoldi loops.
    converged : bool
        Whether ``|rhs - matvec(x)| <= max(rtol*|rhs|, atol)`` by the
        recurrence's residual estimate.
    """
    size = rhs.size
    x = np.zeros(size)
    target = max(rtol * float(np.linalg.norm(rhs)), atol)
    residual = rhs.copy()
    iterations = 0
    basis = np.empty((restart + 1, size))
    hessenberg = np.zeros((restart + 1, restart))
    for _ in range(max_restarts):
        residual_norm = float(np.linalg.norm(residual))
        if residual_norm <= target:
            return x, iterations, True
        basis[0] = residual / residual_norm
        hessenberg[:] = 0.0
        cosines, sines = np.zeros(restart), np.zeros(restart)
        projected = np.zeros(restart + 1)
        projected[0] = residual_norm
        size_used = restart
        for j in range(restart):
            vector = matvec(basis[j])
            iterations += 1
            for i in range(j + 1):
                hessenberg[i, j] = basis[i] @ vector
                vector -= hessenberg[i, j] * basis[i]
            hessenberg[j + 1, j] = float(np.linalg.norm(vector))
            if hessenberg[j + 1, j] > 0.0:
                basis[j + 1] = vector / hessenberg[j + 1, j]

            # rotate the new column into upper-triangular form
            for i in range(j):
                upper = cosines[i] * hessenberg[i, j] + sines[i] * hessenberg[i + 1, j]
                hessenberg[i + 1, j] = -sines[i] * hessenberg[i, j] + cosines[i] * hessenberg[i + 1, j]
                hessenberg[i, j] = upper
            length = math.hypot(hessenberg[j, j], hessenberg[j + 1, j])
            if length == 0.0:
                size_used = j
                break
            cosines[j], sines[j] = hessenberg[j, j] / length, hessenberg[j + 1, j] / length
            hessenberg[j, j], hessenberg[j + 1, j] = length, 0.0
            projected[j + 1] = -sines[j] * projected[j]
            projected[j] = cosines[j] * projected[j]
            if abs(projected[j + 1]) <= target:
                size_used = j + 1
                break

        # back substitution in the triangular system, then the update
        coefficients = np.zeros(size_used)
        for i in range(size_used - 1, -1, -1):
            coefficients[i] = (projected[i] - hessenberg[i, i + 1 : size_used] @ coefficients[i + 1 :]) / hessenberg[i, i]
        x += coefficients @ basis[:size_used]
        if abs(projected[size_used]) <= target:
            return x, iterations, True
        residual = rhs - matvec(x)
    return x, iterations, float(np.linalg.norm(residual)) <= target


# ------------------------------------------------------------ the result ----


@dataclasses.dataclass
class PDEResult:
    """Outcome of :func:`solve`.

    Attributes
    ----------
    t : ndarray, shape (n_out,)
        Output times reached; the last one is ``t_stop`` when a stop condition fired.
    rho : ndarray, shape (n_out, M)
        Densities at ``t``.
    trace_t, trace_free_energy : ndarray, shape (n_steps + 1,)
        Time and discrete free energy at the start and after every accepted step.
    trace_roundoff : ndarray, shape (n_steps + 1,)
        The sum of the absolute values of the free energy's terms at the same
        times: the scale of its round-off. A step is accepted only if F rises by
        at most ``FREE_ENERGY_ROUNDOFF`` times this value at the new step.
    status : str
        ``"finished"`` (reached t_final), ``"stopped"`` (the stop condition fired)
        or ``"failed"`` (see ``message``).
    message : str
        What ended the run.
    n_steps, n_rejected : int
        Accepted steps and rejected attempts (error test, free-energy test or
        a Newton failure).
    n_newton, n_krylov : int
        Newton iterations and GMRES inner iterations over the whole run.
    n_second_order : int
        Accepted steps taken by BDF2; the others were backward Euler.
    wall_time : float
        Seconds spent in :func:`solve`.
    t_stop : float or None
        Time at which the stop condition fired, else None.
    """

    t: np.ndarray
    rho: np.ndarray
    trace_t: np.ndarray
    trace_free_energy: np.ndarray
    trace_roundoff: np.ndarray
    status: str
    message: str
    n_steps: int
    n_rejected: int
    n_newton: int
    n_krylov: int
    n_second_order: int
    wall_time: float
    t_stop: float = None

    @property
    def success(self):
        """True unless the run failed."""
        return self.status != "failed"


# ---------------------------------------------------------- the stepper ----


class _Stepper:
    """Work arrays and the backward-Euler step for one model and grid."""

    def __init__(self, model, grid, rtol):
        self.grid = grid
        self.M = grid.M
        self.beta = model.beta
        self.diffusion = 1.0 / model.beta
        self.convolution = grid.convolution(model.potential)
        self.rtol = rtol
        self.atol = rtol * ATOL_FRACTION / grid.L
        self.forward = np.empty(self.M)
        self.backward = np.empty(self.M)
        self.sensitivity = np.empty(self.M)
        self.scratch = np.empty(self.M)
        self.pivot = np.empty(self.M)
        self.border_column = np.empty(self.M)
        self.border_row = np.empty(self.M)
        self.n_newton = 0
        self.n_krylov = 0

    def face_scale(self, h):
        """h*D/dx**2, the factor of B in the step matrix."""
        return h * self.diffusion / self.grid.dx**2

    def solve_matrix(self, rhs):
        """Return A^{-1} rhs for the current face coefficients."""
        out = np.empty(self.M)
        _solve_step_matrix(self.forward, self.backward, rhs, out, self.pivot, self.border_column, self.border_row)
        return out

    def increment(self, rho, h):
        """Return h f(rho), the explicit Euler increment."""
        _face_coefficients(self.convolution(rho), self.beta, self.face_scale(h), self.forward, self.backward)
        out = np.empty(self.M)
        _flux_divergence(self.forward, self.backward, rho, out)
        return -out

    def free_energy(self, rho):
        """Return (F, round-off scale of F) for a positive density."""
        entropy_terms = xlogy(rho, rho) * (self.diffusion * self.grid.dx)
        interaction_terms = 0.5 * rho * self.convolution(rho) * self.grid.dx
        total = float(np.sum(entropy_terms) + np.sum(interaction_terms))
        scale = float(np.sum(np.abs(entropy_terms)) + np.sum(np.abs(interaction_terms)))
        return total, scale

    def weighted_rms(self, values, weights):
        return float(np.sqrt(np.mean((values / weights) ** 2)))

    def solve_implicit(self, rhs, guess, h, weights):
        """Solve ``A(W * rho) rho = rhs`` with ``A = I - h L``, for a positive rhs of mass 1.

        Newton's method from ``guess``; ``weights`` scale the residual. Returns
        ``(rho, None)`` on success, with the face coefficients of ``h`` and the
        final potential left in place for the error estimate, or
        ``(None, reason)`` when Newton's method did not converge.
        """
        scale = self.face_scale(h)
        rho = guess.copy()
        previous_norm = math.inf
        for _ in range(NEWTON_MAX_ITER):
            self.n_newton += 1

            # the step with the potential of the current iterate frozen
            phi = self.convolution(rho)
            _face_coefficients(phi, self.beta, scale, self.forward, self.backward)
            frozen = self.solve_matrix(rhs)
            residual = rho - frozen
            norm = self.weighted_rms(residual, weights)
            if not math.isfinite(norm):
                return None, "the Newton residual is not finite"
            if norm <= NEWTON_TOL:
                return frozen, None
            if norm > 2.0 * previous_norm:
                return None, f"Newton diverged (scaled residual {previous_norm:.3g} -> {norm:.3g})"
            previous_norm = norm

            # Newton correction (I + A^{-1} N) delta = rho - P(rho), in the
            # variables delta / weights so that GMRES measures the scaled error
            _flux_sensitivity(phi, self.beta, scale, rho, self.sensitivity)
            scaled, iterations, _ = _gmres(
                self._make_matvec(weights),
                residual / weights,
                GMRES_RTOL,
                0.1 * NEWTON_TOL * math.sqrt(self.M),
                GMRES_RESTART,
                GMRES_MAX_RESTARTS,
            )
            self.n_krylov += iterations
            if not np.all(np.isfinite(scaled)):
                return None, "GMRES returned a non-finite Newton correction"
            rho = rho - scaled * weights
        return None, f"Newton did not converge in {NEWTON_MAX_ITER} iterations (scaled residual {previous_norm:.3g})"

    def _make_matvec(self, weights):
        sensitivity = self.sensitivity
        scratch = self.scratch

        def matvec(scaled):
            vector = np.ravel(scaled) * weights
            _nonlocal_apply(sensitivity, self.convolution(vector), scratch)
            return (vector + self.solve_matrix(scratch)) / weights

        return matvec

    def euler_error(self, rho_old, rho_new, h, weights):
        """Scaled RMS of backward Euler's local-error estimate A^{-1}(rho_new - rho_old - h f(rho_old))/2.

        Call right after :meth:`solve_implicit` with the same ``h``: A is its last step matrix.
        """
        forward, backward = self.forward.copy(), self.backward.copy()
        explicit = rho_old + self.increment(rho_old, h)
        self.forward[:], self.backward[:] = forward, backward
        return self.filtered_error(0.5 * (rho_new - explicit), rho_new, weights)

    def filtered_error(self, estimate, rho_new, weights):
        """Scaled RMS of A^{-1} estimate, with A the last step matrix (Hairer and Wanner's filter)."""
        weights = np.maximum(weights, self.rtol * np.abs(rho_new) + self.atol)
        return self.weighted_rms(self.solve_matrix(estimate), weights)


# ------------------------------------------------------------ the driver ----


class _BDF2Step(typing.NamedTuple):
    """The variable-step BDF2 step ``rho_new - a rho_n + b rho_{n-1} = h_implicit f(rho_new)``."""

    a: float
    b: float
    h_implicit: float
    error_factor: float
    predictor: np.ndarray


def _linear_guess(history, h):
    """Return the linear extrapolation of the last two nodes of ``history`` to a step ``h`` ahead."""
    t, rho = history[-1]
    if len(history) == 1:
        return rho
    t_last, rho_last = history[-2]
    return rho + (h / (t - t_last)) * (rho - rho_last)


def _bdf2_step(history, h):
    """Return the BDF2 step of size ``h`` from the last nodes of ``history``, or None.

    Intervals between the last two nodes shorter than ``h / MAX_STEP_RATIO``
    are merged first (the node between them is dropped from ``history``).
    None means that fewer than three nodes are left.

    With ``omega = h / (t_n - t_{n-1})`` the coefficients are
    ``a = (1 + omega)**2 / (1 + 2 omega)``, ``b = omega**2 / (1 + 2 omega)`` and
    ``h_implicit = h (1 + omega) / (1 + 2 omega)``; ``a - b = 1`` keeps the mass.
    The local error is ``-C y'''/6`` with ``C = a h**3 - b (t_new - t_{n-1})**3``,
    and the quadratic through the last three nodes misses ``y(t_new)`` by
    ``S y'''/6``, with ``S`` the product of the distances from ``t_new`` to the
    three nodes. So the error is ``-C/(S - C)`` times the difference between
    the BDF2 result and that predictor (2/11 of it for constant steps).
    """
    while len(history) >= 3 and h > MAX_STEP_RATIO * (history[-1][0] - history[-2][0]):
        del history[-2]
    if len(history) < 3:
        return None
    (t0, rho0), (t1, rho1), (t2, rho2) = history[-3:]
    t_new = t2 + h
    omega = h / (t2 - t1)
    a = (1.0 + omega) ** 2 / (1.0 + 2.0 * omega)
    b = omega**2 / (1.0 + 2.0 * omega)
    c = a * h**3 - b * (t_new - t1) ** 3
    s = (t_new - t0) * (t_new - t1) * (t_new - t2)
    # Lagrange extrapolation to t_new
    l0 = (t_new - t1) * (t_new - t2) / ((t0 - t1) * (t0 - t2))
    l1 = (t_new - t0) * (t_new - t2) / ((t1 - t0) * (t1 - t2))
    l2 = (t_new - t0) * (t_new - t1) / ((t2 - t0) * (t2 - t1))
    predictor = l0 * rho0 + l1 * rho1 + l2 * rho2
    return _BDF2Step(a, b, h * (1.0 + omega) / (1.0 + 2.0 * omega), -c / (s - c), predictor)


def time_derivative(model, grid, rho, phi=None):
    """Return the semi-discrete time derivative ``d rho/dt`` of the scheme.

    Parameters
    ----------
    model : Model
    grid : Grid
    rho : array_like, shape (M,)
        Cell averages, finite and >= 0 (not renormalised).
    phi : array_like, shape (M,), optional
        A frozen potential at the cell centres. Default: ``W * rho``, which
        gives the right-hand side of the PDE.

    Returns
    -------
    ndarray, shape (M,)
        ``-(J_{i+1/2} - J_{i-1/2})/dx`` with the Scharfetter-Gummel fluxes.
    """
    check_grid(model, grid)
    rho = validation.density("rho", rho, grid.M)
    if phi is None:
        phi = grid.convolution(model.potential)(rho)
    phi = np.asarray(phi, dtype=float)
    if phi.shape != (grid.M,) or not np.all(np.isfinite(phi)):
        raise ValueError(f"phi has shape {phi.shape} or non-finite values: expected {grid.M} finite potential values")
    forward, backward, divergence = np.empty(grid.M), np.empty(grid.M), np.empty(grid.M)
    _face_coefficients(phi, model.beta, 1.0 / (model.beta * grid.dx**2), forward, backward)
    _flux_divergence(forward, backward, rho, divergence)
    return -divergence



def _validate_times(t_final, t_eval):
    t_final = validation.positive("t_final", t_final)
    if t_eval is None:
        return t_final, np.array([t_final])
    t_eval = np.atleast_1d(np.asarray(t_eval, dtype=float))
    if t_eval.ndim != 1 or t_eval.size == 0:
        raise ValueError(f"t_eval has shape {t_eval.shape}: expected a non-empty 1-D array of output times")
    if not np.all(np.isfinite(t_eval)):
        raise ValueError("t_eval contains non-finite times: expected finite output times in (0, t_final]")
    if t_eval[0] <= 0.0:
        raise ValueError(f"t_eval[0] = {t_eval[0]!r} is invalid: output times must lie after the start t = 0")
    if np.any(np.diff(t_eval) <= 0.0):
        raise ValueError("t_eval is invalid: output times must be strictly increasing")
    if t_eval[-1] > t_final:
        raise ValueError(f"t_eval[-1] = {t_eval[-1]!r} is invalid: output times must be <= t_final = {t_final!r}")
    return t_final, t_eval


def _progress_bar(progress, t_final):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=t_final, unit="t", desc="mvlib.pde", leave=False)


def solve(model, grid, rho0, t_final, *, t_eval=None, rtol=1e-6, stop=None, progress=None, max_steps=None, dt_initial=None):
    """Integrate the mean-field PDE from ``rho0`` at t = 0 to ``t_final``.

    Parameters
    ----------
    model : Model
    grid : Grid
        Its length must equal ``model.L``; it must resolve the potential's range.
    rho0 : array_like, shape (M,)
        Initial cell averages, finite, >= 0, with positive mass; renormalised to mass 1.
    t_final : float
        End time, > 0.
    t_eval : array_like, shape (n_out,), optional
        Strictly increasing output times in (0, t_final]; the steps land on them
        exactly. Default: only ``t_final``.
    rtol : float
        Relative tolerance of the local time error, in [1e-12, 0.1]; cells with
        density below ``1/L`` are controlled absolutely, at ``rtol/L``.
    stop : callable, optional
        ``stop(t, rho) -> bool``, called after every accepted step; the run ends
        at the first step where it returns True, with status ``"stopped"``.
    progress : bool, optional
        Show a tqdm progress bar. Default: only when stderr is a terminal.
    max_steps : int, optional
        Upper bound on accepted steps; reaching it ends the run as ``"failed"``.
    dt_initial : float, optional
        First step size to try. Default: from the size of the initial time
        derivative.

    Returns
    -------
    PDEResult

    Raises
    ------
    ValueError
        For a negative, non-finite or zero-mass ``rho0``, a grid of another
        length than the model, ``t_final <= 0``, output times outside
        (0, t_final] or not increasing, ``rtol`` outside its range, or a
        non-positive ``max_steps`` or ``dt_initial``.

    Notes
    -----
    The scheme, its error control and the free-energy check are described in
    the module docstring. A failed run returns the outputs reached so far.
    """
    started = time.perf_counter()

    # validate everything before computing
    check_grid(model, grid)
    rho = grid.normalize(validation.density("rho0", rho0, grid.M))
    t_final, t_eval = _validate_times(t_final, t_eval)
    rtol = validation.in_interval("rtol", rtol, *RTOL_RANGE, closed_low=True, closed_high=True)
    if max_steps is not None:
        max_steps = validation.integer_at_least("max_steps", max_steps, 1)
    if dt_initial is not None:
        dt_initial = validation.positive("dt_initial", dt_initial)
    if stop is not None and not callable(stop):
        raise ValueError(f"stop = {stop!r} is invalid: expected a callable stop(t, rho) -> bool")

    stepper = _Stepper(model, grid, rtol)
    _logger.info("mvlib.pde: M = %d, t_final = %g, rtol = %g, %d output times", grid.M, t_final, rtol, t_eval.size)

    # initial step from the size of the time derivative, unless given
    if dt_initial is None:
        weights = rtol * rho + stepper.atol
        rate = stepper.weighted_rms(stepper.increment(rho, 1.0), weights)
        h = 0.1 / rate if rate > 0.0 else t_final
    else:
        h = dt_initial
    h = min(h, t_final)

    free_energy, roundoff_scale = stepper.free_energy(rho)
    trace_t, trace_free_energy, trace_roundoff = [0.0], [free_energy], [roundoff_scale]
    out_t, out_rho = [], []
    t = 0.0
    # the accepted (t, rho) nodes, newest last, from which BDF2 steps
    history = [(0.0, rho)]
    n_steps = n_rejected = n_second_order = 0
    next_output = 0
    status, message, t_stop = None, None, None
    min_step = MIN_STEP_FRACTION * t_final
    bar = _progress_bar(progress, t_final)

    while status is None:
        # land exactly on the next output time
        target = t_eval[next_output]
        landing = t + h >= target * (1.0 - 1e-12)
        h_try = target - t if landing else h

        weights = rtol * rho + stepper.atol
        step = _bdf2_step(history, h_try)
        guess = _linear_guess(history, h_try)
        order = 1
        if step is not None:
            rhs = step.a * rho - step.b * history[-2][1]
            if rhs.min() > 0.0:
                order = 2
                rho_new, failure = stepper.solve_implicit(rhs, guess, step.h_implicit, weights)
                if rho_new is not None:
                    error = stepper.filtered_error(step.error_factor * (rho_new - step.predictor), rho_new, weights)
        if order == 1:
            # backward Euler: the first two steps, and those whose BDF2 right-hand side is not positive
            rho_new, failure = stepper.solve_implicit(rho, guess, h_try, weights)
            if rho_new is not None:
                error = stepper.euler_error(rho, rho_new, h_try, weights)
        if rho_new is None:
            n_rejected += 1
            _logger.debug("t = %g: step %g rejected: %s", t, h_try, failure)
            h = 0.25 * h_try
            if h < min_step:
                status, message = "failed", f"step size fell below {min_step:.3g} at t = {t:.6g}: {failure}"
            continue

        exponent = -1.0 / (order + 1)
        if error > 1.0:
            n_rejected += 1
            h = h_try * max(MIN_SHRINK, min(0.5, SAFETY * error**exponent))
            if h < min_step:
                status, message = "failed", f"step size fell below {min_step:.3g} at t = {t:.6g} (error test)"
            continue

        new_free_energy, roundoff_scale = stepper.free_energy(rho_new)
        if new_free_energy > free_energy + FREE_ENERGY_ROUNDOFF * roundoff_scale:
            n_rejected += 1
            _logger.debug("t = %g: step %g rejected: free energy rose by %.3g", t, h_try, new_free_energy - free_energy)
            h = 0.5 * h_try
            if h < min_step:
                status, message = "failed", f"step size fell below {min_step:.3g} at t = {t:.6g} (free energy test)"
            continue

        # accept
        rho, free_energy = rho_new, new_free_energy
        t = target if landing else t + h_try
        history = history[-(HISTORY_NODES - 1):] + [(t, rho)]
        n_steps += 1
        n_second_order += order == 2
        trace_t.append(t)
        trace_free_energy.append(free_energy)
        trace_roundoff.append(roundoff_scale)
        if bar is not None:
            bar.update(h_try)
        growth = MAX_GROWTH if error == 0.0 else min(MAX_GROWTH, SAFETY * error**exponent)
        # a step shortened to land on an output time says little about the
        # step size the controller would choose, so its proposal is kept if larger
        h = max(h_try * growth, h) if landing and growth >= 1.0 else h_try * growth

        if landing:
            out_t.append(t)
            out_rho.append(rho.copy())
            next_output += 1
            if next_output == t_eval.size:
                status, message = "finished", f"reached t_final = {t_final:g}"
                break
        if stop is not None and stop(t, rho):
            if not landing:
                out_t.append(t)
                out_rho.append(rho.copy())
            status, message, t_stop = "stopped", f"the stop condition fired at t = {t:.6g}", t
            break
        if max_steps is not None and n_steps >= max_steps:
            status, message = "failed", f"max_steps = {max_steps} accepted steps reached at t = {t:.6g}"

    if bar is not None:
        bar.close()
    wall_time = time.perf_counter() - started
    log = _logger.warning if status == "failed" else _logger.info
    log("mvlib.pde: %s after %d steps (%d rejected), %.3g s: %s", status, n_steps, n_rejected, wall_time, message)
    rho_out = np.array(out_rho) if out_rho else np.empty((0, grid.M))
    return PDEResult(
        t=np.array(out_t),
        rho=rho_out,
        trace_t=np.array(trace_t),
        trace_free_energy=np.array(trace_free_energy),
        trace_roundoff=np.array(trace_roundoff),
        status=status,
        message=message,
        n_steps=n_steps,
        n_rejected=n_rejected,
        n_newton=stepper.n_newton,
        n_krylov=stepper.n_krylov,
        n_second_order=n_second_order,
        wall_time=wall_time,
        t_stop=t_stop,
    )


# -------------------------------------------------------- stop conditions ----


def mass_below(grid, threshold, cluster_threshold=DEFAULT_CLUSTER_THRESHOLD):
    """Return a stop condition for :func:`solve`: the lightest cluster has emptied.

    Clusters are found by :func:`mvlib.clusters.grid_clusters` with the
    density level ``cluster_threshold/L``, and only arcs whose peak exceeds
    ``PEAK_FACTOR * cluster_threshold / L`` count, so that the low arcs which
    appear while gaps open in a forming pattern are not taken for clusters.
    The condition fires when the lightest cluster's mass is below
    ``threshold``.

    A dissolving cluster drops below the detection level before its mass
    reaches a small ``threshold``: for a Hegselmann-Krause cluster at
    gamma = 500, ell = 0.1 that happens near a mass of 0.02. So the condition
    remembers the centres found when the count was at its largest. When fewer
    clusters are found, the remembered centre farthest from every cluster
    found is the one that dropped out, and its mass is the mass of the cells
    nearer to it than to any other remembered centre. The condition fires when
    that mass is below ``threshold``. Counting from the largest count, not the
    first, lets a run start from a nearly uniform density, which has no
    cluster until gaps open.

    NOTE: two clusters that merge also lower the count. The mass near the
    centre that dropped out then stays large, and the condition does not fire.

    Parameters
    ----------
    grid : Grid
    threshold : float
        Mass in (0, 1).
    cluster_threshold : float
        Detection level in units of the uniform density 1/L, > 0. The default
        1e-2 lies far above the exponentially small density between clusters
        and far below a cluster's peak.

    Returns
    -------
    callable
        ``stop(t, rho) -> bool``. It keeps the centres at the largest cluster
        count it has seen, so use a fresh one for every run. Its ``masses``
        attribute contains the cluster masses found at the last call, and the
        mass near the centre that dropped out, if any, as its first entry.
    """
    threshold = validation.in_interval("threshold", threshold, 0.0, 1.0)
    cluster_threshold = validation.positive("cluster_threshold", cluster_threshold)
    level = cluster_threshold / grid.L
    remembered = [np.empty(0)]

    def stop(t, rho):
        found = clusters.grid_clusters(grid, rho, threshold=level, peak=PEAK_FACTOR * level)
        stop.masses = found.masses
        if found.count >= remembered[0].size:
            remembered[0] = found.centres
            return bool(found.count > 0 and found.masses.min() < threshold)
        lost_mass = _mass_near_lost_centre(grid, rho, remembered[0], found.centres)
        stop.masses = np.concatenate(([lost_mass], found.masses))
        return bool(stop.masses.min() < threshold)

    stop.masses = np.empty(0)
    return stop


def _mass_near_lost_centre(grid, rho, remembered, found):
    """Return the fraction of the mass nearer to the lost centre than to any other remembered one.

    The lost centre is the remembered one farthest from every centre in ``found``.
    """
    if found.size:
        gaps = np.abs(grid.minimal_image(remembered[:, None] - found[None, :])).min(axis=1)
        lost = int(np.argmax(gaps))
    else:
        lost = 0
    distances = np.abs(grid.minimal_image(grid.x[None, :] - remembered[:, None]))
    others = np.delete(distances, lost, axis=0)
    nearest = distances[lost] < others.min(axis=0) if others.size else np.ones(grid.M, dtype=bool)
    return float(np.sum(rho[nearest]) / np.sum(rho))
