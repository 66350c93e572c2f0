"""Tests of cluster detection for particles and grid densities."""

import numpy as np
import pytest

import mvlib
from mvlib import clusters

L = 1.0
CENTRES = np.array([0.0, 0.3, 0.62])  # the first cluster straddles the cut
MASSES = np.array([0.5, 0.3, 0.2])
WIDTH = 0.02


def clustered_positions(rng, size=3000):
    counts = np.round(MASSES * size).astype(int)
    x = np.concatenate([c + WIDTH * rng.standard_normal(n) for c, n in zip(CENTRES, counts)])
    return x % L


def circular_distance(a, b):
    difference = np.abs(np.asarray(a) - np.asarray(b)) % L
    return np.minimum(difference, L - difference)


def test_particle_clusters_recover_groups(rng):
    found = clusters.particle_clusters(clustered_positions(rng), L)
    assert found.count == 3
    # masses are exact counts; centres within a few standard errors WIDTH/sqrt(n)
    match = [int(np.argmin(circular_distance(found.centres, c))) for c in CENTRES]
    assert np.allclose(found.masses[match], MASSES, atol=1e-3)
    assert np.all(circular_distance(found.centres[match], CENTRES) < 5 * WIDTH / np.sqrt(600))
    assert np.allclose(found.widths, WIDTH, rtol=0.1)


def test_particle_clusters_labels_match_masses(rng):
    x = clustered_positions(rng)
    found = clusters.particle_clusters(x, L)
    counts = np.bincount(found.labels[found.labels >= 0], minlength=found.count)
    assert np.allclose(counts / x.size, found.masses)


@pytest.mark.parametrize("shift", [0.1, 0.37, 0.5, 0.9999])
def test_particle_clusters_shift_invariant(shift, rng):
    x = clustered_positions(rng)
    before = clusters.particle_clusters(x, L)
    after = clusters.particle_clusters((x + shift) % L, L)
    assert after.count == before.count
    # match clusters by shifted centre, then compare every field
    match = [int(np.argmin(circular_distance(after.centres, c + shift))) for c in before.centres]
    assert np.allclose(after.masses[match], before.masses, rtol=0, atol=1e-15)
    assert np.all(circular_distance(after.centres[match], before.centres + shift) < 1e-12)
    assert np.allclose(after.widths[match], before.widths, rtol=1e-9)


def test_particle_clusters_uniform_has_none(rng):
    found = clusters.particle_clusters(rng.uniform(0.0, L, 5000), L)
    assert found.count == 0
    assert np.all(found.labels == -1)


def test_particle_clusters_single_cluster(rng):
    x = (0.995 + 0.01 * rng.standard_normal(500)) % L
    found = clusters.particle_clusters(x, L)
    assert found.count == 1
    assert found.masses[0] == 1.0
    assert circular_distance(found.centres[0], 0.995) < 0.005


def test_particle_clusters_stray_particles(rng):
    # two isolated particles far from the cluster are stray, not clusters
    x = np.concatenate([0.5 + 0.01 * rng.standard_normal(500), [0.05, 0.95]])
    found = clusters.particle_clusters(x, L)
    assert found.count == 1
    assert np.array_equal(found.labels[-2:], [-1, -1])
    assert found.masses[0] == pytest.approx(500 / 502)


def gaussian_density(grid, centres, masses, width):
    rho = np.zeros(grid.M)
    for centre, mass in zip(centres, masses):
        distance = (grid.x - centre + 0.5 * L) % L - 0.5 * L
        rho += mass * np.exp(-0.5 * (distance / width) ** 2) / (np.sqrt(2 * np.pi) * width)
    return grid.normalize(rho + 1e-12)


def test_grid_clusters_recover_masses():
    grid = mvlib.Grid(L, 1024)
    found = clusters.grid_clusters(grid, gaussian_density(grid, CENTRES, MASSES, WIDTH))
    assert found.count == 3
    # the Gaussian tails beyond the cut between clusters are below 1e-12
    match = [int(np.argmin(circular_distance(found.centres, c))) for c in CENTRES]
    assert np.allclose(found.masses[match], MASSES, atol=1e-9)
    assert np.all(circular_distance(found.centres[match], CENTRES) < 1e-9)
    assert np.allclose(found.widths, WIDTH, rtol=1e-3)


@pytest.mark.parametrize("cells", [1, 100, 517, 1023])
def test_grid_clusters_shift_invariant(cells):
    grid = mvlib.Grid(L, 1024)
    rho = gaussian_density(grid, CENTRES, MASSES, WIDTH)
    before = clusters.grid_clusters(grid, rho)
    after = clusters.grid_clusters(grid, np.roll(rho, cells))
    shift = cells * grid.dx
    match = [int(np.argmin(circular_distance(after.centres, c + shift))) for c in before.centres]
    assert after.count == before.count
    assert np.allclose(after.masses[match], before.masses, rtol=0, atol=1e-12)
    assert np.all(circular_distance(after.centres[match], before.centres + shift) < 1e-12)
    assert np.allclose(after.widths[match], before.widths, rtol=1e-9)


def test_grid_clusters_peak_filter():
    # a low bump above the threshold is part of a gap unless peak admits it
    grid = mvlib.Grid(L, 512)
    rho = gaussian_density(grid, [0.2, 0.7], [0.6, 0.4], 0.02)
    rho += 0.05 * np.exp(-0.5 * (((grid.x - 0.45 + 0.5 * L) % L - 0.5 * L) / 0.02) ** 2)
    assert clusters.grid_clusters(grid, rho, threshold=0.01).count == 3
    filtered = clusters.grid_clusters(grid, rho, threshold=0.01, peak=1.0)
    assert filtered.count == 2
    assert filtered.masses.sum() == pytest.approx(1.0, abs=1e-12)


def test_grid_clusters_uniform_has_none():
    grid = mvlib.Grid(L, 64)
    assert clusters.grid_clusters(grid, grid.uniform).count == 0


def test_grid_and_particle_clusters_agree(rng):
    # the histogram of clustered particles and the particles give one answer
    x = clustered_positions(rng, 20000)
    grid = mvlib.Grid(L, 256)
    histogram = np.histogram(x, bins=grid.M, range=(0.0, L))[0] / (x.size * grid.dx)
    from_grid = clusters.grid_clusters(grid, histogram)
    from_particles = clusters.particle_clusters(x, L)
    assert from_grid.count == from_particles.count
    assert np.allclose(from_grid.masses, from_particles.masses, atol=2e-3)
    assert np.all(circular_distance(from_grid.centres, from_particles.centres) < grid.dx)


@pytest.mark.parametrize("gap", [0.0, -0.1, 1.0, float("nan")])
def test_particle_clusters_rejects_bad_gap(gap, rng):
    with pytest.raises(ValueError, match="gap"):
        clusters.particle_clusters(rng.uniform(0, L, 10), L, gap=gap)


@pytest.mark.parametrize("positions", [[0.5], [0.1, 1.0], [0.1, float("nan")]])
def test_particle_clusters_rejects_bad_positions(positions):
    with pytest.raises(ValueError, match="positions"):
        clusters.particle_clusters(positions, L)


def test_grid_clusters_rejects_bad_threshold():
    grid = mvlib.Grid(L, 64)
    with pytest.raises(ValueError, match="threshold"):
        clusters.grid_clusters(grid, grid.uniform, threshold=0.0)
    with pytest.raises(ValueError, match="peak"):
        clusters.grid_clusters(grid, grid.uniform, peak=-1.0)
