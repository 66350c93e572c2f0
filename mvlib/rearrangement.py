r"""Symmetric decreasing rearrangement on the torus and the Riesz functional.

The symmetric decreasing rearrangement :math:`\rho^*` of a density
:math:`\rho` is the density centred at a point whose super-level sets are arcs
centred there, with the lengths of the super-level sets of :math:`\rho`. On a
grid of ``M`` cells it is a permutation of the cell values: sort them in
decreasing order and assign them to the cells in order of increasing circular
distance from the centre cell ``c``,

.. math:: c,\ c+1,\ c-1,\ c+2,\ c-2,\ \dots \pmod M .

Tie rule: of two cells at the same circular distance from ``c``, the one to the
right (``c + j``) receives the larger value. For even ``M`` the cell
``c + M/2`` is alone at the largest distance and comes last. The same cell
order lists the cells by distance from the cell edge between ``c`` and
``c + 1``, left cell first. So one order serves a cluster centred on a cell
and one centred on a cell edge, for both parities of ``M``. Equal values are
identical numbers, so which of them goes where does not change the result:
the rearrangement is deterministic.

Because :math:`\rho^*` is a permutation of :math:`\rho`, their sorted values
agree bit for bit, and with them the mass and the entropy.

The Riesz functional of an interaction potential W is

.. math:: I(\rho) = \iint \rho(x)\,(-W)(d(x, y))\,\rho(y)\,dx\,dy
          = -\sum_i \rho_i\,(W * \rho)_i\,dx ,

so that the interaction part of the free energy is :math:`-I(\rho)/2`. The
Riesz rearrangement inequality :math:`I(\rho^*) \ge I(\rho)` holds when
:math:`-W` is symmetric decreasing in the circular distance. The entropy is
unchanged, so then :math:`F(\rho^*) \le F(\rho)`, and a global minimizer of F
can be sought among symmetric decreasing densities.

A grid density is *symmetric decreasing* when it equals a translate of its
rearrangement or of the mirror image of its rearrangement. The mirror image is
needed because the tie rule picks a side: a cluster sampled slightly left of a
cell centre decreases in the order ``c, c-1, c+1, ...``.
:func:`symmetric_decreasing_violation` measures how far a density is from this
set of translates and mirror images.

For the search for global minimizers, :func:`random_densities` draws random
starts, :func:`relax` lowers the free energy by a damped fixed-point
iteration (it needs only a convolution, so it also runs with kernels that no
:class:`~mvlib.Model` accepts), :func:`count_clusters` classifies a state and
:func:`search_minimizers` combines them with Newton's method of
:mod:`mvlib.stationary`.
"""

import dataclasses
import logging
import math
import time

import numpy as np

from . import clusters, validation
from .energy import grid_free_energy
from .grid import Convolution, Grid
from .potentials import Potential

_logger = logging.getLogger(__name__)

NORMS = ("l1", "sup")
DENSITY_KINDS = ("multi_bump", "noise", "asymmetric")

# The uniform floor mixed into every random density, as a fraction of the
# uniform value 1/L: it keeps log(rho) finite, so the entropy and the PDE
# solvers never meet an empty cell.
RANDOM_FLOOR = 1e-3

# Largest number of bumps in a random multi-bump density. With widths up to
# L/8, more bumps would mostly merge into a nearly uniform field.
MAX_RANDOM_BUMPS = 6


def rearrangement_order(M):
    """Return the cell offsets from the centre in order of increasing circular distance.

    Parameters
    ----------
    M : int
        Number of grid cells, >= 1.

    Returns
    -------
    ndarray of int, shape (M,)
        ``[0, 1, -1, 2, -2, ...]`` cut to M entries: cell ``c + order[r]``
        receives the r-th largest value (tie rule: right before left).
    """
    M = validation.integer_at_least("M", M, 1)
    steps = np.arange(1, M)
    magnitude = (steps + 1) // 2
    sign = np.where(steps % 2 == 1, 1, -1)
    return np.concatenate([[0], sign * magnitude])


def _check_centre(grid, centre):
    centre = validation.integer_at_least("centre", centre, 0)
    if centre >= grid.M:
        raise ValueError(f"centre = {centre!r} is invalid: must be a cell index in [0, M) = [0, {grid.M})")
    return centre


def _check_grid(grid):
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be an mvlib Grid, got {type(grid).__name__}")


def _densities(name, values, M):
    """Return ``values`` as a float array of shape (M,) or (n, M) whose rows are densities."""
    array = np.asarray(values, dtype=float)
    if array.ndim == 1:
        return validation.density(name, array, M)
    if array.ndim != 2 or array.shape[1] != M:
        raise ValueError(f"{name} has shape {array.shape}, expected ({M},) or (n, {M}): one value per grid cell")
    for row in range(array.shape[0]):
        validation.density(f"{name}[{row}]", array[row], M)
    return array


def rearrange(grid, rho, centre=0):
    """Return the symmetric decreasing rearrangement of ``rho`` centred at cell ``centre``.

    Parameters
    ----------
    grid : Grid
    rho : array_like, shape (M,) or (n, M)
        Cell values of one density or of n densities (finite, >= 0, positive mass).
    centre : int
        Index of the cell that receives the largest value, in [0, M).

    Returns
    -------
    ndarray, same shape as ``rho``
        A permutation of each row of ``rho``: the largest value at ``centre``,
        then the next ones at ``centre + 1``, ``centre - 1``, ``centre + 2``, ...
        (see the module docstring for the tie rule).

    Raises
    ------
    ValueError
        If a row of ``rho`` has the wrong length, a non-finite or negative
        value or zero mass, or if ``centre`` is not a cell index.
    """
    _check_grid(grid)
    rho = _densities("rho", rho, grid.M)
    centre = _check_centre(grid, centre)

    # sort each row in decreasing order and scatter the values to the cells
    # listed by increasing distance from the centre
    ordered = -np.sort(-rho, axis=-1)
    cells = (centre + rearrangement_order(grid.M)) % grid.M
    result = np.empty_like(rho)
    result[..., cells] = ordered
    return result


def _as_convolution(grid, interaction):
    if isinstance(interaction, Convolution):
        if interaction.grid.M != grid.M or interaction.grid.L != grid.L:
            raise ValueError(
                f"the convolution is built on {interaction.grid!r}, which differs from grid = {grid!r}"
            )
        return interaction
    if isinstance(interaction, Potential):
        return grid.convolution(interaction)
    raise TypeError(f"interaction must be an mvlib Potential or Convolution, got {type(interaction).__name__}")


def riesz_functional(grid, rho, interaction):
    r"""Return the Riesz functional :math:`I(\rho) = \iint \rho(x)(-W)(x - y)\rho(y)`.

    Parameters
    ----------
    grid : Grid
    rho : array_like, shape (M,) or (n, M)
        Cell values of one density or of n densities; not renormalised.
    interaction : Potential or Convolution
        The potential W, or a precomputed ``grid.convolution(potential)`` (or
        any :class:`~mvlib.grid.Convolution` on this grid, such as one built
        with a periodised kernel).

    Returns
    -------
    float or ndarray, shape (n,)
        ``-sum_i rho_i (W * rho)_i dx``, which is ``-2`` times the interaction
        part of the free energy.
    """
    _check_grid(grid)
    rho = _densities("rho", rho, grid.M)
    convolution = _as_convolution(grid, interaction)
    values = -np.sum(rho * convolution(rho), axis=-1) * grid.dx
    return float(values) if np.ndim(values) == 0 else values


def rearrangement_gap(grid, rho, interaction):
    r"""Return :math:`I(\rho^*) - I(\rho)`, which the Riesz inequality states is >= 0.

    Parameters and the shape of the result are those of :func:`riesz_functional`.
    The free energy changes by ``F(rho*) - F(rho) = -gap/2`` (the entropy is
    unchanged). The gap does not depend on the centre of the rearrangement,
    because the convolution commutes with translations of the grid.
    """
    _check_grid(grid)
    rho = _densities("rho", rho, grid.M)
    convolution = _as_convolution(grid, interaction)
    return riesz_functional(grid, rearrange(grid, rho), convolution) - riesz_functional(grid, rho, convolution)


@dataclasses.dataclass(frozen=True)
class SymmetryCheck:
    """Distance of a density from the symmetric decreasing densities with its values."""

    violation: float
    """Relative distance to the nearest translate of ``rho*`` or of its mirror image, in ``norm``."""
    centre: int
    """Cell holding the maximum of the nearest symmetric decreasing density."""
    mirrored: bool
    """Whether the nearest one is the mirror image (tie to the left) of the rearrangement."""
    norm: str
    """``"l1"``: ``sum |rho - r| / sum rho``; ``"sup"``: ``max |rho - r| / max rho``."""


def symmetric_decreasing_violation(grid, rho, norm="l1"):
    """Return how far ``rho`` is from every translate of its rearrangement and of its mirror image.

    Parameters
    ----------
    grid : Grid
    rho : array_like, shape (M,)
        Cell values of a density (finite, >= 0, positive mass).
    norm : {"l1", "sup"}
        ``"l1"`` divides the L1 distance by the mass, which gives the
        fraction of mass out of place (between 0 and 2). ``"sup"`` divides
        the largest pointwise difference by the maximum of ``rho``.

    Returns
    -------
    SymmetryCheck
        ``violation`` is 0 exactly when ``rho`` is symmetric decreasing in the
        grid sense of the module docstring. It is the distance to the nearest
        symmetric decreasing density *with the same values*, so an upper bound
        for the distance to the set of all symmetric decreasing densities.

    Notes
    -----
    Every one of the M centres is tried with both tie rules, so the cost is
    O(M**2) per density.
    """
    _check_grid(grid)
    rho = validation.density("rho", rho, grid.M)
    if norm not in NORMS:
        raise ValueError(f"norm = {norm!r} is invalid: expected one of {NORMS}")

    # candidates[s, c] is the rearrangement centred at cell c, right-first for
    # s = 0 and mirrored (left-first) for s = 1. Row c of the circulant index
    # table rolls the rearrangement centred at 0 to centre c.
    centred = rearrange(grid, rho, 0)
    mirrored = np.roll(centred[::-1], 1)
    shifts = (np.arange(grid.M)[None, :] - np.arange(grid.M)[:, None]) % grid.M
    candidates = np.stack([centred[shifts], mirrored[shifts]])

    difference = np.abs(candidates - rho[None, None, :])
    if norm == "l1":
        distances = np.sum(difference, axis=-1) / np.sum(rho)
    else:
        distances = np.max(difference, axis=-1) / np.max(rho)
    side, centre = np.unravel_index(int(np.argmin(distances)), distances.shape)
    return SymmetryCheck(float(distances[side, centre]), int(centre), bool(side == 1), norm)


def is_symmetric_decreasing(grid, rho, tolerance, norm="l1"):
    """Return whether :func:`symmetric_decreasing_violation` of ``rho`` is at most ``tolerance``."""
    tolerance = validation.in_interval("tolerance", tolerance, 0.0, math.inf, closed_low=True)
    return symmetric_decreasing_violation(grid, rho, norm).violation <= tolerance


def random_density(grid, rng, kind):
    """Return a random probability density on ``grid`` of the family ``kind``.

    Parameters
    ----------
    grid : Grid
    rng : numpy.random.Generator
    kind : {"multi_bump", "noise", "asymmetric"}
        ``"multi_bump"``: 1 to MAX_RANDOM_BUMPS periodic Gaussian bumps with
        random centres, masses and widths (2 cells to L/8, or to 4 cells on
        grids coarser than 32 cells).
        ``"noise"``: the exponential of a random Fourier series (modes 1..M/4
        with amplitudes decaying like 1/k), a rough positive field.
        ``"asymmetric"``: one or two lopsided bumps, steep on one side and
        slow on the other, so no translate is symmetric.

    Returns
    -------
    ndarray, shape (M,)
        Cell values with mass 1 and a floor of RANDOM_FLOOR/L in every cell.
    """
    _check_grid(grid)
    if kind not in DENSITY_KINDS:
        raise ValueError(f"kind = {kind!r} is invalid: expected one of {DENSITY_KINDS}")
    L, x = grid.L, grid.x

    if kind == "multi_bump":
        values = np.zeros(grid.M)
        for _ in range(rng.integers(1, MAX_RANDOM_BUMPS + 1)):
            width = rng.uniform(2.0 * grid.dx, max(L / 8.0, 4.0 * grid.dx))
            offset = grid.minimal_image(x - rng.uniform(0.0, L))
            values += rng.uniform(0.1, 1.0) * np.exp(-0.5 * (offset / width) ** 2) / width
    elif kind == "noise":
        modes = np.arange(1, max(2, grid.M // 4) + 1)
        amplitudes = rng.normal(size=modes.size) / modes
        phases = rng.uniform(0.0, 2.0 * np.pi, size=modes.size)
        field = np.sum(amplitudes[:, None] * np.cos(2.0 * np.pi * np.outer(modes, x) / L + phases[:, None]), axis=0)
        values = np.exp(rng.uniform(0.5, 3.0) * field / max(np.max(np.abs(field)), 1e-300))
    else:
        values = np.zeros(grid.M)
        for _ in range(rng.integers(1, 3)):
            steep = rng.uniform(grid.dx, max(L / 20.0, 2.0 * grid.dx))
            slow = rng.uniform(3.0, 8.0) * steep
            offset = grid.minimal_image(x - rng.uniform(0.0, L))
            # a steep exponential flank on the left and a slow one on the right
            values += rng.uniform(0.2, 1.0) * np.where(offset < 0.0, np.exp(-np.abs(offset) / steep),
                                                       np.exp(-offset / slow))

    values = values / grid.integrate(values)
    return (1.0 - RANDOM_FLOOR) * values + RANDOM_FLOOR / L


def random_densities(grid, n, seed, kinds=DENSITY_KINDS):
    """Return ``n`` random densities, cycling through ``kinds``, and the kind of each.

    Returns
    -------
    rho : ndarray, shape (n, M)
    kind : ndarray of str, shape (n,)
    """
    n = validation.integer_at_least("n", n, 1)
    kinds = tuple(kinds)
    if not kinds or any(kind not in DENSITY_KINDS for kind in kinds):
        raise ValueError(f"kinds = {kinds!r} is invalid: expected a non-empty selection of {DENSITY_KINDS}")
    rng = np.random.default_rng(seed)
    labels = np.array([kinds[index % len(kinds)] for index in range(n)])
    return np.array([random_density(grid, rng, kind) for kind in labels]), labels


@dataclasses.dataclass(frozen=True)
class Relaxation:
    """A density relaxed by :func:`relax`, with the cost and the state of the iteration."""

    rho: np.ndarray
    """Final density, shape (M,), mass 1."""
    free_energy: float
    """``beta**-1 * integral rho log rho - I(rho)/2`` at ``rho``."""
    residual: float
    """``max |rho - exp(-beta W * rho)/Z| / max rho``, 0 at a stationary state."""
    converged: bool
    """Whether ``residual <= tol`` was reached within ``max_iter`` iterations."""
    iterations: int


# Smallest step tried by the backtracking line search in relax; below it the
# free energy no longer decreases measurably and the iteration stops.
_SMALLEST_STEP = 1e-8


def _gibbs_map(grid, rho, convolution, beta):
    """Return ``exp(-beta W * rho) / Z``, shifted before exp so that it cannot overflow."""
    exponent = -beta * convolution(rho)
    values = np.exp(exponent - exponent.max())
    return values / grid.integrate(values)


def relax(grid, convolution, beta, rho0, *, tol=1e-11, max_iter=20000):
    r"""Relax ``rho0`` to a stationary state by a damped fixed-point iteration that lowers F.

    Each step moves ``rho`` towards :math:`T(\rho) = e^{-\beta W * \rho}/Z`,
    :math:`\rho \leftarrow (1 - \theta)\rho + \theta T(\rho)`, with the largest
    :math:`\theta \in \{1, 1/2, 1/4, \dots\}` that lowers the free energy. The
    direction is a descent direction, since
    :math:`\tfrac{d}{d\theta} F = \beta^{-1}\int (\log\rho - \log T(\rho))(T(\rho) - \rho) \le 0`
    at :math:`\theta = 0`, so F decreases monotonically.

    It needs only a convolution, so it also runs with kernels that no
    :class:`~mvlib.Model` accepts, such as the periodisation of a potential
    whose range exceeds ``L/2``. For the potentials a Model accepts, prefer
    ``mvlib.stationary.solve`` (Newton, much faster near a solution) and
    ``mvlib.pde.solve`` (the dynamics).

    Parameters
    ----------
    grid : Grid
    convolution : Convolution
        ``rho -> W * rho`` on ``grid``.
    beta : float
        Inverse temperature, > 0.
    rho0 : array_like, shape (M,)
        Starting density; renormalised to mass 1.
    tol : float
        Stop once the relative residual of the fixed-point equation is at most ``tol``.
    max_iter : int
        Maximum number of iterations.

    Returns
    -------
    Relaxation

    Notes
    -----
    NOTE: convergence is linear and slow near a weakly stable state; a state
    that has not converged is returned with ``converged = False``, not raised.
    """
    _check_grid(grid)
    convolution = _as_convolution(grid, convolution)
    beta = validation.positive("beta", beta)
    tol = validation.positive("tol", tol)
    max_iter = validation.integer_at_least("max_iter", max_iter, 1)
    rho = grid.normalize(rho0)

    energy = grid_free_energy(grid, rho, convolution, beta).total
    residual = math.inf
    iterations = 0
    while iterations < max_iter:
        target = _gibbs_map(grid, rho, convolution, beta)
        residual = float(np.max(np.abs(target - rho)) / np.max(rho))
        if residual <= tol:
            break
        iterations += 1

        # backtracking: halve the step until the free energy does not increase
        step = 1.0
        while step >= _SMALLEST_STEP:
            trial = (1.0 - step) * rho + step * target
            trial_energy = grid_free_energy(grid, trial, convolution, beta).total
            if trial_energy <= energy:
                break
            step *= 0.5
        if step < _SMALLEST_STEP:
            _logger.info("relax: no step lowers F after %d iterations (residual %.3g)", iterations, residual)
            break
        rho, energy = trial, trial_energy

    return Relaxation(rho, energy, residual, residual <= tol, iterations)


# A state whose relative oscillation (max - min)/max is below this is counted
# as the uniform state: Newton-converged uniform states sit at round-off,
# while the weakest cluster state on the grids of the book is above 1e-2.
UNIFORM_TOLERANCE = 1e-6


def count_clusters(grid, rho):
    """Return the number of clusters of a grid density: 0 for the uniform state.

    A cluster is a maximal arc of cells, taken circularly, on which ``rho``
    exceeds the uniform value ``1/L`` (the mean): the cores of
    :func:`mvlib.clusters.grid_clusters` at that threshold. A density whose relative
    oscillation ``(max - min)/max`` is below UNIFORM_TOLERANCE is uniform.
    The count does not depend on where the torus is cut.

    NOTE: two clusters closer than their width, with no dip below 1/L between
    them, count as one. In the stationary cluster states of the book the
    density between clusters is exponentially small, far below 1/L.
    """
    _check_grid(grid)
    rho = validation.density("rho", rho, grid.M)
    if (rho.max() - rho.min()) / rho.max() < UNIFORM_TOLERANCE:
        return 0
    return clusters.grid_clusters(grid, rho, threshold=float(np.mean(rho))).count


def stationary_residual(model, grid, rho, convolution=None):
    """Return the residual of ``rho = exp(-beta W * rho)/Z`` in the measure of ``mvlib.stationary``.

    With ``psi = beta W * rho`` it is ``max|psi - beta W * (exp(-psi)/Z)| / (1 + max|psi|)``,
    the error in ``log rho`` relative to the size of ``psi``, so states from
    :func:`relax` and from Newton's method are compared on one scale.
    """
    from . import stationary
    from .energy import check_grid

    check_grid(model, grid)
    rho = grid.normalize(rho)
    if convolution is None:
        convolution = grid.convolution(model.potential)
    psi = model.beta * convolution(rho)
    return stationary.relative_residual(psi, psi - model.beta * convolution(_gibbs_map(grid, rho, convolution, model.beta)))


@dataclasses.dataclass
class MinimizerSearch:
    """Stationary states reached from random starts, one row per start."""

    gamma: float
    kind: np.ndarray
    """Family of the start, shape (n,), see :func:`random_density`."""
    rho: np.ndarray
    """Final states, shape (n, M)."""
    free_energy: np.ndarray
    """Free energy of each final state, shape (n,)."""
    n_clusters: np.ndarray
    """:func:`count_clusters` of each final state, shape (n,)."""
    violation: np.ndarray
    """:func:`symmetric_decreasing_violation` (L1) of each final state, shape (n,)."""
    residual: np.ndarray
    """:func:`stationary_residual` of each final state, shape (n,)."""
    converged: np.ndarray
    """Whether the residual is at most the search's ``tol``, shape (n,) bool."""
    newton_converged: np.ndarray
    """Whether Newton's method itself reached ``tol``, shape (n,) bool."""
    descent_iterations: np.ndarray
    """Iterations of the descent before Newton, shape (n,)."""
    wall_time: float

    def lowest(self):
        """Return the index of the converged state with the lowest free energy."""
        candidates = np.flatnonzero(self.converged)
        if candidates.size == 0:
            raise ValueError("no state converged: the search has no lowest stationary state")
        return int(candidates[np.argmin(self.free_energy[candidates])])


def search_minimizers(model, grid, n_starts, seed, *, kinds=DENSITY_KINDS, descent_tol=1e-6,
                      descent_max_iter=5000, tol=1e-9, newton_max_iter=4):
    """Take random starts to stationary states and record what each one reached.

    Each start from :func:`random_densities` first descends the free energy
    with :func:`relax` until its fixed-point residual is below
    ``descent_tol``, which selects a basin of attraction as a gradient method
    does. Newton's method (``mvlib.stationary.solve``) then polishes the
    state; if it stops short of ``tol``, the descent continues from the
    better of the two states. A state counts as converged when its
    :func:`stationary_residual` is at most ``tol``. Every state is classified
    by :func:`count_clusters` and :func:`symmetric_decreasing_violation`.

    Parameters
    ----------
    model : Model
    grid : Grid
        Must have the torus length of ``model`` and resolve its range.
    n_starts : int
        Number of random starts, >= 1.
    seed : int
        Seed of the random starts.
    kinds : sequence of str
        Density families cycled through, see :func:`random_density`.
    descent_tol, descent_max_iter : float, int
        Stopping rule of the descent.
    tol : float
        Residual at which a state counts as stationary, in (0, 1).
    newton_max_iter : int
        Most Newton iterations per start.

    Returns
    -------
    MinimizerSearch

    Notes
    -----
    NOTE: the descent is the damped fixed-point iteration of :func:`relax`,
    not the PDE. Both lower F monotonically, but their basins of attraction
    need not coincide, so the share of starts ending in each state is a
    property of this descent, not of the PDE.
    """
    from . import stationary
    from .energy import check_grid, free_energy

    check_grid(model, grid)
    tol = validation.in_interval("tol", tol, 0.0, 1.0)
    starts, labels = random_densities(grid, n_starts, seed, kinds)
    convolution = grid.convolution(model.potential)
    n = starts.shape[0]
    rho = np.empty_like(starts)
    energy, residual, violation = np.empty(n), np.empty(n), np.empty(n)
    clusters, iterations = np.empty(n, dtype=int), np.empty(n, dtype=int)
    newton_converged = np.empty(n, dtype=bool)

    started = time.perf_counter()
    for index in range(n):
        descent = relax(grid, convolution, model.beta, starts[index], tol=descent_tol, max_iter=descent_max_iter)
        state = stationary.solve(model, grid, descent.rho, tol=tol, max_iter=newton_max_iter)
        newton_converged[index] = state.converged
        final = state.rho
        if not state.converged:
            # Newton stalled (for instance on a very narrow cluster): continue
            # the descent from whichever state has the smaller residual
            better = min((descent.rho, state.rho), key=lambda r: stationary_residual(model, grid, r, convolution))
            final = relax(grid, convolution, model.beta, better, tol=descent_tol * 1e-3, max_iter=descent_max_iter).rho
            if stationary_residual(model, grid, final, convolution) > stationary_residual(model, grid, better, convolution):
                final = better
        rho[index] = final
        residual[index] = stationary_residual(model, grid, final, convolution)
        energy[index] = free_energy(model, grid, final, convolution).total
        iterations[index] = descent.iterations
        clusters[index] = count_clusters(grid, final)
        violation[index] = symmetric_decreasing_violation(grid, final).violation
    wall_time = time.perf_counter() - started
    converged = residual <= tol
    _logger.info("minimizer search at gamma = %g: %d starts, %d converged, %.1f s",
                 model.gamma, n, int(converged.sum()), wall_time)
    return MinimizerSearch(model.gamma, labels, rho, energy, clusters, violation, residual, converged,
                           newton_converged, iterations, wall_time)
