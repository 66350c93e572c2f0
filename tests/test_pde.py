"""Tests of the implicit finite-volume solver of the mean-field PDE."""

import math

import numpy as np
import pytest

import mvlib
from mvlib import pde

ELL = 0.1


def hk_model(gamma, ell=ELL, beta=1.0):
    return mvlib.Model(mvlib.HegselmannKrause(gamma, ell), L=1.0, beta=beta)


def perturbed_uniform(grid, amplitude=0.05, modes=(1, 2, 3, 5)):
    """Return the uniform density plus a fixed sum of cosines, positive and of mass 1."""
    x = grid.x
    rho = np.ones(grid.M)
    for k in modes:
        rho += amplitude * np.cos(2 * np.pi * k * x / grid.L + 0.3 * k)
    return grid.normalize(rho)


def two_clusters(grid, gamma, lighter=0.45, ell=ELL):
    """Return Gaussian clusters at 0.25 and 0.75 with the variances ell/(gamma m)."""
    rho = np.zeros(grid.M)
    for centre, mass in ((0.25, lighter), (0.75, 1 - lighter)):
        sigma = math.sqrt(ell / (gamma * mass))
        offset = grid.minimal_image(grid.x - centre)
        rho += mass * np.exp(-0.5 * (offset / sigma) ** 2) / sigma
    return grid.normalize(rho)


# ---------------------------------------------------------- Bernoulli ----


def test_bernoulli_at_zero():
    assert pde.bernoulli(0.0) == 1.0
    assert pde.bernoulli_derivative(0.0) == -0.5


def test_bernoulli_matches_closed_form():
    # away from 0 and from overflow, z/expm1(z) is accurate to a few ulps
    for z in np.concatenate([-np.logspace(-2, 2.5, 40), np.logspace(-2, 2.5, 40)]):
        assert pde.bernoulli(z) == pytest.approx(z / math.expm1(z), rel=1e-14)


def test_bernoulli_series_is_continuous():
    # the series and the closed form meet at the switch point to round-off
    edge = pde.BERNOULLI_SERIES_BELOW
    for z in (edge * (1 - 1e-9), -edge * (1 - 1e-9)):
        assert pde.bernoulli(z) == pytest.approx(z / math.expm1(z), rel=1e-15)


def test_bernoulli_reflection_identity():
    # B(-z) = B(z) + z is what makes the flux vanish on a Gibbs state
    for z in (1e-8, 1e-3, 0.5, 3.0, 30.0, 300.0):
        assert pde.bernoulli(-z) - pde.bernoulli(z) == pytest.approx(z, rel=1e-14)


def test_bernoulli_large_arguments():
    # no overflow (the test runs with floating-point errors raising) and the limits
    assert pde.bernoulli(1e4) == 0.0
    assert pde.bernoulli(-1e4) == 1e4
    assert pde.bernoulli(800.0) == 0.0
    assert pde.bernoulli(-800.0) == pytest.approx(800.0, rel=1e-15)
    assert pde.bernoulli(40.0) == pytest.approx(40.0 * math.exp(-40.0), rel=1e-14)


def test_bernoulli_derivative_by_differences():
    for z in (-50.0, -2.0, -0.02, -0.005, 0.003, 0.02, 1.0, 7.0, 60.0):
        step = 1e-5 * max(1.0, abs(z))
        difference = (pde.bernoulli(z + step) - pde.bernoulli(z - step)) / (2 * step)
        assert pde.bernoulli_derivative(z) == pytest.approx(difference, rel=1e-7, abs=1e-20)


# ----------------------------------------------------- well-balancing ----


def gibbs_setup(amplitude, M=200, beta=1.0):
    """Return a frozen potential and its Gibbs state, which spans about exp(-2.8 amplitude)..1.

    With M = 200 the cell Peclet numbers reach about 0.05 amplitude.
    """
    x = (np.arange(M) + 0.5) / M
    phi = amplitude * (np.cos(2 * np.pi * x) + 0.4 * np.sin(6 * np.pi * x))
    gibbs = np.exp(-beta * (phi - phi.min()))
    return phi, gibbs


@pytest.mark.parametrize("amplitude", [1.0, 30.0, 250.0])
def test_gibbs_state_has_zero_flux(amplitude):
    phi, gibbs = gibbs_setup(amplitude)
    forward, backward, divergence = np.empty(phi.size), np.empty(phi.size), np.empty(phi.size)
    pde._face_coefficients(phi, 1.0, 1.0, forward, backward)
    pde._flux_divergence(forward, backward, gibbs, divergence)
    # each face flux is a difference of two terms of size B(z) rho: compare to
    # them. exp(-beta phi) itself carries a relative error of eps*|beta phi|
    # from rounding phi, so round-off here is a few eps*(1 + max |beta phi|).
    scale = np.maximum(forward * gibbs, backward * np.roll(gibbs, -1))
    roundoff = 16 * np.finfo(float).eps * (1 + np.abs(phi).max())
    assert np.all(np.abs(divergence) <= roundoff * (scale + np.roll(scale, 1)))


@pytest.mark.parametrize("amplitude", [1.0, 30.0, 250.0])
def test_gibbs_state_is_fixed_by_step(amplitude):
    # one backward-Euler step with the potential frozen, at a very large step
    phi, gibbs = gibbs_setup(amplitude)
    M = phi.size
    forward, backward, out = np.empty(M), np.empty(M), np.empty(M)
    work = [np.empty(M) for _ in range(3)]
    pde._face_coefficients(phi, 1.0, 1e6 * M**2, forward, backward)
    pde._solve_step_matrix(forward, backward, gibbs, out, *work)
    roundoff = 16 * np.finfo(float).eps * (1 + np.abs(phi).max())
    assert np.max(np.abs(out / gibbs - 1)) < roundoff


def test_step_matrix_solve_matches_dense(rng):
    M = 12
    forward, backward, rhs = rng.random(M) * 5, rng.random(M) * 500, rng.random(M)
    dense = np.eye(M)
    for i in range(M):
        dense[i, i] += forward[i] + backward[i - 1]
        dense[i, (i + 1) % M] -= backward[i]
        dense[i, (i - 1) % M] -= forward[i - 1]
    out, work = np.empty(M), [np.empty(M) for _ in range(3)]
    pde._solve_step_matrix(forward, backward, rhs, out, *work)
    assert np.allclose(out, np.linalg.solve(dense, rhs), rtol=1e-13, atol=0)


def test_step_matrix_keeps_tiny_values_positive():
    # huge step, density spanning 300 orders of magnitude: every entry stays > 0
    phi, gibbs = gibbs_setup(250.0)
    M = phi.size
    rhs = gibbs[::-1].copy()
    forward, backward, out = np.empty(M), np.empty(M), np.empty(M)
    work = [np.empty(M) for _ in range(3)]
    pde._face_coefficients(phi, 1.0, 1e10, forward, backward)
    pde._solve_step_matrix(forward, backward, rhs, out, *work)
    assert np.all(out > 0)
    assert abs(out.sum() / rhs.sum() - 1) < 1e-13


# ------------------------------------------------ conservation along runs ----


@pytest.fixture(scope="module")
def clustering_run():
    """Clusters forming from a perturbed uniform state (gamma = 2 gamma_sharp)."""
    model = hk_model(1.0)
    model = model.with_gamma(2 * mvlib.gamma_sharp(model))
    grid = mvlib.Grid(1.0, 96)
    with np.errstate(all="raise", under="ignore"):
        result = pde.solve(model, grid, perturbed_uniform(grid), 0.5, t_eval=np.linspace(0.05, 0.5, 10), rtol=1e-4)
    return model, grid, result


def test_run_finishes(clustering_run):
    _, _, result = clustering_run
    assert result.status == "finished"
    assert result.t[-1] == 0.5


def test_run_forms_clusters(clustering_run):
    _, grid, result = clustering_run
    assert result.rho[-1].max() > 5.0 / grid.L


def test_mass_conserved(clustering_run):
    _, grid, result = clustering_run
    masses = result.rho.sum(axis=1) * grid.dx
    assert np.max(np.abs(masses - 1.0)) < 1e-13


def test_density_positive(clustering_run):
    _, _, result = clustering_run
    assert np.all(result.rho > 0)


def test_free_energy_non_increasing(clustering_run):
    _, _, result = clustering_run
    increments = np.diff(result.trace_free_energy)
    scale = np.abs(result.trace_free_energy).max()
    assert np.all(increments <= 1e-12 * scale)


def test_free_energy_trace_matches_energy_module(clustering_run):
    model, grid, result = clustering_run
    final = mvlib.free_energy(model, grid, result.rho[-1]).total
    assert result.trace_free_energy[-1] == pytest.approx(final, rel=1e-12)


def test_output_times_hit_exactly(clustering_run):
    _, _, result = clustering_run
    assert np.array_equal(result.t, np.linspace(0.05, 0.5, 10))


def test_huge_steps_stay_positive():
    # the loosest tolerance and a first step of 1e4: the steps are enormous
    model = hk_model(600.0)
    grid = mvlib.Grid(1.0, 96)
    result = pde.solve(model, grid, perturbed_uniform(grid, 0.2), 1e5, rtol=0.1, dt_initial=1e4)
    assert result.status == "finished"
    # steps whose BDF2 right-hand side had a negative entry fell back to
    # backward Euler (besides the first two), so that path is exercised here
    assert result.n_second_order < result.n_steps - 2
    assert np.all(result.rho > 0)
    assert abs(result.rho[-1].sum() * grid.dx - 1) < 1e-13
    assert np.all(np.diff(result.trace_free_energy) <= 1e-12 * np.abs(result.trace_free_energy).max())


# ----------------------------------------------------------- accuracy ----


def decay_rate(M, k=1, t_final=0.002, rtol=1e-9):
    """Measured decay rate of the Fourier mode k of the heat equation (gamma = 0).

    With rtol = 1e-9 the time stepping's relative error in the rate is far
    below the spatial error (q dx)**2/12 on every grid used here.
    """
    model = hk_model(0.0, ell=0.4)
    grid = mvlib.Grid(1.0, M)
    q = 2 * np.pi * k
    # exact cell averages of 1 + 0.5 cos(q x)
    edges = np.arange(M + 1) * grid.dx
    rho0 = 1 + 0.5 * np.diff(np.sin(q * edges)) / (q * grid.dx)
    result = pde.solve(model, grid, rho0, t_final, rtol=rtol)
    amplitude = lambda rho: 2 * abs(np.fft.rfft(rho)[k]) / M  # noqa: E731
    return -math.log(amplitude(result.rho[-1]) / amplitude(rho0)) / t_final


def test_heat_mode_decays_at_exact_rate():
    exact = (2 * np.pi) ** 2  # q_1**2 / beta
    assert decay_rate(128) == pytest.approx(exact, rel=5e-4)


def test_heat_mode_second_order_in_dx():
    exact = (2 * np.pi) ** 2
    errors = [abs(decay_rate(M) - exact) for M in (24, 48, 96)]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(np.abs(orders - 2.0) < 0.15)


def test_time_error_order_in_rtol():
    # BDF2's global error is rtol times a number of steps growing like
    # rtol**(-1/3): it falls by 2/3 of a decade per decade of rtol, against
    # 1/2 for a first-order method. The reference is the exact rate of the
    # semi-discrete heat equation, (2 - 2 cos(q dx))/dx**2; measured: 0.655.
    M, t_final = 24, 0.05
    dx, q = 1.0 / M, 2 * np.pi
    exact_discrete = (2 - 2 * math.cos(q * dx)) / dx**2
    errors = [abs(decay_rate(M, t_final=t_final, rtol=rtol) - exact_discrete) for rtol in (1e-5, 1e-7)]
    slope = math.log10(errors[0] / errors[1]) / 2
    assert 0.58 < slope < 0.8


# ------------------------------------------------------------- BDF2 ----


def history_of(times, values):
    return [(t, np.array([value])) for t, value in zip(times, values)]


def test_bdf2_step_is_exact_on_quadratics():
    # the formula and its predictor are exact for y(t) = 1 + t + t**2 at any step ratios
    y = lambda t: 1 + t + t * t  # noqa: E731
    dy = lambda t: 1 + 2 * t  # noqa: E731
    times = [0.0, 0.3, 0.45]
    h = 0.25
    step = pde._bdf2_step(history_of(times, [y(t) for t in times]), h)
    t_new = times[-1] + h
    assert step.a - step.b == pytest.approx(1.0, abs=1e-15)
    assert y(t_new) - step.a * y(times[-1]) + step.b * y(times[-2]) == pytest.approx(step.h_implicit * dy(t_new))
    assert step.predictor[0] == pytest.approx(y(t_new))


def test_bdf2_error_constant_for_equal_steps():
    # for equal steps the local error is 2/11 of the distance to the predictor
    step = pde._bdf2_step(history_of([0.0, 1.0, 2.0], [0.0, 0.0, 0.0]), 1.0)
    assert (step.a, step.b, step.h_implicit) == pytest.approx((4 / 3, 1 / 3, 2 / 3))
    assert step.error_factor == pytest.approx(2 / 11)


def test_bdf2_error_estimate_on_a_cubic():
    # y = t**3: the estimate equals the true local error of the step to leading order
    h = 1e-3
    times = [0.0, 0.7 * h, 1.5 * h]
    y = lambda t: t**3  # noqa: E731
    step = pde._bdf2_step(history_of(times, [y(t) for t in times]), h)
    t_new = times[-1] + h
    computed = step.a * y(times[-1]) - step.b * y(times[-2]) + step.h_implicit * 3 * t_new**2
    estimate = step.error_factor * (computed - step.predictor[0])
    assert estimate == pytest.approx(computed - y(t_new), rel=1e-6)


def test_bdf2_merges_a_short_interval():
    # a step much longer than the last interval drops the node before the current one
    history = history_of([0.0, 1.0, 2.0, 2.001], [0.0, 0.0, 0.0, 0.0])
    step = pde._bdf2_step(history, 1.0)
    assert [t for t, _ in history] == [0.0, 1.0, 2.001]
    assert step is not None
    assert pde._bdf2_step(history_of([0.0, 1.0], [0.0, 0.0]), 1.0) is None


def test_runs_are_mostly_second_order(clustering_run):
    _, _, result = clustering_run
    assert result.n_second_order >= 0.9 * result.n_steps


# ------------------------------------------------------ stop conditions ----


def test_lighter_cluster_empties_and_stops():
    model = hk_model(400.0)
    grid = mvlib.Grid(1.0, 128)
    stop = pde.mass_below(grid, 1e-3)
    result = pde.solve(model, grid, two_clusters(grid, 400.0), 100.0, stop=stop, rtol=1e-4)
    assert result.status == "stopped"
    assert 0 < result.t_stop < 100.0
    assert result.t[-1] == result.t_stop
    # the lighter cluster drops out of detection near a mass of 0.02, and the
    # condition follows the mass near its centre down to the threshold
    assert stop.masses.min() < 1e-3
    assert stop.masses.max() > 0.99


def test_mass_near_lost_centre():
    grid = mvlib.Grid(1.0, 400)
    rho = two_clusters(grid, 500.0)
    remembered = np.array([0.25, 0.75])
    assert pde._mass_near_lost_centre(grid, rho, remembered, np.array([0.76])) == pytest.approx(0.45, abs=1e-9)
    assert pde._mass_near_lost_centre(grid, rho, remembered, np.array([0.24])) == pytest.approx(0.55, abs=1e-9)


def test_max_steps_reports_failure():
    model = hk_model(400.0)
    grid = mvlib.Grid(1.0, 128)
    result = pde.solve(model, grid, two_clusters(grid, 400.0), 100.0, max_steps=3)
    assert result.status == "failed"
    assert "max_steps" in result.message
    assert result.n_steps == 3


# ----------------------------------------------------------- bad input ----


@pytest.fixture
def small_setup():
    model = hk_model(300.0)
    grid = mvlib.Grid(1.0, 100)
    return model, grid, grid.uniform


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda rho: -rho, "negative"),
        (lambda rho: np.where(np.arange(rho.size) == 3, np.nan, rho), "non-finite"),
        (lambda rho: np.zeros_like(rho), "zero mass"),
        (lambda rho: rho[:-1], "shape"),
    ],
)
def test_bad_density_rejected(small_setup, change, match):
    model, grid, rho = small_setup
    with pytest.raises(ValueError, match=match):
        pde.solve(model, grid, change(rho), 1.0)


def test_grid_length_mismatch_rejected(small_setup):
    model, _, _ = small_setup
    grid = mvlib.Grid(2.0, 200)
    with pytest.raises(ValueError, match="grid.L"):
        pde.solve(model, grid, grid.uniform, 1.0)


@pytest.mark.parametrize("t_final", [0.0, -1.0, math.inf])
def test_bad_final_time_rejected(small_setup, t_final):
    model, grid, rho = small_setup
    with pytest.raises(ValueError, match="t_final"):
        pde.solve(model, grid, rho, t_final)


@pytest.mark.parametrize(
    "t_eval, match",
    [
        ([0.0, 0.5], "after the start"),
        ([-0.5, 0.5], "after the start"),
        ([0.5, 0.2], "increasing"),
        ([0.5, 0.5], "increasing"),
        ([0.5, 2.0], "t_final"),
        ([], "non-empty"),
    ],
)
def test_bad_output_times_rejected(small_setup, t_eval, match):
    model, grid, rho = small_setup
    with pytest.raises(ValueError, match=match):
        pde.solve(model, grid, rho, 1.0, t_eval=t_eval)


@pytest.mark.parametrize("rtol", [0.0, 1e-14, 0.5, math.nan])
def test_bad_rtol_rejected(small_setup, rtol):
    model, grid, rho = small_setup
    with pytest.raises(ValueError, match="rtol"):
        pde.solve(model, grid, rho, 1.0, rtol=rtol)


def test_bad_options_rejected(small_setup):
    model, grid, rho = small_setup
    with pytest.raises(ValueError, match="max_steps"):
        pde.solve(model, grid, rho, 1.0, max_steps=0)
    with pytest.raises(ValueError, match="dt_initial"):
        pde.solve(model, grid, rho, 1.0, dt_initial=-1.0)
    with pytest.raises(ValueError, match="stop"):
        pde.solve(model, grid, rho, 1.0, stop=3)


def test_bad_stop_threshold_rejected():
    grid = mvlib.Grid(1.0, 100)
    with pytest.raises(ValueError, match="threshold"):
        pde.mass_below(grid, 1.5)
    with pytest.raises(ValueError, match="cluster_threshold"):
        pde.mass_below(grid, 1e-3, cluster_threshold=0.0)


# ----------------------------------------------- stationary states ----


def test_time_derivative_vanishes_on_gibbs_state():
    model = hk_model(300.0)
    grid = mvlib.Grid(1.0, 200)
    phi = 20.0 * np.cos(2 * np.pi * grid.x)
    gibbs = np.exp(-phi)
    derivative = pde.time_derivative(model, grid, gibbs, phi=phi)
    assert np.max(np.abs(derivative)) < 1e-12 * np.max(gibbs) / grid.dx**2


def test_stationary_state_unchanged_by_solver():
    # a single cluster above gamma_sharp, solved directly by mvlib.stationary
    model = hk_model(1.0)
    model = model.with_gamma(1.5 * mvlib.gamma_sharp(model))
    grid = mvlib.Grid(1.0, 128)
    guess = mvlib.stationary.cluster_guess(grid, [0.5], [1.0], 0.05)
    state = mvlib.stationary.solve(model, grid, guess)
    assert state.converged
    result = pde.solve(model, grid, state.rho, 1e3, rtol=1e-6)
    assert result.status == "finished"
    # the state solves the fixed-point equation to ~1e-11; the solver must not move it further
    change = np.max(np.abs(result.rho[-1] - state.rho)) / np.max(state.rho)
    assert change < 1e-8


@pytest.mark.slow
def test_emptying_time_converges_on_refinement():
    # Two Gaussian clusters of masses 0.45 and 0.55 at gamma = 500 (ell = 0.1):
    # the lighter one empties near t = 36. Doubling M and tightening rtol
    # tenfold must move that time by less than 1 %, the accuracy the
    # coarsening experiments rely on.
    def emptying_time(cells, rtol):
        model = mvlib.Model(mvlib.HegselmannKrause(500.0, 0.1))
        grid = mvlib.Grid(1.0, cells)
        rho = np.zeros(cells)
        for centre, mass in ((0.25, 0.45), (0.75, 0.55)):
            sigma = np.sqrt(0.1 / (500.0 * mass))
            rho += mass * np.exp(-0.5 * (grid.minimal_image(grid.x - centre) / sigma) ** 2) / sigma
        result = mvlib.pde.solve(model, grid, rho, 1e4, rtol=rtol, stop=mvlib.pde.mass_below(grid, 1e-3),
                                 progress=False)
        assert result.status == "stopped", result.message
        return result.t_stop

    coarse = emptying_time(512, 1e-5)
    fine = emptying_time(1024, 1e-6)
    assert 10 < coarse < 100
    assert abs(coarse - fine) / fine < 0.01


def test_cluster_stays_centred_over_long_run():
    # A single cluster has a neutral translation mode. Newton barely corrects
    # errors along it at large steps, so a badly chosen Newton guess makes the
    # cluster drift (a quadratic guess moved it 3.6e-7 by t = 1e4).
    model = hk_model(1.0)
    model = model.with_gamma(1.5 * mvlib.gamma_sharp(model))
    grid = mvlib.Grid(1.0, 200)
    centre = grid.x[100]
    guess = mvlib.stationary.cluster_guess(grid, [centre], [1.0], 0.05)
    result = pde.solve(model, grid, guess, 1e4, rtol=1e-7)
    rho = result.rho[-1]
    mean = np.angle(np.sum(rho * np.exp(2j * np.pi * (grid.x - centre)))) / (2 * np.pi)
    assert abs(mean) < 1e-9
