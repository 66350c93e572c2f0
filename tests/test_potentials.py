import numpy as np
import pytest

import mvlib
from mvlib.potentials import fourier_by_quadrature

L = 1.0
POTENTIALS = [
    mvlib.HegselmannKrause(gamma=3.0, ell=0.1),
    mvlib.PiecewiseParabolic(gamma=2.0, ell=0.2, core_radius=0.3, core_stiffness=4.0, tail_stiffness=1.0),
    mvlib.PiecewiseParabolic(gamma=1.0, ell=0.15, core_radius=0.6, core_stiffness=-0.5, tail_stiffness=2.0),
    mvlib.Kuramoto(gamma=1.5),
]


@pytest.mark.parametrize("potential", POTENTIALS, ids=repr)
def test_fourier_matches_quadrature(potential):
    q = 2 * np.pi * np.arange(0, 120) / L
    closed = potential.fourier(q)
    reference = fourier_by_quadrature(potential, q, L)
    # the quadrature is accurate to about 1e-12 relative; round-off is 1e-16
    assert np.max(np.abs(closed - reference)) <= 1e-11 * np.max(np.abs(closed))


@pytest.mark.parametrize("potential", POTENTIALS, ids=repr)
def test_fourier_small_wavenumbers_continuous(potential):
    # the Taylor branch below q*ell = 0.1 must join the closed form smoothly
    q = np.linspace(0.0, 3.0 / potential.range, 4001)
    values = potential.fourier(q)
    assert np.max(np.abs(np.diff(values, 2))) < 1e-6 * np.max(np.abs(values))


def away_from_kinks(potential, x, distance):
    """Return a mask of the points farther than ``distance`` from every kink of W."""
    kinks = mvlib.potentials.kinks(potential)
    if kinks.size == 0:
        return np.ones(x.shape, dtype=bool)
    return np.all(np.abs(x[:, None] - kinks[None, :]) > distance, axis=1)


@pytest.mark.parametrize("potential", POTENTIALS, ids=repr)
def test_derivative_matches_finite_difference(potential):
    x = np.linspace(-0.45, 0.45, 777)
    h = 1e-6
    away = away_from_kinks(potential, x, 10 * h)
    central = (potential.value(x + h) - potential.value(x - h)) / (2 * h)
    assert np.allclose(potential.derivative(x)[away], central[away], rtol=1e-6, atol=1e-6 * potential.gamma)


@pytest.mark.parametrize("potential", POTENTIALS, ids=repr)
def test_antiderivatives_differentiate_back(potential):
    x = np.linspace(-0.45, 0.45, 501)
    h = 1e-5
    first = (potential.antiderivative(x + h) - potential.antiderivative(x - h)) / (2 * h)
    second = (potential.second_antiderivative(x + h) - potential.second_antiderivative(x - h)) / (2 * h)
    # W' jumps at the kinks, so a central difference of the antiderivative is
    # only second-order accurate at least h away from them
    away = away_from_kinks(potential, x, 2 * h)
    assert np.allclose(first[away], potential.value(x)[away], atol=1e-8 * abs(potential.gamma))
    assert np.allclose(second, potential.antiderivative(x), atol=1e-8 * abs(potential.gamma))


@pytest.mark.parametrize("potential", POTENTIALS, ids=repr)
def test_potential_is_even(potential):
    x = np.linspace(0, 0.5, 301)
    assert np.array_equal(potential.value(x), potential.value(-x))
    assert np.array_equal(potential.derivative(x), -potential.derivative(-x))


def test_equal_stiffnesses_are_hegselmann_krause_exactly():
    hk = mvlib.HegselmannKrause(gamma=7.0, ell=0.13)
    x = np.linspace(-0.5, 0.5, 10001)
    q = np.linspace(0, 500, 1001)
    for radius in (0.2, 0.5, 0.9):
        pp = mvlib.PiecewiseParabolic(7.0, 0.13, core_radius=radius, core_stiffness=1.0, tail_stiffness=1.0)
        assert np.array_equal(pp.value(x), hk.value(x))
        assert np.array_equal(pp.derivative(x), hk.derivative(x))
        assert np.array_equal(pp.fourier(q), hk.fourier(q))


def test_hegselmann_krause_closed_forms():
    hk = mvlib.HegselmannKrause(gamma=2.0, ell=0.1)
    assert hk.value(0.0) == pytest.approx(-2.0 * 0.1 / 2)
    assert hk.fourier(0.0) == pytest.approx(-2.0 / 3 * 2.0 * 0.1**2, rel=1e-15)
    x = np.array([-0.1, -0.05, 0.0, 0.07, 0.1])
    assert np.allclose(hk.derivative(x), 2.0 * x / 0.1, rtol=1e-15)
    assert hk.derivative(0.1000001) == 0.0
    assert hk.value(0.2) == 0.0


def test_derivative_variation_bounds_fourier():
    # the bound integrates by parts over one period, so it holds at the
    # torus wavenumbers q_k, where the boundary terms of periodic W vanish
    for potential in POTENTIALS:
        q = 2 * np.pi * np.arange(1, 5000) / L
        assert np.all(np.abs(potential.fourier(q)) <= potential.derivative_variation / q**2 * (1 + 1e-12))


@pytest.mark.parametrize(
    "arguments, name",
    [
        ({"gamma": np.nan, "ell": 0.1}, "gamma"),
        ({"gamma": 1.0, "ell": 0.0}, "ell"),
        ({"gamma": 1.0, "ell": -0.1}, "ell"),
        ({"gamma": 1.0, "ell": np.inf}, "ell"),
        ({"gamma": "1", "ell": 0.1}, "gamma"),
    ],
)
def test_hegselmann_krause_rejects_invalid(arguments, name):
    with pytest.raises(ValueError, match=name):
        mvlib.HegselmannKrause(**arguments)


@pytest.mark.parametrize("radius", [0.0, 1.0, 1.5, -0.2])
def test_piecewise_parabolic_rejects_core_radius(radius):
    with pytest.raises(ValueError, match=r"core_radius .* must lie in \(0, 1\)"):
        mvlib.PiecewiseParabolic(1.0, 0.1, core_radius=radius)
