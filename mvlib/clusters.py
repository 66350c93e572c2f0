r"""Clusters of a particle configuration and of a grid density, in one vocabulary.

A cluster is a group of particles, or a region of high density, separated from
the others by a gap in which the density is (close to) zero. Both detectors
return a :class:`Clusters` record with, for every cluster,

* ``masses``: the fraction of the particles, or of the mass, it holds;
* ``centres``: its circular mean ``(L/2pi) arg(sum_j w_j exp(2 pi i x_j/L))``,
  in ``[0, L)``;
* ``widths``: the root-mean-square minimal-image distance of its members
  (weighted by the density on a grid) from that centre.

Clusters are listed in increasing order of their centres. Neither rule looks
at where the torus is cut: they use only the cyclic order of positions or
cells, so shifting everything around the circle shifts the centres and leaves
masses and widths unchanged (up to round-off).

Particles (:func:`particle_clusters`)
    Sort the positions around the circle and cut wherever two neighbours are
    more than ``gap`` apart (the gap across the cut at 0 = L counts like any
    other). Each piece holding at least a fraction ``min_mass`` of the
    particles is a cluster; particles in smaller pieces are stray (label -1).
    Without any gap wider than ``gap`` there are no clusters. The default gap
    ``4 L log(N)/N`` is four times the typical largest spacing of N uniform
    particles, ``L log(N)/N``, so a uniform configuration is split with
    probability about ``N**-3``.

Grid densities (:func:`grid_clusters`)
    The cells where ``rho > threshold`` form runs around the circle; each run
    is the core of one cluster. The circle is cut at the density minimum
    between consecutive cores, and every cluster owns the cells from one cut to
    the next, so the masses add up to the total mass. The default threshold is
    twice the uniform density, ``2/L``. A density below the threshold
    everywhere, or above it everywhere, has no clusters. With ``peak`` given,
    a run whose largest value does not exceed it is part of a gap instead.
"""

import dataclasses
import math

import numpy as np

from . import validation

# Default particle gap in units of L/N, times log(N): see the module docstring.
GAP_LOG_FACTOR = 4.0

# Pieces containing less than this fraction of the particles are stray particles
# in a gap, not clusters.
DEFAULT_MIN_MASS = 0.02

# Default grid threshold in units of the uniform density 1/L.
DEFAULT_THRESHOLD_OVER_UNIFORM = 2.0


@dataclasses.dataclass(frozen=True)
class Clusters:
    """Clusters found in a configuration, ordered by centre."""

    masses: np.ndarray
    """Fraction of the particles (or of the mass) in each cluster, shape (k,)."""
    centres: np.ndarray
    """Circular-mean centre of each cluster in ``[0, L)``, shape (k,)."""
    widths: np.ndarray
    """Root-mean-square distance from the centre, shape (k,)."""
    labels: np.ndarray = None
    """Cluster index of each particle (-1: stray), shape (N,); None for a grid density."""

    @property
    def count(self):
        """The number of clusters."""
        return int(self.masses.size)


def _circular_moments(x, weights, L):
    """Return the weighted circular mean of ``x`` in [0, L) and the rms distance from it."""
    angle = 2.0 * math.pi * x / L
    resultant = np.sum(weights * np.exp(1j * angle))
    centre = (np.angle(resultant) * L / (2.0 * math.pi)) % L
    if centre >= L:
        centre = 0.0
    distance = (x - centre + 0.5 * L) % L - 0.5 * L
    width = math.sqrt(np.sum(weights * distance**2) / np.sum(weights))
    return centre, width


def _ordered(masses, centres, widths, labels=None):
    order = np.argsort(centres, kind="stable")
    if labels is not None:
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        labels = np.where(labels >= 0, rank[np.maximum(labels, 0)], -1)
    return Clusters(np.asarray(masses)[order], np.asarray(centres)[order], np.asarray(widths)[order], labels)


def default_gap(N, L):
    """Return the default particle gap ``4 L log(N)/N``."""
    return GAP_LOG_FACTOR * L * math.log(N) / N


def particle_clusters(positions, L, gap=None, min_mass=DEFAULT_MIN_MASS):
    """Return the clusters of particles at ``positions`` on the torus ``[0, L)``.

    Parameters
    ----------
    positions : array_like, shape (N,)
        Positions in ``[0, L)``, N >= 2.
    L : float
        Length of the torus.
    gap : float, optional
        Neighbours further apart than this belong to different pieces; in
        (0, L). Default ``4 L log(N)/N`` (see the module docstring).
    min_mass : float
        Smallest fraction of the particles that makes a piece a cluster, in [0, 1].

    Returns
    -------
    Clusters
        With ``labels`` of shape (N,) in the order of ``positions``.
    """
    L = validation.positive("L", L)
    x = np.asarray(positions, dtype=float)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"positions has shape {x.shape}: expected a 1-D array of N >= 2 particle positions")
    if not np.all(np.isfinite(x)) or np.any(x < 0) or np.any(x >= L):
        raise ValueError(f"positions must be finite and lie in the torus [0, L) = [0, {L:g})")
    n = x.size
    gap = default_gap(n, L) if gap is None else validation.in_interval("gap", gap, 0.0, L)
    min_mass = validation.in_interval("min_mass", min_mass, 0.0, 1.0, closed_low=True, closed_high=True)

    # spacings around the circle; spacing[m] lies between sorted m and m + 1
    order = np.argsort(x, kind="stable")
    y = x[order]
    spacing = np.empty(n)
    spacing[:-1] = np.diff(y)
    spacing[-1] = y[0] + L - y[-1]
    cuts = np.flatnonzero(spacing > gap)
    labels = np.full(n, -1, dtype=np.int64)
    if cuts.size == 0:
        return Clusters(np.empty(0), np.empty(0), np.empty(0), labels)

    # start the cyclic sequence after a cut, so that pieces are contiguous
    shift = cuts[0] + 1
    rolled = np.roll(order, -shift)
    after_cut = np.roll(spacing > gap, -shift)
    piece = np.cumsum(after_cut) - after_cut

    masses, centres, widths = [], [], []
    for index in range(cuts.size):
        members = rolled[piece == index]
        if members.size < min_mass * n or members.size == 0:
            continue
        centre, width = _circular_moments(x[members], np.ones(members.size), L)
        labels[members] = len(masses)
        masses.append(members.size / n)
        centres.append(centre)
        widths.append(width)
    return _ordered(masses, centres, widths, labels)


def grid_clusters(grid, rho, threshold=None, peak=None):
    """Return the clusters of a grid density ``rho``.

    Parameters
    ----------
    grid : Grid
    rho : array_like, shape (M,)
        Cell averages of a density (any positive mass; masses are fractions of it).
    threshold : float, optional
        Cells with ``rho > threshold`` are cluster cores; > 0. Default ``2/L``
        (twice the uniform density), scaled by the mass of ``rho``.
    peak : float, optional
        A core counts only if its largest value exceeds ``peak``; the other
        runs above the threshold belong to the gaps. Default: every core counts.

    Returns
    -------
    Clusters
        ``labels`` is None.
    """
    rho = validation.density("rho", rho, grid.M)
    total = float(np.sum(rho))
    if threshold is None:
        threshold = DEFAULT_THRESHOLD_OVER_UNIFORM * total * grid.dx / grid.L
    else:
        threshold = validation.positive("threshold", threshold)
    if peak is not None:
        peak = validation.positive("peak", peak)
    above = rho > threshold
    if not np.any(above) or np.all(above):
        return Clusters(np.empty(0), np.empty(0), np.empty(0))

    # cores are runs of cells above the threshold, found on the circle by
    # starting right after a cell below it
    first_below = int(np.flatnonzero(~above)[0])
    rolled = np.roll(np.arange(grid.M), -first_below)
    values = rho[rolled]
    rolled_above = above[rolled]
    starts = np.flatnonzero(rolled_above & ~np.roll(rolled_above, 1))
    ends = np.flatnonzero(rolled_above & ~np.roll(rolled_above, -1))
    if peak is not None:
        # the largest value of each core [start, end]; a trailing 0 keeps end + 1 in range
        bounds = np.column_stack((starts, ends + 1)).ravel()
        keep = np.maximum.reduceat(np.append(values, 0.0), bounds)[::2] > peak
        starts, ends = starts[keep], ends[keep]
        if starts.size == 0:
            return Clusters(np.empty(0), np.empty(0), np.empty(0))

    # Cut the circle at the minimum of rho in each gap between consecutive
    # cores. The last gap wraps around from the last core to the first.
    cuts = np.empty(starts.size, dtype=int)
    for index in range(starts.size - 1):
        cuts[index] = ends[index] + 1 + int(np.argmin(values[ends[index] + 1 : starts[index + 1]]))
    wrapped = np.concatenate((values[ends[-1] + 1 :], values[: starts[0]]))
    cuts[-1] = (ends[-1] + 1 + int(np.argmin(wrapped))) % grid.M

    # Cluster k owns the cells from cut k-1 to cut k. Rotating the last cut to
    # the front makes every cluster one contiguous segment.
    order = np.roll(rolled, -cuts[-1])
    bounds = np.sort((cuts - cuts[-1]) % grid.M)
    weights = rho[order]
    angle = (2.0 * math.pi / grid.L) * grid.x[order]
    mass = np.add.reduceat(weights, bounds)
    resultant = np.add.reduceat(weights * np.cos(angle), bounds) + 1j * np.add.reduceat(weights * np.sin(angle), bounds)
    centres = (np.angle(resultant) * grid.L / (2.0 * math.pi)) % grid.L
    centres[centres >= grid.L] = 0.0
    member = np.repeat(np.arange(bounds.size), np.diff(np.append(bounds, grid.M)))
    distance = grid.minimal_image(grid.x[order] - centres[member])
    widths = np.sqrt(np.add.reduceat(weights * distance**2, bounds) / mass)
    masses = mass / total
    return _ordered(masses, centres, widths)
