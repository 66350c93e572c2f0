r"""Euler–Maruyama simulation of the N-particle system on the torus.

.. math::
    X^i_{n+1} = X^i_n - \frac{\Delta t}{N}\sum_{j \ne i} W'\bigl(d(X^i_n, X^j_n)\bigr)
                + \sqrt{2\Delta t/\beta}\,\xi^i_n ,\qquad \xi^i_n \sim \mathcal N(0, 1),

with every position wrapped back into ``[0, L)`` after the step.

How the drift is computed
-------------------------
*Piecewise parabolic potentials* (Hegselmann–Krause included). Inside its range
the force is linear in the displacement, ``W'(x) = gamma*(b*x/ell*[|x| <= ell]
+ (alpha - b)*x/ell*[|x| <= a*ell])``. With the positions sorted around the
circle, the particles within a distance r of particle i form a contiguous window
``lo..hi`` of the periodically extended sorted array, and the sum of their
displacements is ``count*X^i - (sum of their positions)``, read from prefix sums.
Two windows (radius ``ell`` and ``a*ell``) give the exact drift in O(N) once the
positions are sorted. A pair exactly at distance ell is inside (closed
interval), as in :meth:`PiecewiseParabolic.derivative`; the window test uses the
computed difference of the two positions.

*Sorting.* Particles are stored in sorted order between steps, together with
their identities. After a step the new positions are distributed into about
N/2 buckets (``PARTICLES_PER_BUCKET``) by a stable counting sort, which keeps
the previous order inside each bucket, and an insertion sort finishes the few
inversions left inside buckets. Both passes are linear in N plus the number of
pairs that changed order within one bucket, whatever the time step. In dense
clusters a bucket holds more particles, and the insertion pass costs up to the
square of that number per bucket.

*Other compactly supported potentials* (method ``"window"``): a loop over the
sorted neighbours within the range, O(N times the neighbours in range). A
potential other than the piecewise parabolic family must provide
``derivative_kernel``, a numba-compiled function ``(x, parameters) -> W'(x)``,
and ``kernel_parameters``, a float array.

*Kuramoto* ``W(x) = -gamma*cos(p*x)``, ``p = 2*pi/L``: the drift of particle i is
``-(gamma*p/N)*(sin(p X^i) C - cos(p X^i) S)`` with the two Fourier sums
``C = sum_j cos(p X^j)`` and ``S = sum_j sin(p X^j)``, so a step costs O(N)
and needs no sorting.

Randomness
----------
The normal draws come from numpy's PCG64 generator seeded by
``numpy.random.SeedSequence(seed)``. For a given seed the trajectory is the
same bit for bit on a given machine, whatever the output times. Independent
seeds for an ensemble come from :func:`spawn_seeds`.
"""

import dataclasses
import logging
import math
import numbers
import sys
import time

import numpy as np

from . import validation
from ._jit import jit
from .model import Model
from .potentials import Kuramoto, PiecewiseParabolic

_logger = logging.getLogger(__name__)

# Normal numbers drawn per call into the generator: the noise of several steps
# is drawn at once for small N (one call per step would dominate the cost at
# N = 1000), and this cap keeps the buffer at 2 MB beside the O(N) state.
NOISE_BUFFER_SIZE = 2**18

# A time step whose typical displacement, sqrt(2 dt/beta) + dt*max|W'|, reaches
# this fraction of the potential's range is rejected: particles would jump over
# the whole interaction range in one step and the scheme would not resolve W.
MAX_STEP_OVER_RANGE = 1.0

# Relative tolerance for an output time above t_final, so that a time computed
# as t_final by arithmetic with round-off is still accepted.
TIME_ROUNDING = 1e-9

METHODS = ("auto", "prefix", "window")

# Comparisons that a window pointer makes at once, without a branch, before it
# falls back to a loop. For spread-out positions a pointer moves by k >= 0
# slots per particle with probability about 2**-(k + 1), so a move of six or
# more, which takes the loop, happens once in 64 particles. At N = 10^6 four
# comparisons made the window sums about 15 % slower for uniform positions
# and about 25 % faster in four dense clusters, where pointers rarely move.
LOOKAHEAD = 6


# ---------------------------------------------------------------------------
# compiled kernels
# ---------------------------------------------------------------------------


@jit
def _parabolic_derivative(x, parameters):
    """Return W'(x) of the piecewise parabolic potential, inner branch at the kinks.

    ``parameters = (gamma, ell, core_radius, core_stiffness, tail_stiffness)``.
    """
    gamma, ell, core_radius, core_stiffness, tail_stiffness = (
        parameters[0], parameters[1], parameters[2], parameters[3], parameters[4])
    s = x / ell
    slope = 0.0
    if abs(s) <= 1.0:
        slope += tail_stiffness * s
    if abs(s) <= core_radius:
        slope += (core_stiffness - tail_stiffness) * s
    return gamma * slope


@jit
def _fill_ghosts(extended, start, n, L, radius):
    """Complete the periodic extension around the sorted block ``extended[start:start + n]``.

    ``extended[:start]`` receives the last ``start`` positions minus L, the
    cells after the block the first positions plus L that lie within
    ``radius`` of the last position, and then ``LOOKAHEAD`` cells of +inf that
    stop the window pointers. Returns the index of the first +inf, the sentinel.
    """
    for k in range(start):
        extended[k] = extended[n + k] - L
    end = start + n
    last = extended[end - 1]
    count = 0
    while count < n and extended[start + count] + L - last <= radius:
        extended[end + count] = extended[start + count] + L
        count += 1
    for k in range(LOOKAHEAD):
        extended[end + count + k] = np.inf
    return end + count


@jit
def _fill_prefix(extended, end, prefix):
    total = 0.0
    prefix[0] = 0.0
    for k in range(end):
        total += extended[k]
        prefix[k + 1] = total


# The window kernels index arrays with np.uint64 casts of their pointers,
# which are never negative. Numba adds a wrap-around test to every signed
# index, and on the chain of dependent loads of a pointer walk this test made
# the window loop about 25 % slower (N = 10^6, numba 0.68.1, AMD EPYC core).


@jit
def _window_start(extended, x, radius, end):
    """Return the first index j with ``x - extended[j] <= radius``, by bisection of ``[0, end)``."""
    low = 0
    high = end
    while low < high:
        middle = (low + high) // 2
        if x - extended[middle] > radius:
            low = middle + 1
        else:
            high = middle
    return low


@jit
def _window_stop(extended, x, radius, start, end):
    """Return the first index j >= start with ``extended[j] - x > radius``, by bisection of ``[start, end]``."""
    low = start
    high = end
    while low < high:
        middle = (low + high) // 2
        if extended[middle] - x <= radius:
            low = middle + 1
        else:
            high = middle
    return low


@jit
def _advance_start(extended, x, radius, lo):
    """Move ``lo`` forward to the first index j >= lo with ``x - extended[j] <= radius``.

    The positions are sorted, so the test ``x - extended[j] > radius`` is
    true below the returned index and false from it on. The sum of the tests
    at lo .. lo + LOOKAHEAD - 1 is therefore the move if it is below
    LOOKAHEAD, found with independent loads and no branch. A longer move
    finishes in a loop.
    """
    step = 0
    for k in range(LOOKAHEAD):
        step += x - extended[np.uint64(lo + k)] > radius
    lo += step
    if step == LOOKAHEAD:
        while x - extended[np.uint64(lo)] > radius:
            lo += 1
    return lo


@jit
def _advance_stop(extended, x, radius, hi):
    """Move ``hi`` forward to the first index j >= hi with ``extended[j] - x > radius``, as :func:`_advance_start`."""
    step = 0
    for k in range(LOOKAHEAD):
        step += extended[np.uint64(hi + k)] - x <= radius
    hi += step
    if step == LOOKAHEAD:
        while extended[np.uint64(hi)] - x <= radius:
            hi += 1
    return hi


@jit
def _window_sum(x, lo, hi, prefix, weight):
    """Return ``weight`` times the sum of ``x - y`` over the extended positions y in ``[lo, hi)``.

    The particle at x itself adds 0.
    """
    return weight * ((hi - lo) * x - (prefix[np.uint64(hi)] - prefix[np.uint64(lo)]))


@jit
def _store(drift, m, value, accumulate):
    if accumulate:
        drift[m] += value
    else:
        drift[m] = value


@jit
def _add_window_sums(extended, start, end, n, prefix, radius, weight, drift, accumulate):
    """Set (or add to) ``drift[m]`` the value ``weight * sum of d(x_m, x_j)`` over ``|d| <= radius``.

    ``extended`` must be completed by :func:`_fill_ghosts` for a radius at
    least ``radius``, with its sentinel at ``end``, and ``prefix`` must hold
    its prefix sums. For each position x the window ``[lo, hi)`` contains the
    extended positions within ``radius`` of x, and both pointers only move
    forward as x increases.

    Each move of a pointer waits for the loads of the move before it. To
    overlap these chains, the slots are cut into four runs, each with its own
    pair of pointers started by bisection, and one loop advances the four runs
    together. The last run also takes the ``n % 4`` slots left over. Every
    pointer ends where a walk from the first slot would, so the result does not
    depend on the cut.
    """
    run_length = n // 4
    first1 = run_length
    first2 = 2 * run_length
    first3 = 3 * run_length
    x = extended[start]
    lo0 = _window_start(extended, x, radius, end)
    hi0 = _window_stop(extended, x, radius, start, end)
    x = extended[start + first1]
    lo1 = _window_start(extended, x, radius, end)
    hi1 = _window_stop(extended, x, radius, start, end)
    x = extended[start + first2]
    lo2 = _window_start(extended, x, radius, end)
    hi2 = _window_stop(extended, x, radius, start, end)
    x = extended[start + first3]
    lo3 = _window_start(extended, x, radius, end)
    hi3 = _window_stop(extended, x, radius, start, end)

    for k in range(run_length):
        x0 = extended[np.uint64(start + k)]
        x1 = extended[np.uint64(start + first1 + k)]
        x2 = extended[np.uint64(start + first2 + k)]
        x3 = extended[np.uint64(start + first3 + k)]
        lo0 = _advance_start(extended, x0, radius, lo0)
        hi0 = _advance_stop(extended, x0, radius, hi0)
        lo1 = _advance_start(extended, x1, radius, lo1)
        hi1 = _advance_stop(extended, x1, radius, hi1)
        lo2 = _advance_start(extended, x2, radius, lo2)
        hi2 = _advance_stop(extended, x2, radius, hi2)
        lo3 = _advance_start(extended, x3, radius, lo3)
        hi3 = _advance_stop(extended, x3, radius, hi3)
        _store(drift, k, _window_sum(x0, lo0, hi0, prefix, weight), accumulate)
        _store(drift, first1 + k, _window_sum(x1, lo1, hi1, prefix, weight), accumulate)
        _store(drift, first2 + k, _window_sum(x2, lo2, hi2, prefix, weight), accumulate)
        _store(drift, first3 + k, _window_sum(x3, lo3, hi3, prefix, weight), accumulate)

    for m in range(4 * run_length, n):
        x = extended[start + m]
        lo3 = _advance_start(extended, x, radius, lo3)
        hi3 = _advance_stop(extended, x, radius, hi3)
        _store(drift, m, _window_sum(x, lo3, hi3, prefix, weight), accumulate)


@jit
def _parabolic_drift(extended, start, end, n, prefix, drift, gamma, ell, core_radius, core_stiffness,
                     tail_stiffness):
    """Store in ``drift`` the exact drift of the sorted block ``extended[start:start + n]``.

    ``extended`` must be completed by :func:`_fill_ghosts` for the radius ell,
    with its sentinel at ``end``. The drift is
    ``-(gamma/(ell N)) (b S_ell + (alpha - b) S_{a ell})`` with ``S_r`` the sum
    of the displacements within r; Hegselmann–Krause (alpha = b) needs only
    the outer window.
    """
    _fill_prefix(extended, end, prefix)
    factor = -gamma / (ell * n)
    _add_window_sums(extended, start, end, n, prefix, ell, factor * tail_stiffness, drift, False)
    core_excess = core_stiffness - tail_stiffness
    if core_excess != 0.0:
        _add_window_sums(extended, start, end, n, prefix, core_radius * ell, factor * core_excess, drift, True)


@jit
def _windowed_drift(extended, start, n, drift, radius, derivative, parameters):
    """Store in ``drift`` the drift of the sorted block by a loop over the neighbours in range."""
    lo = 0
    hi = start
    for m in range(n):
        x = extended[start + m]
        while x - extended[lo] > radius:
            lo += 1
        while extended[hi] - x <= radius:
            hi += 1
        total = 0.0
        for j in range(lo, hi):
            if j != start + m:
                total += derivative(x - extended[j], parameters)
        drift[m] = -total / n


@jit
def _kuramoto_drift(x, drift, gamma, L):
    n = x.size
    p = 2.0 * math.pi / L
    cosine_sum = 0.0
    sine_sum = 0.0
    for i in range(n):
        cosine_sum += math.cos(p * x[i])
        sine_sum += math.sin(p * x[i])
    factor = -gamma * p / n
    for i in range(n):
        drift[i] = factor * (math.sin(p * x[i]) * cosine_sum - math.cos(p * x[i]) * sine_sum)


@jit
def _wrap(z, L):
    """Return z mapped into [0, L); L itself is identified with 0."""
    if z < 0.0 or z >= L:
        z -= L * math.floor(z / L)
        if z >= L:
            z -= L
    return z


@jit
def _bucket(value, scale, buckets):
    return min(int(value * scale), buckets - 1)


@jit
def _insertion_pass(extended, start, n, ids):
    """Sort ``extended[start:start + n]`` and ``ids`` with it by insertion, stably.

    The cost is n plus the number of inversions, which the bucket scatter
    leaves only inside buckets. The indices are cast to np.uint64, as in the
    window kernels, which made this pass about 15 % faster at N = 10^6.
    """
    for m in range(start + 1, start + n):
        value = extended[np.uint64(m)]
        if value >= extended[np.uint64(m - 1)]:
            continue
        identity = ids[np.uint64(m - start)]
        k = m - 1
        while k >= start and extended[np.uint64(k)] > value:
            extended[np.uint64(k + 1)] = extended[np.uint64(k)]
            ids[np.uint64(k + 1 - start)] = ids[np.uint64(k - start)]
            k -= 1
        extended[np.uint64(k + 1)] = value
        ids[np.uint64(k + 1 - start)] = identity


@jit
def _place_sorted(extended, layout, z, id_rows, counts, L, radius, ghosts):
    """Sort ``z`` (slot order) into the periodic extension, buckets already counted.

    ``counts[b + 1]`` must hold the number of positions in bucket b (buckets
    of width ``L/(counts.size - 1)``) and ``ghosts`` the number of positions
    with ``z - L >= -radius``. A stable scatter keeps the previous order
    inside each bucket, and an insertion sort fixes the inversions left there.
    The particle in each slot of ``z`` is in row ``layout[2]`` of ``id_rows``,
    and the sorted order goes into the other row, which then becomes
    ``layout[2]``: swapping the rows saves a copy of the ids. Afterwards
    ``extended[layout[0]:layout[0] + n]`` contains the sorted positions and
    ``layout[1]`` is the sentinel index.
    """
    n = z.size
    ids = id_rows[layout[2]]
    sorted_ids = id_rows[1 - layout[2]]
    buckets = counts.size - 1
    scale = buckets / L
    counts[0] = 0
    for b in range(buckets):
        counts[b + 1] += counts[b]

    start = ghosts
    for m in range(n):
        bucket = _bucket(z[m], scale, buckets)
        slot = counts[bucket]
        counts[bucket] = slot + 1
        extended[start + slot] = z[m]
        sorted_ids[slot] = ids[m]

    _insertion_pass(extended, start, n, sorted_ids)
    layout[2] = 1 - layout[2]
    layout[0] = start
    layout[1] = _fill_ghosts(extended, start, n, L, radius)


@jit
def _move_and_count(extended, start, z, noise_row, dt, scale, L, counts, radius):
    """Set ``z[m]`` to the new wrapped position of slot m (z contains the drift on entry).

    Also counts the positions per bucket into ``counts[1:]`` and returns how
    many need a ghost copy (``z - L >= -radius``), for :func:`_place_sorted`.
    The indices are cast to np.uint64 as in the window kernels, which made
    this pass about 10 to 20 % faster at N = 10^6.
    """
    buckets = counts.size - 1
    bucket_scale = buckets / L
    counts[:] = 0
    ghosts = 0
    for m in range(z.size):
        slot = np.uint64(m)
        value = _wrap(extended[np.uint64(start + m)] + dt * z[slot] + scale * noise_row[slot], L)
        z[slot] = value
        counts[np.uint64(_bucket(value, bucket_scale, buckets) + 1)] += 1
        ghosts += value - L >= -radius
    return ghosts


@jit
def _advance_parabolic(extended, layout, id_rows, noise, dt, scale, L, gamma, ell, core_radius, core_stiffness,
                       tail_stiffness, prefix, z, counts):
    """Advance the sorted state by ``noise.shape[0]`` Euler–Maruyama steps (prefix-sum drift)."""
    n = z.size
    for step in range(noise.shape[0]):
        # z contains the drift first, then the new position of the particle in each slot
        _parabolic_drift(extended, layout[0], layout[1], n, prefix, z, gamma, ell, core_radius, core_stiffness,
                         tail_stiffness)
        ghosts = _move_and_count(extended, layout[0], z, noise[step], dt, scale, L, counts, ell)
        _place_sorted(extended, layout, z, id_rows, counts, L, ell, ghosts)


@jit
def _advance_windowed(extended, layout, id_rows, noise, dt, scale, L, radius, derivative, parameters, z, counts):
    """Advance the sorted state by ``noise.shape[0]`` steps (drift by the loop over neighbours)."""
    n = z.size
    for step in range(noise.shape[0]):
        _windowed_drift(extended, layout[0], n, z, radius, derivative, parameters)
        ghosts = _move_and_count(extended, layout[0], z, noise[step], dt, scale, L, counts, radius)
        _place_sorted(extended, layout, z, id_rows, counts, L, radius, ghosts)


@jit
def _advance_kuramoto(x, noise, dt, scale, L, gamma, drift):
    """Advance the positions ``x`` (particle order) by ``noise.shape[0]`` steps."""
    n = x.size
    for step in range(noise.shape[0]):
        _kuramoto_drift(x, drift, gamma, L)
        for i in range(n):
            x[i] = _wrap(x[i] + dt * drift[i] + scale * noise[step, i], L)


# ---------------------------------------------------------------------------
# validation and helpers
# ---------------------------------------------------------------------------


def _check_model(model):
    if not isinstance(model, Model):
        raise TypeError(f"model must be an mvlib Model, got {type(model).__name__}")


def _check_positions(model, positions):
    """Return ``positions`` as a float array of shape (N,), N >= 2, inside [0, L).

    A float64 array is returned without a copy; callers must not modify it.
    """
    x = np.asarray(positions, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"positions has shape {x.shape}: expected a 1-D array of N particle positions")
    if x.size < 2:
        raise ValueError(f"N = {x.size} is invalid: the particle system needs N >= 2 particles")
    bad = ~np.isfinite(x)
    if np.any(bad):
        raise ValueError(f"positions contains non-finite values at indices {np.flatnonzero(bad)[:5].tolist()}")
    outside = (x < 0.0) | (x >= model.L)
    if np.any(outside):
        first = np.flatnonzero(outside)[:5].tolist()
        raise ValueError(
            f"positions has {np.count_nonzero(outside)} values outside the torus [0, L) = [0, {model.L:g}) "
            f"at indices {first}: map them with positions % L first"
        )
    return x


def _max_slope(potential):
    """Return an upper bound of |W'| over the torus."""
    if isinstance(potential, Kuramoto):
        return abs(potential.gamma) * 2.0 * math.pi / potential.L
    if isinstance(potential, PiecewiseParabolic):
        a, alpha, b = potential.core_radius, potential.core_stiffness, potential.tail_stiffness
        # |W'| is |gamma*alpha*s| on the core |s| <= a and |gamma*b*s| on a < |s| <= 1
        return abs(potential.gamma) * max(abs(b), abs(alpha) * a)
    x = np.linspace(-potential.range, potential.range, 4097)
    return float(np.max(np.abs(potential.derivative(x))))


def _check_time_step(model, dt):
    """Return ``dt`` as a float, or raise unless a step moves particles less than the range."""
    dt = validation.positive("dt", dt)
    potential = model.potential
    typical_step = math.sqrt(2.0 * dt / model.beta) + dt * _max_slope(potential)
    if typical_step >= MAX_STEP_OVER_RANGE * potential.range:
        # largest dt with sqrt(2 dt/beta) + dt*slope < range, from the quadratic in sqrt(dt)
        slope = _max_slope(potential)
        root_noise = math.sqrt(2.0 / model.beta)
        r = MAX_STEP_OVER_RANGE * potential.range
        if slope > 0:
            root = (-root_noise + math.sqrt(root_noise**2 + 4.0 * slope * r)) / (2.0 * slope)
        else:
            root = r / root_noise
        raise ValueError(
            f"dt = {dt!r} is invalid: one step moves a particle by about sqrt(2 dt/beta) + dt*max|W'| = "
            f"{typical_step:.3g}, which is not below the interaction range {potential.range:g}; "
            f"use dt < {root**2:.3g}"
        )
    return dt


def _seed_sequence(seed):
    """Return a numpy SeedSequence from an int >= 0 or a SeedSequence."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed = {seed!r} is invalid: expected an integer >= 0 or a numpy.random.SeedSequence")
    return np.random.SeedSequence(int(seed))


def spawn_seeds(seed, count):
    """Return ``count`` independent child seeds of ``seed`` (an int or a SeedSequence).

    The children are numpy SeedSequences spawned from the parent: their streams
    are independent, and the same parent always gives the same children.
    """
    count = validation.integer_at_least("count", count, 1)
    return _seed_sequence(seed).spawn(count)


def _resolve_method(potential, method):
    if method not in METHODS:
        raise ValueError(f"method = {method!r} is invalid: expected one of {METHODS}")
    if isinstance(potential, Kuramoto):
        if method == "window":
            raise ValueError("method = 'window' is invalid for the Kuramoto potential: it is not compactly supported")
        return "kuramoto"
    if isinstance(potential, PiecewiseParabolic):
        return "window" if method == "window" else "prefix"
    if method == "prefix":
        raise ValueError(
            f"method = 'prefix' is invalid for {type(potential).__name__}: prefix sums are exact only "
            "for the piecewise parabolic family; use 'window'"
        )
    if not hasattr(potential, "derivative_kernel"):
        raise ValueError(
            f"{type(potential).__name__} has no derivative_kernel: the windowed loop needs a numba-compiled "
            "function (x, parameters) -> W'(x) and kernel_parameters"
        )
    return "window"


def _derivative_kernel(potential):
    """Return the compiled W' and its parameters for the windowed loop."""
    if isinstance(potential, PiecewiseParabolic):
        parameters = np.array([potential.gamma, potential.ell, potential.core_radius,
                               potential.core_stiffness, potential.tail_stiffness])
        return _parabolic_derivative, parameters
    # NOTE: numba compiles a kernel that takes a user's function again in every
    # process, because its on-disk cache does not key on function arguments.
    return potential.derivative_kernel, np.asarray(potential.kernel_parameters, dtype=float)


def drift(model, positions, method="auto"):
    """Return the drift ``-(1/N) sum_{j != i} W'(d(X^i, X^j))`` of every particle.

    Parameters
    ----------
    model : Model
    positions : array_like, shape (N,)
        Positions in ``[0, L)``, N >= 2, in any order.
    method : {"auto", "prefix", "window"}
        ``"prefix"``: prefix sums over sorted positions (piecewise parabolic
        family only, the default for it). ``"window"``: loop over the sorted
        neighbours in range. Kuramoto always uses its two Fourier sums.

    Returns
    -------
    ndarray, shape (N,)
        The drift of each particle, in the order of ``positions``.
    """
    _check_model(model)
    x = _check_positions(model, positions)
    kind = _resolve_method(model.potential, method)
    out = np.empty_like(x)
    if kind == "kuramoto":
        _kuramoto_drift(x, out, model.potential.gamma, model.L)
        return out

    state = _SortedState(model, x)
    sorted_drift = np.empty_like(x)
    potential = model.potential
    if kind == "prefix":
        _parabolic_drift(state.extended, state.start, state.end, x.size, state.prefix, sorted_drift,
                         potential.gamma, potential.ell, potential.core_radius, potential.core_stiffness,
                         potential.tail_stiffness)
    else:
        derivative, parameters = _derivative_kernel(potential)
        _windowed_drift(state.extended, state.start, x.size, sorted_drift, potential.range, derivative,
                        parameters)
    out[state.ids] = sorted_drift
    return out


# Buckets of the counting sort: about this many particles per bucket on
# average. Fewer buckets make the counting pass cheaper and leave more
# inversions for the insertion pass.
PARTICLES_PER_BUCKET = 2


class _SortedState:
    """Sorted positions of a local-potential run and their periodic extension.

    Attributes
    ----------
    extended : ndarray, shape (2N + LOOKAHEAD,)
        ``extended[start:start + N]`` contains the sorted positions, the cells
        before them copies minus L, the cells after them copies plus L and
        ``LOOKAHEAD`` cells of +inf from the sentinel at ``end`` on. The unused
        tail is never touched.
    layout : ndarray of int64, shape (3,)
        ``(start, end, row)``: ``row`` is the row of ``id_rows`` that is current.
    id_rows : ndarray of int, shape (2, N)
        Row ``row`` contains the particle (index into the initial positions)
        in each sorted slot. The other row is scratch space for the next sort.
    """

    def __init__(self, model, x):
        n = x.size
        index_type = np.int32 if n < 2**31 else np.int64
        radius = model.potential.range
        self.id_rows = np.empty((2, n), dtype=index_type)
        self.id_rows[0] = np.argsort(x, kind="stable")
        # the sentinel's index is at most 2N, because with radius < L/2 no
        # position has a copy on both sides
        self.extended = np.empty(2 * n + LOOKAHEAD)
        self.prefix = np.empty(2 * n + 3)
        self.layout = np.zeros(3, dtype=np.int64)
        start = int(np.count_nonzero(x - model.L >= -radius))
        self.extended[start:start + n] = x[self.ids]
        self.layout[0] = start
        self.layout[1] = _fill_ghosts(self.extended, start, n, model.L, radius)
        self.z = None
        self.counts = None

    def allocate_work(self):
        """Allocate the buffers a time step needs (not needed for the drift alone)."""
        n = self.ids.size
        self.z = np.empty(n)
        self.counts = np.empty(max(1, n // PARTICLES_PER_BUCKET) + 1, dtype=self.ids.dtype)

    @property
    def ids(self):
        """The particle in each sorted slot, shape (N,)."""
        return self.id_rows[self.layout[2]]

    @property
    def start(self):
        return int(self.layout[0])

    @property
    def end(self):
        return int(self.layout[1])

    def positions(self):
        """Return the positions in particle order."""
        n = self.ids.size
        out = np.empty(n)
        out[self.ids] = self.extended[self.start:self.start + n]
        return out


# ---------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class ParticleResult:
    """Snapshots of a particle simulation and what the run cost."""

    t: np.ndarray
    """Output times reached, shape (n_out,): the requested times rounded to multiples of dt."""
    positions: np.ndarray
    """Positions in ``[0, L)`` at ``t``, shape (n_out, N), in the order of ``positions0``."""
    displacement: np.ndarray
    """Unwrapped displacement of each particle since t = 0 at ``t``, shape (n_out, N); None unless requested."""
    seed: np.random.SeedSequence
    """The seed of the run; ``simulate(..., seed=result.seed)`` repeats it."""
    dt: float
    n_steps: int
    method: str
    wall_time: float
    status: str = "finished"
    message: str = ""


def _output_steps(t_final, dt, t_eval):
    """Return the step counts of the output times, increasing, the last one the final step."""
    n_final = max(1, int(round(t_final / dt)))
    if t_eval is None:
        return np.array([n_final])
    times = np.asarray(t_eval, dtype=float)
    if times.ndim != 1 or times.size == 0:
        raise ValueError(f"t_eval has shape {times.shape}: expected a non-empty 1-D array of output times")
    if not np.all(np.isfinite(times)) or np.any(times < 0) or np.any(times > t_final * (1 + TIME_ROUNDING)):
        raise ValueError(f"t_eval is invalid: every output time must lie in [0, t_final] = [0, {t_final:g}]")
    if np.any(np.diff(times) <= 0):
        raise ValueError("t_eval is invalid: output times must be strictly increasing")
    steps = np.rint(times / dt).astype(np.int64)
    if np.any(np.diff(steps) <= 0):
        raise ValueError(f"t_eval is invalid: two output times round to the same multiple of dt = {dt:g}")
    return np.minimum(steps, n_final)


def _show_progress(progress):
    if progress is None:
        return sys.stderr.isatty()
    return bool(progress)


def simulate(model, positions0, t_final, dt, *, seed, t_eval=None, progress=None, method="auto",
             track_displacement=False):
    """Simulate the particle system by Euler–Maruyama from ``positions0``.

    Parameters
    ----------
    model : Model
        Potential, torus length L and inverse temperature beta.
    positions0 : array_like, shape (N,)
        Initial positions in ``[0, L)``, N >= 2.
    t_final : float
        Final time, > 0; the run takes ``round(t_final/dt)`` steps, or stops
        at the last output time if ``t_eval`` ends earlier.
    dt : float
        Time step, > 0, small enough that ``sqrt(2 dt/beta) + dt*max|W'|`` is
        below the interaction range.
    seed : int or numpy.random.SeedSequence
        Fixes every normal draw, so the trajectory is reproducible bit for bit
        on a given machine. Use :func:`spawn_seeds` for independent runs.
    t_eval : array_like, shape (n_out,), optional
        Increasing output times in ``[0, t_final]``, each rounded to the nearest
        multiple of dt (``result.t`` contains the rounded times). Default: only
        ``t_final``. Output times do not change the trajectory.
    progress : bool, optional
        Show a tqdm bar. Default: only when stderr is a terminal.
    method : {"auto", "prefix", "window"}
        How the drift is computed (see the module docstring).
    track_displacement : bool
        Also store the unwrapped displacement since t = 0 (one more array of
        shape (N,) during the run).

    Returns
    -------
    ParticleResult

    Raises
    ------
    ValueError
        If N < 2, positions are outside ``[0, L)`` or non-finite, ``dt`` is not
        a finite positive number or too large for the range, ``t_final`` is not
        a finite positive number, ``t_eval`` is not increasing inside
        ``[0, t_final]``, or ``seed`` is neither an integer >= 0 nor a SeedSequence.
    """
    _check_model(model)
    x0 = _check_positions(model, positions0)
    dt = _check_time_step(model, dt)
    t_final = validation.positive("t_final", t_final)
    sequence = _seed_sequence(seed)
    kind = _resolve_method(model.potential, method)
    output_steps = _output_steps(t_final, dt, t_eval)

    n = x0.size
    potential = model.potential
    scale = math.sqrt(2.0 * dt / model.beta)
    generator = np.random.Generator(np.random.PCG64(sequence))
    snapshots = np.empty((output_steps.size, n))
    displacements = np.empty((output_steps.size, n)) if track_displacement else None
    _logger.info("simulating N = %d particles for %d steps of dt = %g (%s)", n, output_steps[-1], dt, kind)

    # the state: positions in sorted order with the particle identities, or
    # positions in particle order for Kuramoto
    if kind == "kuramoto":
        x = x0.copy()
        work = np.empty(n)
    else:
        state = _SortedState(model, x0)
        state.allocate_work()
    if kind == "window":
        derivative, parameters = _derivative_kernel(potential)
    unwrapped_shift = np.zeros(n) if track_displacement else None

    def current_positions():
        return x.copy() if kind == "kuramoto" else state.positions()

    def advance(noise):
        if kind == "kuramoto":
            _advance_kuramoto(x, noise, dt, scale, model.L, potential.gamma, work)
        elif kind == "prefix":
            _advance_parabolic(state.extended, state.layout, state.id_rows, noise, dt, scale, model.L,
                               potential.gamma, potential.ell, potential.core_radius, potential.core_stiffness,
                               potential.tail_stiffness, state.prefix, state.z, state.counts)
        else:
            _advance_windowed(state.extended, state.layout, state.id_rows, noise, dt, scale, model.L,
                              potential.range, derivative, parameters, state.z, state.counts)

    show = _show_progress(progress)
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(output_steps[-1]), unit="step", desc=f"N = {n}")

    # The time loop draws the noise of a batch of steps in one call. The
    # generator's stream does not depend on how it is split into calls.
    start = time.perf_counter()
    steps_per_batch = max(1, NOISE_BUFFER_SIZE // n)
    noise_buffer = np.empty((min(steps_per_batch, int(output_steps[-1])), n))
    done = 0
    previous = x0.copy() if track_displacement else None
    for index, target in enumerate(output_steps):
        while done < target:
            batch = min(steps_per_batch, int(target - done))
            if track_displacement:
                # the unwrapped displacement needs the positions after each step
                batch = 1
            noise = noise_buffer[:batch]
            generator.standard_normal(out=noise)
            advance(noise)
            done += batch
            if track_displacement:
                now = current_positions()
                jump = now - previous
                unwrapped_shift += jump - model.L * np.rint(jump / model.L)
                previous = now
            if bar is not None:
                bar.update(batch)
        snapshots[index] = current_positions()
        if track_displacement:
            displacements[index] = unwrapped_shift
    wall_time = time.perf_counter() - start
    if bar is not None:
        bar.close()

    return ParticleResult(
        t=output_steps * dt,
        positions=snapshots,
        displacement=displacements,
        seed=sequence,
        dt=dt,
        n_steps=int(output_steps[-1]),
        method=kind,
        wall_time=wall_time,
        message=f"{int(output_steps[-1])} steps of dt = {dt:g} with N = {n}",
    )


def uniform_positions(model, N, seed):
    """Return N positions drawn uniformly on ``[0, L)`` from ``seed``."""
    _check_model(model)
    N = validation.integer_at_least("N", N, 2)
    generator = np.random.Generator(np.random.PCG64(_seed_sequence(seed)))
    return generator.uniform(0.0, model.L, N)


def sample_density(grid, rho, N, seed):
    """Return N positions drawn from the piecewise constant density ``rho`` on ``grid``.

    Cells are chosen with probabilities ``rho*dx`` and positions are uniform
    inside the chosen cell.
    """
    N = validation.integer_at_least("N", N, 2)
    rho = grid.normalize(rho)
    generator = np.random.Generator(np.random.PCG64(_seed_sequence(seed)))
    cells = generator.choice(grid.M, size=N, p=rho * grid.dx)
    positions = (cells + generator.uniform(0.0, 1.0, N)) * grid.dx
    return np.where(positions >= grid.L, 0.0, positions)
