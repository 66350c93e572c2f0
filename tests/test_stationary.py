"""Tests of mvlib.stationary: fixed-point residuals, branches, stability and thresholds."""

import math

import numpy as np
import pytest

import mvlib
from mvlib import stationary

# Round-off level of the relative residual: psi is O(10) here, and an FFT
# convolution of M = 256 values loses a few ulps of that. The solver is asked
# for this tolerance, ten times tighter than its default.
ROUND_OFF = 1e-12


def hk_model(ell=0.1, gamma=1.0, beta=1.0):
    return mvlib.Model(mvlib.HegselmannKrause(gamma, ell), L=1.0, beta=beta)


def kuramoto_model(gamma=1.0):
    return mvlib.Model(mvlib.Kuramoto(gamma), L=1.0, beta=1.0)


def fixed_point_error(model, grid, rho):
    """Max relative difference between rho and exp(-beta W*rho)/Z, computed independently of the solver."""
    potential = model.beta * grid.convolution(model.potential)(rho)
    gibbs = np.exp(-(potential - potential.min()))
    gibbs /= grid.integrate(gibbs)
    return float(np.max(np.abs(rho - gibbs) / gibbs))


@pytest.fixture(scope="module")
def hk_transition():
    """The single-cluster branch of Hegselmann–Krause, ell = 0.1, M = 256."""
    return stationary.transition(hk_model(), mvlib.Grid(1.0, 256), max_step=0.05)


@pytest.fixture(scope="module")
def kuramoto_branch():
    model = kuramoto_model()
    grid = mvlib.Grid(1.0, 128)
    sharp = mvlib.gamma_sharp(model)
    start = stationary.cluster_guess(grid, [0.5], [1.0], 0.1)
    return stationary.continuation(model, grid, start, 2.0 * sharp, 0.5 * sharp, max_step=0.05), sharp


def test_uniform_found_below_gamma_sharp(rng):
    model = hk_model()
    grid = mvlib.Grid(1.0, 256)
    model = model.with_gamma(0.8 * mvlib.gamma_sharp(model))
    guess = grid.uniform * (1.0 + 1e-2 * rng.standard_normal(grid.M))
    state = stationary.solve(model, grid, guess, tol=ROUND_OFF)
    assert state.converged
    assert state.residual <= ROUND_OFF
    # the uniform state is exact: every cell 1/L to round-off
    assert np.max(np.abs(state.rho - 1.0)) <= 1e-12
    assert state.free_energy == pytest.approx(mvlib.uniform_free_energy(model), abs=1e-12)


def test_cluster_residual_round_off():
    model = hk_model()
    grid = mvlib.Grid(1.0, 256)
    gamma = 1.2 * mvlib.gamma_sharp(model)
    model = model.with_gamma(gamma)
    guess = stationary.cluster_guess(grid, [0.3], [1.0], math.sqrt(0.1 / gamma))
    state = stationary.solve(model, grid, guess, tol=ROUND_OFF)
    assert state.converged
    assert state.residual <= ROUND_OFF
    assert fixed_point_error(model, grid, state.rho) <= 1e-10
    assert grid.integrate(state.rho) == pytest.approx(1.0, abs=1e-13)
    # a concentrated cluster: its standard deviation is ~ sqrt(ell/(beta gamma)) = 0.023,
    # so nearly all the mass lies within ell = 0.1 of its peak
    peak = grid.x[np.argmax(state.rho)]
    near = np.abs(grid.minimal_image(grid.x - peak)) < 0.1
    assert grid.integrate(state.rho[near]) > 0.99


def test_cluster_translation_invariant():
    model = hk_model(gamma=200.0)
    grid = mvlib.Grid(1.0, 256)
    energies = []
    for centre in (0.3, 0.71):
        guess = stationary.cluster_guess(grid, [centre], [1.0], 0.02)
        energies.append(stationary.solve(model, grid, guess).free_energy)
    # translating a cluster by any distance changes F by the grid's Peierls barrier only
    assert energies[0] == pytest.approx(energies[1], abs=1e-9)


def test_two_equal_clusters_converge():
    model = hk_model(gamma=400.0)
    grid = mvlib.Grid(1.0, 256)
    guess = stationary.cluster_guess(grid, [0.25, 0.75], [1.0, 1.0], 0.015)
    state = stationary.solve(model, grid, guess)
    assert state.converged
    assert fixed_point_error(model, grid, state.rho) <= 1e-10
    assert grid.integrate(state.rho[grid.x < 0.5]) == pytest.approx(0.5, abs=1e-9)


def test_solve_reports_nonconvergence():
    model = hk_model(gamma=300.0)
    grid = mvlib.Grid(1.0, 256)
    guess = stationary.cluster_guess(grid, [0.5], [1.0], 0.02)
    state = stationary.solve(model, grid, guess, max_iter=1, tol=1e-14)
    assert not state.converged
    assert "not converged" in state.message


def test_cluster_guess_mass_and_centres():
    grid = mvlib.Grid(1.0, 200)
    rho = stationary.cluster_guess(grid, [0.0, 0.6], [1.0, 3.0], 0.03)
    assert grid.integrate(rho) == pytest.approx(1.0, abs=1e-14)
    # the bump at 0 wraps around the torus and contains a quarter of the mass
    near_zero = np.abs(grid.minimal_image(grid.x)) < 0.2
    assert grid.integrate(rho[near_zero]) == pytest.approx(0.25, abs=1e-6)


def test_order_parameter_limits():
    grid = mvlib.Grid(1.0, 256)
    assert stationary.order_parameter(grid, grid.uniform) == pytest.approx(0.0, abs=1e-14)
    narrow = stationary.cluster_guess(grid, [0.4], [1.0], 1e-3)
    assert stationary.order_parameter(grid, narrow) == pytest.approx(1.0, abs=1e-3)


def test_uniform_rates_closed_form():
    model = hk_model(gamma=120.0)
    grid = mvlib.Grid(1.0, 128)
    rates = stationary.stability(model, grid, grid.uniform)

    # for rho = 1/L the discrete operator is diagonal in Fourier modes:
    # rate_k = -(4 sin^2(pi k/M)/dx^2) (1/beta + symbol_k/L), each k = 1..M/2-1 twice, k = M/2 once
    symbol = grid.convolution(model.potential).symbol
    k = np.arange(1, grid.M // 2 + 1)
    modes = -(4.0 * np.sin(np.pi * k / grid.M) ** 2 / grid.dx**2) * (1.0 / model.beta + symbol[k] / model.L)
    expected = np.sort(np.concatenate([modes, modes[:-1]]))[::-1]
    assert rates.shape == (grid.M - 1,)
    assert np.allclose(rates, expected, rtol=1e-9, atol=1e-9 * np.max(np.abs(expected)))
    # and the first mode approaches the continuum rate sigma_1 (second order in dx)
    assert rates[0] == pytest.approx(mvlib.growth_rates(model, 1), rel=1e-2)


def test_uniform_stability_flips_at_gamma_sharp():
    model = hk_model()
    grid = mvlib.Grid(1.0, 128)
    sharp = mvlib.gamma_sharp(model)
    # the grid's gamma_sharp differs from the continuum one by O((dx/ell)^2) ~ 1e-3
    assert stationary.is_stable(model.with_gamma(0.98 * sharp), grid, grid.uniform)
    assert not stationary.is_stable(model.with_gamma(1.02 * sharp), grid, grid.uniform)


def test_kuramoto_branch_point_is_gamma_sharp(kuramoto_branch):
    branch, sharp = kuramoto_branch
    assert branch.status == "uniform"
    # the amplitude goes to zero at the end, and the end is gamma_sharp
    # (gamma_sharp = 2/beta for Kuramoto with L = 1); the grid shifts it by (pi/M)^2/6 ~ 1e-4
    assert sharp == pytest.approx(2.0, rel=1e-12)
    assert branch.order[-1] < 2e-3
    assert branch.gamma[-1] == pytest.approx(sharp, rel=1e-3)
    # supercritical: gamma decreases monotonically towards the branch point
    assert np.all(np.diff(branch.gamma) < 0)
    # and order**2 is linear in gamma - gamma_sharp near it
    near = branch.order < 0.2
    slope, intercept = np.polyfit(branch.gamma[near], branch.order[near] ** 2, 1)
    assert -intercept / slope == pytest.approx(sharp, rel=1e-3)


def test_kuramoto_branch_stable(kuramoto_branch):
    branch, _ = kuramoto_branch
    assert np.all(branch.stable)
    assert np.max(branch.residual) <= 1e-10


def test_kuramoto_gamma_c_equals_gamma_sharp():
    model = kuramoto_model()
    result = stationary.transition(model, mvlib.Grid(1.0, 128), max_step=0.05)
    assert result.continuous
    assert result.n_crossings == 0
    assert math.isnan(result.gamma_fold)
    assert result.gamma_c == pytest.approx(result.gamma_sharp, rel=1e-3)


def test_hk_thresholds_ordered(hk_transition):
    result = hk_transition
    assert not result.continuous
    assert result.gamma_fold < result.gamma_c
    assert result.gamma_c < result.gamma_sharp
    # the unstable part of the branch bifurcates from the uniform state at gamma_sharp
    assert result.gamma_branch == pytest.approx(result.gamma_sharp, rel=1e-3)


def test_hk_free_energy_crosses_once(hk_transition):
    assert hk_transition.n_crossings == 1


def test_hk_gamma_c_free_energies_equal(hk_transition):
    model = hk_model(gamma=hk_transition.gamma_c)
    grid = mvlib.Grid(1.0, 256)
    guess = stationary.cluster_guess(grid, [0.5], [1.0], math.sqrt(0.1 / model.gamma))
    state = stationary.solve(model, grid, guess)
    assert state.converged
    assert state.free_energy == pytest.approx(mvlib.uniform_free_energy(model), abs=1e-8)


def test_hk_branch_stable_above_fold(hk_transition):
    branch = hk_transition.branch
    fold = int(np.argmin(branch.gamma))
    # before the fold the cluster is stable, after it (the saddle branch) unstable,
    # except for the last points, whose positive rate is O(order**2) and falls in the neutral band
    assert np.all(branch.stable[:fold])
    assert not np.any(branch.stable[fold + 1 : fold + 5])
    assert np.all(branch.max_rate[fold + 1 : -3] > 0)


def test_gamma_c_refines(hk_transition):
    # the cluster at gamma_c has a standard deviation ~ sqrt(ell/(beta gamma)) = 0.03, about 8 cells
    # at M = 256: doubling M moves gamma_c by less than 1e-3 relative
    fine = stationary.gamma_c(hk_model(), mvlib.Grid(1.0, 512), max_step=0.05, compute_stability=False)
    assert fine == pytest.approx(hk_transition.gamma_c, rel=1e-3)


def test_grid_mismatch_rejected():
    model = mvlib.Model(mvlib.HegselmannKrause(100.0, 0.1), L=2.0)
    grid = mvlib.Grid(1.0, 128)
    with pytest.raises(ValueError, match="grid.L"):
        stationary.solve(model, grid, grid.uniform)
    with pytest.raises(ValueError, match="grid.L"):
        stationary.stability(model, grid, grid.uniform)
    with pytest.raises(ValueError, match="grid.L"):
        stationary.continuation(model, grid, grid.uniform, 100.0, 50.0)


@pytest.mark.parametrize(
    "rho, pattern",
    [
        (np.full(128, -1.0), "negative"),
        (np.zeros(128), "zero mass"),
        (np.full(128, np.nan), "non-finite"),
        (np.ones(64), "shape"),
    ],
)
def test_invalid_density_rejected(rho, pattern):
    model = hk_model(gamma=100.0)
    grid = mvlib.Grid(1.0, 128)
    with pytest.raises(ValueError, match=pattern):
        stationary.solve(model, grid, rho)


def test_stability_rejects_zero_cells():
    model = hk_model(gamma=100.0)
    grid = mvlib.Grid(1.0, 128)
    rho = grid.uniform.copy()
    rho[3] = 0.0
    with pytest.raises(ValueError, match="rho > 0"):
        stationary.stability(model, grid, rho)


@pytest.mark.parametrize(
    "options, pattern",
    [
        ({"gamma_start": -1.0}, "gamma_start"),
        ({"gamma_stop": 0.0}, "gamma_stop"),
        ({"gamma_stop": 100.0}, "must differ"),
        ({"step": 0.5}, "step"),
        ({"max_points": 1}, "max_points"),
        ({"min_order": 1.5}, "min_order"),
    ],
)
def test_continuation_bad_input(options, pattern):
    model = hk_model()
    grid = mvlib.Grid(1.0, 128)
    arguments = {"gamma_start": 100.0, "gamma_stop": 50.0}
    arguments.update(options)
    start, stop = arguments.pop("gamma_start"), arguments.pop("gamma_stop")
    with pytest.raises(ValueError, match=pattern):
        stationary.continuation(model, grid, grid.uniform, start, stop, **arguments)


def test_continuation_odd_grid_rejected():
    model = hk_model()
    grid = mvlib.Grid(1.0, 129)
    with pytest.raises(ValueError, match="even number"):
        stationary.continuation(model, grid, grid.uniform, 100.0, 50.0)


@pytest.mark.parametrize(
    "options, pattern",
    [({"tol": 0.0}, "tol"), ({"tol": 2.0}, "tol"), ({"max_iter": 0}, "max_iter")],
)
def test_solve_bad_options(options, pattern):
    model = hk_model(gamma=100.0)
    grid = mvlib.Grid(1.0, 128)
    with pytest.raises(ValueError, match=pattern):
        stationary.solve(model, grid, grid.uniform, **options)


@pytest.mark.parametrize(
    "centres, masses, width, pattern",
    [
        ([1.2], [1.0], 0.1, "centres"),
        ([0.5], [-1.0], 0.1, "masses"),
        ([0.5], [1.0], 0.0, "width"),
        ([0.2, 0.5], [1.0], 0.1, "shapes"),
    ],
)
def test_cluster_guess_bad_input(centres, masses, width, pattern):
    grid = mvlib.Grid(1.0, 128)
    with pytest.raises(ValueError, match=pattern):
        stationary.cluster_guess(grid, centres, masses, width)


def test_transition_bad_factors():
    with pytest.raises(ValueError, match="start_factor"):
        stationary.transition(hk_model(), mvlib.Grid(1.0, 128), start_factor=0.1, stop_factor=0.5)
