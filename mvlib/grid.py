r"""Finite-volume grid on the torus and the periodic convolution ``W * rho``.

A density on the grid is a vector of cell averages ``rho[i]`` over the cells
``[i*dx, (i+1)*dx)``, ``dx = L/M``. The convolution is a discrete circular
convolution with an even kernel ``K[m]``,

.. math:: (W * \rho)_i = \sum_j K_{i-j}\, \rho_j\, dx,

evaluated by FFT. An even kernel makes the operator symmetric, which the free
energy and the well-balanced PDE scheme rely on.

Three kernels are offered. ``"point"`` samples ``W(m*dx)``; ``"cell"``
averages W over a cell; ``"galerkin"`` averages it twice (a triangle of
half-width dx), which gives the exact interaction energy of the piecewise
constant density. All three are second order. The default is ``"cell"``:
near W's kinks at ``+-ell`` a point sample jumps between branches as the kink
moves through a cell, so its error constant swings by a factor of 3 to 100
from one M to the next, while a cell average integrates across the kink and
its constant stays within a few percent, and is the smallest of the three in
the worst case (``tests/test_grid.py`` measures this on a smooth density for
the Hegselmann–Krause and a piecewise parabolic potential). The cell kernel
also sums exactly to the integral of W, so the uniform state's free energy is
exact to round-off.
"""

import math

import numpy as np

from . import validation

KERNELS = ("point", "cell", "galerkin")

# A kernel needs this many cells across the interaction range ell to resolve the
# shape of W; below it the clusters of width ~ ell are a handful of cells wide.
MIN_CELLS_PER_RANGE = 8


class Grid:
    """Uniform periodic grid of ``M`` cells on ``[0, L)``.

    Attributes
    ----------
    L : float
        Length of the torus.
    M : int
        Number of cells.
    dx : float
        Cell width ``L/M``.
    x : ndarray, shape (M,)
        Cell centres ``(i + 1/2)*dx``.
    """

    def __init__(self, L, M):
        self.L = validation.positive("L", L)
        self.M = validation.integer_at_least("M", M, 4)
        self.dx = self.L / self.M
        self.x = (np.arange(self.M) + 0.5) * self.dx

    def __repr__(self):
        return f"Grid(L={self.L!r}, M={self.M!r})"

    @property
    def uniform(self):
        """The uniform probability density 1/L on this grid."""
        return np.full(self.M, 1.0 / self.L)

    def integrate(self, values):
        """Return the integral of the cell averages ``values`` over the torus."""
        return float(np.sum(values) * self.dx)

    def normalize(self, values):
        """Return ``values`` scaled to integrate to 1 (a probability density)."""
        values = validation.density("rho", values, self.M)
        return values / self.integrate(values)

    def minimal_image(self, x):
        """Map displacements to ``[-L/2, L/2)``."""
        return (np.asarray(x, dtype=float) + 0.5 * self.L) % self.L - 0.5 * self.L

    def check_resolves(self, potential):
        """Raise unless the grid has at least MIN_CELLS_PER_RANGE cells per range ell."""
        if not potential.is_local:
            return
        cells = potential.range / self.dx
        if cells < MIN_CELLS_PER_RANGE:
            needed = math.ceil(MIN_CELLS_PER_RANGE * self.L / potential.range)
            raise ValueError(
                f"M = {self.M} is invalid: it gives {cells:.2f} cells per interaction range "
                f"ell = {potential.range:g}, and at least {MIN_CELLS_PER_RANGE} are needed; use M >= {needed}"
            )

    def kernel(self, potential, method="cell"):
        """Return the even convolution kernel ``K[m]``, m = 0 .. M-1 (index mod M).

        Parameters
        ----------
        potential : Potential
        method : {"point", "cell", "galerkin"}
            How W is sampled on the grid (see the module docstring).
        """
        if method not in KERNELS:
            raise ValueError(f"method = {method!r} is invalid: expected one of {KERNELS}")
        self.check_resolves(potential)
        if potential.is_local:
            # the support plus one cell fits in |m| < M, so folding the line
            # kernel modulo M gives the periodic one
            offsets = np.arange(-self.M + 1, self.M)
        else:
            offsets = np.arange(self.M) - self.M // 2
        centres = offsets * self.dx
        dx = self.dx
        if method == "point":
            values = potential.value(centres)
        elif method == "cell":
            values = (potential.antiderivative(centres + 0.5 * dx) - potential.antiderivative(centres - 0.5 * dx)) / dx
        else:
            second = potential.second_antiderivative
            values = (second(centres + dx) - 2.0 * second(centres) + second(centres - dx)) / dx**2
        kernel = np.zeros(self.M)
        np.add.at(kernel, offsets % self.M, values)
        # exact symmetry K[m] = K[-m], which round-off in the folding can break
        return 0.5 * (kernel + np.roll(kernel[::-1], 1))

    def convolution(self, potential, method="cell"):
        """Return a :class:`Convolution` that applies ``rho -> W * rho`` on this grid."""
        return Convolution(self, potential, method)


class Convolution:
    """The linear operator ``rho -> W * rho`` on a grid, applied by real FFT.

    Calling it on an array of shape ``(M,)`` or ``(..., M)`` returns ``W * rho``
    at the cell centres. ``symbol`` contains its eigenvalues on the Fourier modes
    ``exp(2*pi*i*k*x/L)``, k = 0 .. M//2, which are real because the kernel is even.
    """

    def __init__(self, grid, potential, method="cell"):
        self.grid = grid
        self.potential = potential
        self.method = method
        self.kernel = grid.kernel(potential, method)
        self.symbol = np.fft.rfft(self.kernel).real * grid.dx

    def __call__(self, rho):
        rho = np.asarray(rho, dtype=float)
        return np.fft.irfft(np.fft.rfft(rho, axis=-1) * self.symbol, n=self.grid.M, axis=-1)
