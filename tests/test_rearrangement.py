"""Tests of the symmetric decreasing rearrangement, the Riesz functional and the symmetry check."""

import math

import numpy as np
import pytest
from scipy.special import xlogy

import mvlib
from mvlib import rearrangement

# Relative size of round-off in a sum of M products of O(1) numbers: the gaps
# and violations that are exactly zero in exact arithmetic stay below it.
ROUND_OFF = 1e-13

# Random densities per property loop: enough to meet each density family many
# times at several grid sizes while keeping the file under a few seconds.
N_RANDOM = 60

GRID_SIZES = (16, 17, 64, 101)


def _random_inputs(rng, M):
    grid = mvlib.Grid(1.0, M)
    seed = int(rng.integers(2**32))
    rho, _ = rearrangement.random_densities(grid, N_RANDOM, seed)
    return grid, rho


def _bump(grid, centre, width):
    offset = grid.minimal_image(grid.x - centre)
    return grid.normalize(np.exp(-0.5 * (offset / width) ** 2) + 1e-3)


def test_order_lists_cells_by_distance():
    for M in (1, 2, 5, 6, 33):
        order = rearrangement.rearrangement_order(M)
        distance = np.minimum(np.abs(order), M - np.abs(order))
        assert sorted(order % M) == list(range(M))
        assert np.all(np.diff(distance) >= 0)


def test_order_tie_rule_right_first():
    assert rearrangement.rearrangement_order(6).tolist() == [0, 1, -1, 2, -2, 3]
    assert rearrangement.rearrangement_order(5).tolist() == [0, 1, -1, 2, -2]


def test_rearrange_example_values():
    grid = mvlib.Grid(1.0, 5)
    rho = np.array([1.0, 5.0, 2.0, 4.0, 3.0])
    # largest at cell 2, then right (3), left (1), right (4), left (0)
    assert rearrangement.rearrange(grid, rho, centre=2).tolist() == [1.0, 3.0, 5.0, 4.0, 2.0]


def test_rearrange_keeps_sorted_values(rng):
    for M in GRID_SIZES:
        grid, rho = _random_inputs(rng, M)
        star = rearrangement.rearrange(grid, rho)
        assert np.array_equal(np.sort(star, axis=-1), np.sort(rho, axis=-1))


def test_rearrange_keeps_mass_and_entropy(rng):
    for M in GRID_SIZES:
        grid, rho = _random_inputs(rng, M)
        star = rearrangement.rearrange(grid, rho, centre=M // 3)
        for original, rearranged in zip(rho, star):
            # fsum is exact, so the two sums of the same numbers are equal bit for bit
            assert math.fsum(rearranged) == math.fsum(original)
            assert math.fsum(xlogy(rearranged, rearranged)) == math.fsum(xlogy(original, original))


def test_rearrange_is_idempotent(rng):
    for M in GRID_SIZES:
        grid, rho = _random_inputs(rng, M)
        star = rearrangement.rearrange(grid, rho)
        assert np.array_equal(rearrangement.rearrange(grid, star), star)


def test_rearrange_commutes_with_translation(rng):
    for M in GRID_SIZES:
        grid, rho = _random_inputs(rng, M)
        for shift in (1, M // 2, M - 1):
            star = rearrangement.rearrange(grid, np.roll(rho, shift, axis=-1))
            assert np.array_equal(star, rearrangement.rearrange(grid, rho))


def test_rearrange_centre_is_translation(rng):
    grid, rho = _random_inputs(rng, 32)
    assert np.array_equal(rearrangement.rearrange(grid, rho, centre=7), np.roll(rearrangement.rearrange(grid, rho), 7, axis=-1))


def test_rearrange_decreasing_away_from_centre(rng):
    grid, rho = _random_inputs(rng, 64)
    star = rearrangement.rearrange(grid, rho, centre=10)
    cells = (10 + rearrangement.rearrangement_order(64)) % 64
    assert np.all(np.diff(star[:, cells], axis=-1) <= 0.0)


@pytest.mark.parametrize(
    "potential",
    [
        mvlib.HegselmannKrause(50.0, 0.15),
        mvlib.PiecewiseParabolic(50.0, 0.2, core_radius=0.4, core_stiffness=4.0, tail_stiffness=1.0),
        mvlib.PiecewiseParabolic(50.0, 0.2, core_radius=0.6, core_stiffness=0.5, tail_stiffness=2.0),
        mvlib.Kuramoto(10.0),
    ],
    ids=["hk", "stiff-core", "soft-core", "kuramoto"],
)
def test_riesz_inequality_random_densities(rng, potential):
    for M in (64, 101):
        grid, rho = _random_inputs(rng, M)
        convolution = grid.convolution(potential)
        riesz = rearrangement.riesz_functional(grid, rho, convolution)
        gap = rearrangement.rearrangement_gap(grid, rho, convolution)
        assert np.all(gap >= -ROUND_OFF * np.abs(riesz))


def test_riesz_gap_zero_for_translates():
    grid = mvlib.Grid(1.0, 64)
    potential = mvlib.HegselmannKrause(50.0, 0.2)
    for centre in (0.1, 0.37, 0.5 + 0.25 / 64):
        rho = _bump(grid, centre, 0.05)
        riesz = rearrangement.riesz_functional(grid, rho, potential)
        assert abs(rearrangement.rearrangement_gap(grid, rho, potential)) <= ROUND_OFF * abs(riesz)


def test_riesz_functional_is_minus_twice_interaction(rng):
    grid, rho = _random_inputs(rng, 64)
    model = mvlib.Model(mvlib.HegselmannKrause(30.0, 0.15))
    riesz = rearrangement.riesz_functional(grid, rho[0], model.potential)
    interaction = mvlib.free_energy(model, grid, rho[0]).interaction
    assert riesz == pytest.approx(-2.0 * interaction, rel=ROUND_OFF)


def test_riesz_functional_uniform_closed_form():
    # I(1/L) = -W_hat(0)/L, and W_hat(0) = -(2/3) gamma ell**2 for Hegselmann-Krause
    grid = mvlib.Grid(1.0, 80)
    potential = mvlib.HegselmannKrause(3.0, 0.2)
    expected = (2.0 / 3.0) * 3.0 * 0.2**2
    assert rearrangement.riesz_functional(grid, grid.uniform, potential) == pytest.approx(expected, rel=ROUND_OFF)


def test_symmetry_accepts_shifted_bumps():
    grid = mvlib.Grid(1.0, 64)
    # centres on a cell centre, on a cell edge, and left and right of a centre
    for centre in (grid.x[5], grid.x[20] + 0.5 * grid.dx, grid.x[40] - 0.2 * grid.dx, grid.x[63] + 0.3 * grid.dx):
        rho = _bump(grid, centre, 0.04)
        check = rearrangement.symmetric_decreasing_violation(grid, rho)
        assert check.violation <= ROUND_OFF
        assert rearrangement.is_symmetric_decreasing(grid, rho, ROUND_OFF, norm="sup")


def test_symmetry_finds_centre():
    grid = mvlib.Grid(1.0, 64)
    rho = _bump(grid, grid.x[23] + 0.1 * grid.dx, 0.04)
    check = rearrangement.symmetric_decreasing_violation(grid, rho)
    assert check.centre == 23
    assert not check.mirrored


def test_symmetry_uses_mirror_left_of_centre():
    grid = mvlib.Grid(1.0, 64)
    rho = _bump(grid, grid.x[23] - 0.1 * grid.dx, 0.04)
    check = rearrangement.symmetric_decreasing_violation(grid, rho)
    assert check.centre == 23
    assert check.mirrored


def test_symmetry_rejects_two_bumps():
    grid = mvlib.Grid(1.0, 64)
    rho = grid.normalize(_bump(grid, 0.2, 0.04) + _bump(grid, 0.7, 0.04))
    for norm in rearrangement.NORMS:
        check = rearrangement.symmetric_decreasing_violation(grid, rho, norm=norm)
        assert check.violation > 0.1
        assert not rearrangement.is_symmetric_decreasing(grid, rho, 1e-3, norm=norm)


def test_symmetry_violation_of_rearrangement_zero(rng):
    grid, rho = _random_inputs(rng, 33)
    for row in rho[:10]:
        star = rearrangement.rearrange(grid, row, centre=int(rng.integers(33)))
        assert rearrangement.symmetric_decreasing_violation(grid, star).violation == 0.0


@pytest.mark.parametrize(
    "values, message",
    [
        (np.array([1.0, -0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]), "negative"),
        (np.ones(7), "shape"),
        (np.array([1.0, np.nan, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]), "non-finite"),
        (np.array([1.0, np.inf, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]), "non-finite"),
        (np.zeros(8), "zero mass"),
        (np.ones((2, 2, 8)), "shape"),
    ],
    ids=["negative", "length", "nan", "inf", "zero-mass", "three-dimensional"],
)
def test_bad_density_raises(values, message):
    grid = mvlib.Grid(1.0, 8)
    with np.errstate(invalid="ignore"):
        with pytest.raises(ValueError, match=message):
            rearrangement.rearrange(grid, values)
        with pytest.raises(ValueError, match=message):
            rearrangement.riesz_functional(grid, values, mvlib.Kuramoto(1.0))
        if values.ndim == 1:
            with pytest.raises(ValueError, match=message):
                rearrangement.symmetric_decreasing_violation(grid, values)


def test_bad_row_in_batch_named():
    grid = mvlib.Grid(1.0, 8)
    values = np.ones((3, 8))
    values[2, 4] = -1.0
    with pytest.raises(ValueError, match=r"rho\[2\]"):
        rearrangement.rearrange(grid, values)


def test_bad_centre_raises():
    grid = mvlib.Grid(1.0, 8)
    for centre in (-1, 8, 2.5):
        with pytest.raises(ValueError, match="centre"):
            rearrangement.rearrange(grid, grid.uniform, centre=centre)


def test_bad_norm_raises():
    grid = mvlib.Grid(1.0, 8)
    with pytest.raises(ValueError, match="norm"):
        rearrangement.symmetric_decreasing_violation(grid, grid.uniform, norm="l2")


def test_convolution_on_other_grid_raises():
    grid = mvlib.Grid(1.0, 64)
    other = mvlib.Grid(1.0, 32).convolution(mvlib.Kuramoto(1.0))
    with pytest.raises(ValueError, match="differs"):
        rearrangement.riesz_functional(grid, grid.uniform, other)


def test_random_density_kinds(rng):
    grid = mvlib.Grid(1.0, 64)
    for kind in rearrangement.DENSITY_KINDS:
        rho = rearrangement.random_density(grid, rng, kind)
        assert grid.integrate(rho) == pytest.approx(1.0, rel=ROUND_OFF)
        assert rho.min() >= rearrangement.RANDOM_FLOOR / grid.L * (1.0 - ROUND_OFF)


def test_random_density_bad_kind_raises(rng):
    with pytest.raises(ValueError, match="kind"):
        rearrangement.random_density(mvlib.Grid(1.0, 8), rng, "spiky")


def test_random_densities_reproducible():
    grid = mvlib.Grid(1.0, 32)
    first, _ = rearrangement.random_densities(grid, 9, seed=3)
    second, _ = rearrangement.random_densities(grid, 9, seed=3)
    assert np.array_equal(first, second)


def test_relax_reaches_stationary_state(rng):
    grid = mvlib.Grid(1.0, 64)
    convolution = grid.convolution(mvlib.HegselmannKrause(400.0, 0.2))
    start = rearrangement.random_density(grid, rng, "multi_bump")
    result = rearrangement.relax(grid, convolution, 1.0, start, tol=1e-10)
    exponent = -convolution(result.rho)
    gibbs = np.exp(exponent - exponent.max())
    gibbs /= grid.integrate(gibbs)
    assert result.converged
    assert np.max(np.abs(result.rho - gibbs)) <= 1e-9 * np.max(result.rho)
    assert grid.integrate(result.rho) == pytest.approx(1.0, rel=ROUND_OFF)


def test_relax_lowers_free_energy(rng):
    grid = mvlib.Grid(1.0, 64)
    model = mvlib.Model(mvlib.HegselmannKrause(400.0, 0.2))
    start = rearrangement.random_density(grid, rng, "noise")
    result = rearrangement.relax(grid, grid.convolution(model.potential), model.beta, start, max_iter=50)
    assert result.free_energy <= mvlib.free_energy(model, grid, start).total
    assert result.free_energy == pytest.approx(mvlib.free_energy(model, grid, result.rho).total, rel=ROUND_OFF)


def test_relax_weak_interaction_uniform(rng):
    # gamma = 5 is far below gamma_sharp (about 44 for ell = 0.2), where every start relaxes to uniform
    grid = mvlib.Grid(1.0, 64)
    convolution = grid.convolution(mvlib.HegselmannKrause(5.0, 0.2))
    result = rearrangement.relax(grid, convolution, 1.0, rearrangement.random_density(grid, rng, "asymmetric"))
    assert result.converged
    assert np.max(np.abs(result.rho - grid.uniform)) <= 1e-9


def test_relax_bad_beta_raises():
    grid = mvlib.Grid(1.0, 64)
    with pytest.raises(ValueError, match="beta"):
        rearrangement.relax(grid, grid.convolution(mvlib.Kuramoto(1.0)), 0.0, grid.uniform)


def test_count_clusters_cases():
    grid = mvlib.Grid(1.0, 128)
    assert rearrangement.count_clusters(grid, grid.uniform) == 0
    assert rearrangement.count_clusters(grid, _bump(grid, 0.3, 0.03)) == 1
    assert rearrangement.count_clusters(grid, grid.normalize(_bump(grid, 0.2, 0.03) + _bump(grid, 0.7, 0.03))) == 2


def test_count_clusters_across_boundary():
    # a cluster cut by the end of the interval is one cluster, wherever the torus is cut
    grid = mvlib.Grid(1.0, 128)
    rho = grid.normalize(_bump(grid, 0.0, 0.03) + _bump(grid, 0.5, 0.03))
    for shift in (0, 1, 17, 64):
        assert rearrangement.count_clusters(grid, np.roll(rho, shift)) == 2


def test_stationary_residual_small_at_solution(rng):
    grid = mvlib.Grid(1.0, 64)
    model = mvlib.Model(mvlib.HegselmannKrause(400.0, 0.2))
    result = rearrangement.relax(grid, grid.convolution(model.potential), model.beta,
                                 rearrangement.random_density(grid, rng, "multi_bump"), tol=1e-11)
    assert rearrangement.stationary_residual(model, grid, result.rho) <= 1e-10
    assert rearrangement.stationary_residual(model, grid, _bump(grid, 0.5, 0.2)) > 1e-3


def test_search_minimizers_records_states():
    # gamma = 400 is far above gamma_sharp (about 44 for ell = 0.2): one cluster wins
    grid = mvlib.Grid(1.0, 64)
    model = mvlib.Model(mvlib.HegselmannKrause(400.0, 0.2))
    search = rearrangement.search_minimizers(model, grid, 6, seed=2)
    lowest = search.lowest()
    assert search.rho.shape == (6, 64)
    assert np.all(search.converged)
    assert search.n_clusters[lowest] == 1
    assert search.violation[lowest] <= 1e-10
    assert search.free_energy[lowest] < mvlib.uniform_free_energy(model)
    assert search.kind.tolist() == ["multi_bump", "noise", "asymmetric"] * 2


def test_search_minimizers_weak_uniform():
    grid = mvlib.Grid(1.0, 64)
    model = mvlib.Model(mvlib.HegselmannKrause(5.0, 0.2))
    search = rearrangement.search_minimizers(model, grid, 3, seed=2)
    assert np.all(search.n_clusters == 0)
    assert np.allclose(search.free_energy, mvlib.uniform_free_energy(model), rtol=1e-12, atol=1e-12)


def test_search_minimizers_bad_tol_raises():
    grid = mvlib.Grid(1.0, 64)
    model = mvlib.Model(mvlib.HegselmannKrause(5.0, 0.2))
    with pytest.raises(ValueError, match="tol"):
        rearrangement.search_minimizers(model, grid, 3, seed=2, tol=0.0)
