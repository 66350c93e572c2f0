import numpy as np
import pytest

import mvlib


@pytest.mark.parametrize(
    "potential, L, beta",
    [
        (mvlib.HegselmannKrause(50.0, 0.1), 1.0, 1.0),
        (mvlib.PiecewiseParabolic(20.0, 0.3, 0.5, 3.0, 1.0), 2.0, 0.7),
        (mvlib.Kuramoto(3.0, L=1.5), 1.5, 2.0),
    ],
)
def test_uniform_free_energy_matches_formula(potential, L, beta):
    model = mvlib.Model(potential, L=L, beta=beta)
    grid = mvlib.Grid(L, 240)
    expected = -np.log(L) / beta + potential.fourier(0.0) / (2 * L)
    assert mvlib.free_energy(model, grid, grid.uniform).total == pytest.approx(expected, rel=1e-13, abs=1e-13)
    assert mvlib.uniform_free_energy(model) == pytest.approx(expected, rel=1e-15)


def test_free_energy_parts_of_a_bump():
    model = mvlib.Model(mvlib.HegselmannKrause(100.0, 0.1))
    grid = mvlib.Grid(1.0, 400)
    rho = grid.normalize(np.exp(-((grid.x - 0.5) ** 2) / (2 * 0.02**2)))
    energy = mvlib.free_energy(model, grid, rho)
    assert energy.entropy == pytest.approx(np.sum(rho * np.log(rho)) * grid.dx)
    assert energy.interaction == pytest.approx(0.5 * np.sum(rho * grid.convolution(model.potential)(rho)) * grid.dx)
    assert energy.total == energy.entropy + energy.interaction


def test_free_energy_treats_zero_density_as_zero_entropy():
    model = mvlib.Model(mvlib.HegselmannKrause(1.0, 0.1))
    grid = mvlib.Grid(1.0, 100)
    rho = np.zeros(grid.M)
    rho[40:60] = 5.0
    assert np.isfinite(mvlib.free_energy(model, grid, rho).total)


def test_free_energy_rejects_mismatched_grid():
    model = mvlib.Model(mvlib.HegselmannKrause(1.0, 0.1))
    with pytest.raises(ValueError, match=r"grid.L = 2.0 does not match the model: expected L = 1.0"):
        mvlib.free_energy(model, mvlib.Grid(2.0, 200), np.ones(200))


@pytest.mark.parametrize(
    "rho, message",
    [
        (-np.ones(100), "negative"),
        (np.zeros(100), "zero mass"),
        (np.full(100, np.nan), "non-finite"),
        (np.ones(99), r"shape \(99,\), expected \(100,\)"),
    ],
)
def test_free_energy_rejects_invalid_density(rho, message):
    model = mvlib.Model(mvlib.HegselmannKrause(1.0, 0.1))
    with pytest.raises(ValueError, match=message):
        mvlib.free_energy(model, mvlib.Grid(1.0, 100), rho)


def test_particle_energy_matches_direct_pair_sum(rng):
    model = mvlib.Model(mvlib.HegselmannKrause(5.0, 0.2))
    x = rng.random(300)
    n = x.size
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                d = (x[i] - x[j] + 0.5) % 1.0 - 0.5
                total += model.potential.value(d)
    assert mvlib.particle_interaction_energy(model, x, block=37) == pytest.approx(total / (2 * n * n), rel=1e-12)


def test_particle_energy_of_uniform_sample_approaches_mean_field(rng):
    model = mvlib.Model(mvlib.HegselmannKrause(5.0, 0.2))
    x = rng.random(4000)
    expected = model.potential.fourier(0.0) / 2  # 1/2 integral of W for rho = 1
    # fluctuations of a U-statistic of N uniform points are O(1/N) relative to
    # W's size here: 5 standard deviations of a few 1e-4
    assert mvlib.particle_interaction_energy(model, x) == pytest.approx(expected, abs=2e-3)


def test_particle_energy_rejects_positions_outside_torus():
    model = mvlib.Model(mvlib.HegselmannKrause(5.0, 0.2))
    with pytest.raises(ValueError, match=r"positions must be finite and lie in the torus \[0, L\)"):
        mvlib.particle_interaction_energy(model, np.array([0.1, 1.0]))
