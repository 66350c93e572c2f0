r"""Free energy of a grid density and interaction energy of particles.

.. math::
    F(\rho) = \beta^{-1}\int \rho\log\rho
              + \tfrac12 \iint W(d(x, y))\,\rho(x)\rho(y)\,dx\,dy .

On a grid the integrals are sums over cells with the convolution of
:mod:`mvlib.grid`, and ``0 log 0 = 0``.
"""

import dataclasses

import numpy as np
from scipy.special import xlogy

from . import validation
from .grid import Grid


@dataclasses.dataclass(frozen=True)
class FreeEnergy:
    """Free energy of a density and its two parts."""

    entropy: float
    """``beta**-1 * integral of rho log rho``."""
    interaction: float
    """``1/2 * double integral of W rho rho``."""

    @property
    def total(self):
        """The sum of the entropy and interaction parts."""
        return self.entropy + self.interaction


def free_energy(model, grid, rho, convolution=None):
    """Return the :class:`FreeEnergy` of the grid density ``rho``.

    Parameters
    ----------
    model : Model
    grid : Grid
        Must have the torus length of ``model``.
    rho : array_like, shape (M,)
        Cell averages of a density (any positive mass; not renormalised).
    convolution : Convolution, optional
        A precomputed ``grid.convolution(model.potential)``, reused in loops.
    """
    check_grid(model, grid)
    rho = validation.density("rho", rho, grid.M)
    if convolution is None:
        convolution = grid.convolution(model.potential)
    return grid_free_energy(grid, rho, convolution, model.beta)


def grid_free_energy(grid, rho, convolution, beta):
    """Return the :class:`FreeEnergy` of ``rho`` for any convolution, without input checks.

    The building block of :func:`free_energy` for callers that loop over many
    densities already validated, or that use a kernel no :class:`Model` accepts
    (a range beyond L/2, for example).
    """
    entropy = float(np.sum(xlogy(rho, rho)) * grid.dx / beta)
    interaction = float(0.5 * np.sum(rho * convolution(rho)) * grid.dx)
    return FreeEnergy(entropy, interaction)


def uniform_free_energy(model):
    """Return F(1/L) = -log(L)/beta + W_hat(0)/(2L), the free energy of the uniform state."""
    return -np.log(model.L) / model.beta + model.potential.fourier(0.0) / (2.0 * model.L)


def check_grid(model, grid):
    """Raise unless ``grid`` is a :class:`Grid` on the torus of ``model``."""
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be an mvlib Grid, got {type(grid).__name__}")
    if not np.isclose(grid.L, model.L, rtol=1e-12, atol=0.0):
        raise ValueError(f"grid.L = {grid.L!r} does not match the model: expected L = {model.L!r}")


def particle_interaction_energy(model, positions, block=2048):
    r"""Return the interaction energy of N particles, ``(1/(2 N**2)) sum_{i != j} W(d(X_i, X_j))``.

    This is ``1/2 * double integral of W`` against the empirical measure with
    the self-interaction left out, so it converges to the interaction part of
    the free energy as N grows. The pairs are summed in blocks of ``block``
    rows, so memory is O(block * N) and time O(N**2).
    """
    x = np.asarray(positions, dtype=float)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"positions has shape {x.shape}: expected a 1-D array of N >= 2 particle positions")
    outside = np.flatnonzero(~(np.isfinite(x) & (x >= 0) & (x < model.L)))
    if outside.size:
        raise ValueError(
            f"positions must be finite and lie in the torus [0, L) = [0, {model.L:g}), but {outside.size} do not "
            f"(first at indices {outside[:5].tolist()}: {x[outside[:5]].tolist()}); wrap them with np.mod(x, L)"
        )
    n = x.size
    total = 0.0
    for start in range(0, n, block):
        rows = x[start : start + block, None]
        displacement = (rows - x[None, :] + 0.5 * model.L) % model.L - 0.5 * model.L
        total += float(np.sum(model.potential.value(displacement)))
    # the diagonal contains W(0) once per particle and is not an interaction
    total -= n * model.potential.value(0.0)
    return total / (2.0 * n * n)
