r"""Interaction potentials W on the torus.

========================  =====================================================
:class:`HegselmannKrause`  ``W(x) = gamma*ell*w(x/ell)``, ``w(s) = (s**2 - 1)/2`` for ``|s| <= 1``
:class:`PiecewiseParabolic`  a stiffer (or softer) parabolic core inside the same range
:class:`Kuramoto`          the non-local control ``W(x) = -gamma*cos(2*pi*x/L)``
========================  =====================================================

All potentials are even. A *local* potential vanishes for ``|x| > ell`` with
``ell < L/2``, so its periodic copies on the torus never overlap and its value
at a minimal-image displacement is its value on the real line. Every method
accepts scalars or arrays and works elementwise.

The closed forms of the Fourier coefficient

.. math:: \hat W(q) = \int_{-L/2}^{L/2} W(x) \cos(q x)\,dx

follow from :math:`\int_{-c}^{c} \tfrac12 (s^2 - c^2)\cos(\kappa s)\,ds = c^3 P(\kappa c)`
with :math:`P(z) = 2 (z\cos z - \sin z)/z^3`, and are checked against quadrature
in ``tests/test_potentials.py``.
"""

import dataclasses
import math

import numpy as np

from . import validation

# Below this argument P(z) is evaluated by its Taylor series: the closed form
# loses about eps/z**2 of relative accuracy to cancellation near z = 0.
_SERIES_BELOW = 0.1


def _bump_profile(x, c):
    """Return h_c(x) = (x**2 - c**2)/2 for |x| <= c, and 0 beyond."""
    x = np.asarray(x, dtype=float)
    return np.where(np.abs(x) <= c, 0.5 * (x * x - c * c), 0.0)


def _bump_slope(x, c):
    """Return h_c'(x) = x for |x| <= c (closed interval), and 0 beyond."""
    x = np.asarray(x, dtype=float)
    return np.where(np.abs(x) <= c, x, 0.0)


def _bump_antiderivative(x, c):
    """Return the first antiderivative of h_c that vanishes at 0."""
    x = np.asarray(x, dtype=float)
    inner = x**3 / 6.0 - 0.5 * c * c * x
    return np.where(np.abs(x) <= c, inner, -np.sign(x) * c**3 / 3.0)


def _bump_second_antiderivative(x, c):
    """Return the even second antiderivative of h_c that vanishes at 0."""
    x = np.asarray(x, dtype=float)
    inner = x**4 / 24.0 - 0.25 * c * c * x * x
    outer = -(c**4) * 5.0 / 24.0 - (c**3 / 3.0) * (np.abs(x) - c)
    return np.where(np.abs(x) <= c, inner, outer)


def _p_function(z):
    """Return P(z) = 2 (z cos z - sin z) / z**3, accurate down to z = 0."""
    z = np.abs(np.asarray(z, dtype=float))
    small = z < _SERIES_BELOW
    safe = np.where(small, 1.0, z)
    closed = 2.0 * (safe * np.cos(safe) - np.sin(safe)) / safe**3
    z2 = z * z
    series = -2.0 / 3.0 + z2 / 15.0 - z2 * z2 / 420.0 + z2**3 / 22680.0
    return np.where(small, series, closed)


def _as_output(array):
    return float(array) if np.ndim(array) == 0 else array


class Potential:
    """Common interface of the interaction potentials.

    Subclasses define :meth:`value`, :meth:`derivative`, :meth:`fourier`,
    the antiderivatives used to build averaged convolution kernels, and the
    attributes ``range`` (the radius of the support, or ``L/2`` for a
    non-local potential), ``is_local`` and ``derivative_variation`` (the total
    variation of W' over one period, which bounds ``|W_hat(q)| <= TV/q**2``).
    """

    is_local = True

    def __call__(self, x):
        return self.value(x)

    def with_gamma(self, gamma):
        """Return a copy of this potential with interaction strength ``gamma``."""
        return dataclasses.replace(self, gamma=gamma)


@dataclasses.dataclass(frozen=True)
class PiecewiseParabolic(Potential):
    r"""Piecewise parabolic potential ``W(x) = gamma*ell*w(x/ell)``.

    With ``a = core_radius``, ``alpha = core_stiffness``, ``b = tail_stiffness``:

    .. math::
        w(s) = \begin{cases}
        \alpha (s^2 - a^2)/2 + b (a^2 - 1)/2 & |s| \le a,\\
        b (s^2 - 1)/2 & a < |s| \le 1,\\
        0 & |s| > 1,
        \end{cases}

    which is ``b*h_1(s) + (alpha - b)*h_a(s)`` with ``h_c(s) = (s**2 - c**2)/2``
    on ``|s| <= c``. With ``alpha == b == 1`` it is exactly Hegselmann–Krause.

    Parameters
    ----------
    gamma : float
        Interaction strength; ``gamma > 0`` is attractive.
    ell : float
        Interaction range, > 0.
    core_radius : float
        Radius ``a`` of the core in units of ``ell``, in (0, 1).
    core_stiffness, tail_stiffness : float
        Curvatures ``alpha`` and ``b`` of the core and of the tail: any finite
        numbers. With ``gamma > 0``, a positive stiffness attracts in that
        zone and a negative one repels, which gives potentials outside the
        attractive class (a repulsive core or shoulder).
    """

    gamma: float
    ell: float
    core_radius: float = 0.5
    core_stiffness: float = 1.0
    tail_stiffness: float = 1.0

    def __post_init__(self):
        set_field = object.__setattr__
        set_field(self, "gamma", validation.real_number("gamma", self.gamma))
        set_field(self, "ell", validation.positive("ell", self.ell))
        set_field(self, "core_radius", validation.in_interval("core_radius", self.core_radius, 0.0, 1.0))
        set_field(self, "core_stiffness", validation.real_number("core_stiffness", self.core_stiffness))
        set_field(self, "tail_stiffness", validation.real_number("tail_stiffness", self.tail_stiffness))

    @property
    def range(self):
        return self.ell

    @property
    def _core_excess(self):
        return self.core_stiffness - self.tail_stiffness

    def _combine(self, profile, x, power):
        """Return gamma*ell**power * (b*profile(s, 1) + (alpha - b)*profile(s, a))."""
        s = np.asarray(x, dtype=float) / self.ell
        shape = self.tail_stiffness * profile(s, 1.0) + self._core_excess * profile(s, self.core_radius)
        return _as_output(self.gamma * self.ell**power * shape)

    def value(self, x):
        """Return W(x) at displacements ``x`` with ``|x| < L/2``."""
        return self._combine(_bump_profile, x, 1)

    def derivative(self, x):
        """Return W'(x); at the kinks ``|x| = ell`` and ``|x| = a*ell`` the inner branch is used."""
        return self._combine(_bump_slope, x, 0)

    def antiderivative(self, x):
        """Return the odd antiderivative of W on the real line."""
        return self._combine(_bump_antiderivative, x, 2)

    def second_antiderivative(self, x):
        """Return the even second antiderivative of W on the real line."""
        return self._combine(_bump_second_antiderivative, x, 3)

    def fourier(self, q):
        """Return W_hat(q) = integral of W(x) cos(q x) over one period."""
        kappa = np.asarray(q, dtype=float) * self.ell
        a = self.core_radius
        shape = self.tail_stiffness * _p_function(kappa) + self._core_excess * a**3 * _p_function(kappa * a)
        return _as_output(self.gamma * self.ell**2 * shape)

    @property
    def derivative_variation(self):
        a, alpha, b = self.core_radius, self.core_stiffness, self.tail_stiffness
        per_side = abs(b) * (1.0 - a) + abs(alpha) * a + abs(alpha - b) * a + abs(b)
        return 2.0 * abs(self.gamma) * per_side


@dataclasses.dataclass(frozen=True)
class HegselmannKrause(PiecewiseParabolic):
    r"""Hegselmann–Krause potential ``W(x) = gamma*ell*(s**2 - 1)/2``, ``s = x/ell``, for ``|s| <= 1``.

    Inside its range the force is linear, ``W'(x) = gamma*x/ell``, and
    ``W(0) = -gamma*ell/2``. Its Fourier coefficient is
    ``W_hat(q) = 2*gamma*ell**2*(a*cos(a) - sin(a))/a**3`` with ``a = q*ell``.
    It is the piecewise parabolic potential with equal stiffnesses 1; the core
    fields are fixed and not arguments.
    """

    gamma: float
    ell: float
    core_radius: float = dataclasses.field(default=0.5, init=False, repr=False)
    core_stiffness: float = dataclasses.field(default=1.0, init=False, repr=False)
    tail_stiffness: float = dataclasses.field(default=1.0, init=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Kuramoto(Potential):
    """Noisy Kuramoto interaction ``W(x) = -gamma*cos(2*pi*x/L)``, the non-local control.

    Unlike the local potentials it depends on the torus length, so it carries
    ``L`` (default 1, matching ``Model``'s default); a :class:`~mvlib.Model`
    rejects a Kuramoto potential whose ``L`` differs from its own.
    """

    gamma: float
    L: float = 1.0
    is_local = False

    def __post_init__(self):
        object.__setattr__(self, "gamma", validation.real_number("gamma", self.gamma))
        object.__setattr__(self, "L", validation.positive("L", self.L))

    @property
    def _wavenumber(self):
        return 2.0 * math.pi / self.L

    @property
    def range(self):
        return 0.5 * self.L

    def value(self, x):
        """Return W(x); periodic with period L."""
        return _as_output(-self.gamma * np.cos(self._wavenumber * np.asarray(x, dtype=float)))

    def derivative(self, x):
        """Return W'(x)."""
        p = self._wavenumber
        return _as_output(self.gamma * p * np.sin(p * np.asarray(x, dtype=float)))

    def antiderivative(self, x):
        """Return the odd antiderivative of W (periodic, since W has zero mean)."""
        p = self._wavenumber
        return _as_output(-self.gamma * np.sin(p * np.asarray(x, dtype=float)) / p)

    def second_antiderivative(self, x):
        """Return the even periodic second antiderivative of W."""
        p = self._wavenumber
        return _as_output(self.gamma * np.cos(p * np.asarray(x, dtype=float)) / p**2)

    def fourier(self, q):
        """Return W_hat(q): -gamma*L/2 at q = +-2*pi/L, 0 at the other q_k, smooth in between."""
        q = np.asarray(q, dtype=float)
        p, half = self._wavenumber, 0.5 * self.L
        # integral of -gamma cos(p x) cos(q x) over [-L/2, L/2], written with
        # sinc so that q = +-p needs no special case
        minus = half * np.sinc((q - p) * half / math.pi)
        plus = half * np.sinc((q + p) * half / math.pi)
        return _as_output(-self.gamma * (minus + plus))

    @property
    def derivative_variation(self):
        return 4.0 * abs(self.gamma) * self._wavenumber


def kinks(potential):
    """Return the points in ``[-L/2, L/2]`` where W or W' is not smooth (breakpoints for quadrature)."""
    if not potential.is_local:
        return np.array([])
    inner = potential.core_radius * potential.ell
    return np.array([-potential.ell, -inner, 0.0, inner, potential.ell])


def fourier_by_quadrature(potential, q, L):
    """Return W_hat(q) by adaptive quadrature, to check the closed forms.

    Integrates W against ``cos(q x)`` over ``[-L/2, L/2]`` with QUADPACK's
    routine for oscillatory weights (scipy's ``quad(weight="cos")``), split at
    the kinks of W so that each piece is smooth. The absolute tolerance is
    1e-14 times the largest value of |W| on the torus times L.
    """
    from scipy.integrate import quad

    q = np.atleast_1d(np.asarray(q, dtype=float))
    half = 0.5 * L
    edges = np.unique(np.concatenate([[-half, half], kinks(potential)]))
    scale = np.max(np.abs(potential.value(np.linspace(-half, half, 1001)))) * L
    values = np.empty_like(q)
    for index, wavenumber in enumerate(q):
        total = 0.0
        for left, right in zip(edges[:-1], edges[1:]):
            piece, _ = quad(potential.value, left, right, weight="cos", wvar=wavenumber,
                            limit=200, epsabs=1e-14 * scale, epsrel=1e-12)
            total += piece
        values[index] = total
    return values
