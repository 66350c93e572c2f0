"""Tests of the particle simulator: exact forces, reproducibility, noise, bad input."""

import math

import numpy as np
import pytest
from scipy import stats

import mvlib
from mvlib import particles

# Forces must match the all-pairs sum to this absolute tolerance, in units of
# the largest |W'|: the prefix sums lose about eps*N of relative accuracy to
# cancellation, far below this for the N tested here.
FORCE_TOLERANCE = 1e-12


def all_pairs_drift(model, x):
    """Return -(1/N) sum_{j != i} W'(d(X^i, X^j)) from the N x N minimal-image differences."""
    difference = x[:, None] - x[None, :]
    difference = (difference + 0.5 * model.L) % model.L - 0.5 * model.L
    slopes = model.potential.derivative(difference)
    np.fill_diagonal(slopes, 0.0)
    return -slopes.sum(axis=1) / x.size


def force_scale(potential):
    return particles._max_slope(potential)


LOCAL_POTENTIALS = {
    "hegselmann-krause": mvlib.HegselmannKrause(gamma=3.0, ell=0.1),
    "stiff core": mvlib.PiecewiseParabolic(gamma=2.0, ell=0.2, core_radius=0.4, core_stiffness=5.0,
                                           tail_stiffness=1.0),
    "repulsive core": mvlib.PiecewiseParabolic(gamma=1.5, ell=0.3, core_radius=0.3, core_stiffness=-2.0,
                                               tail_stiffness=0.5),
}


def configuration_near_cut(rng, size, L):
    """Return uniform positions with a few particles within 1e-9 of the cut at 0 = L."""
    x = rng.uniform(0.0, L, size)
    x[:4] = [0.0, 1e-12, L - 1e-9, L * (1 - 2**-52)]
    return x


@pytest.mark.parametrize("name", list(LOCAL_POTENTIALS))
@pytest.mark.parametrize("method", ["prefix", "window"])
# The prefix method cuts the sorted slots into four runs. Sizes 6, 7 and 57
# leave 2, 3 and 1 slots over, and sizes 2 and 3 leave every run empty.
@pytest.mark.parametrize("size", [2, 3, 6, 7, 57, 800])
def test_drift_local_matches_all_pairs(name, method, size, rng):
    model = mvlib.Model(LOCAL_POTENTIALS[name], L=1.0)
    x = configuration_near_cut(rng, size, model.L) if size > 4 else rng.uniform(0.0, 1.0, size)
    error = np.max(np.abs(particles.drift(model, x, method) - all_pairs_drift(model, x)))
    assert error <= FORCE_TOLERANCE * force_scale(model.potential)


@pytest.mark.parametrize("method", ["prefix", "window"])
def test_drift_clustered_matches_all_pairs(method, rng):
    # three tight clusters, one of them straddling the cut of the torus
    model = mvlib.Model(LOCAL_POTENTIALS["stiff core"], L=2.0)
    centres = np.array([0.0, 0.7, 1.3])
    x = (centres[rng.integers(0, 3, 600)] + 0.02 * rng.standard_normal(600)) % model.L
    error = np.max(np.abs(particles.drift(model, x, method) - all_pairs_drift(model, x)))
    assert error <= FORCE_TOLERANCE * force_scale(model.potential)


@pytest.mark.parametrize("method", ["prefix", "window"])
def test_drift_at_exact_range(method):
    # dyadic positions: every difference is exact, so pairs sit exactly at
    # distance ell (inside, closed interval) and at a*ell, also across the cut
    ell = 0.125
    potential = mvlib.PiecewiseParabolic(gamma=1.0, ell=ell, core_radius=0.5, core_stiffness=3.0,
                                         tail_stiffness=1.0)
    model = mvlib.Model(potential, L=1.0)
    x = np.array([0.0625, 0.9375, 0.5, 0.625, 0.375, 0.25, 0.3125, 0.0])
    expected = all_pairs_drift(model, x)
    assert np.max(np.abs(particles.drift(model, x, method) - expected)) <= FORCE_TOLERANCE


def test_drift_at_exact_range_is_inside():
    # two particles exactly ell apart across the cut attract each other with W'(ell) = gamma
    model = mvlib.Model(mvlib.HegselmannKrause(gamma=2.0, ell=0.125), L=1.0)
    drift = particles.drift(model, np.array([0.0625, 0.9375]))
    assert drift[0] == pytest.approx(-2.0 * 1.0 / 2)
    assert drift[1] == pytest.approx(2.0 * 1.0 / 2)


def test_drift_kuramoto_matches_all_pairs(rng):
    model = mvlib.Model(mvlib.Kuramoto(gamma=1.7, L=2.0), L=2.0)
    x = configuration_near_cut(rng, 500, model.L)
    error = np.max(np.abs(particles.drift(model, x) - all_pairs_drift(model, x)))
    assert error <= FORCE_TOLERANCE * force_scale(model.potential)


@pytest.mark.parametrize("potential", [*LOCAL_POTENTIALS.values(), mvlib.Kuramoto(gamma=2.0)],
                         ids=[*LOCAL_POTENTIALS, "kuramoto"])
def test_total_force_zero(potential, rng):
    # W' is odd, so the pair forces cancel: the sum is zero up to round-off of
    # N terms of size max|W'|
    model = mvlib.Model(potential, L=1.0)
    x = rng.uniform(0.0, 1.0, 2000)
    total = np.sum(particles.drift(model, x))
    assert abs(total) <= 100 * np.finfo(float).eps * x.size * force_scale(potential)


def hk_model():
    return mvlib.Model(mvlib.HegselmannKrause(gamma=60.0, ell=0.1), L=1.0, beta=1.0)


def test_simulate_same_seed_same_trajectory(rng):
    model = hk_model()
    x0 = rng.uniform(0.0, 1.0, 300)
    first = particles.simulate(model, x0, 0.05, 1e-4, seed=7, t_eval=[0.01, 0.05])
    second = particles.simulate(model, x0, 0.05, 1e-4, seed=np.random.SeedSequence(7), t_eval=[0.01, 0.05])
    assert np.array_equal(first.positions, second.positions)


def test_simulate_output_times_keep_trajectory(rng):
    model = hk_model()
    x0 = rng.uniform(0.0, 1.0, 300)
    coarse = particles.simulate(model, x0, 0.05, 1e-4, seed=7)
    fine = particles.simulate(model, x0, 0.05, 1e-4, seed=7, t_eval=np.linspace(0.0, 0.05, 11))
    assert np.array_equal(coarse.positions[-1], fine.positions[-1])
    assert np.array_equal(fine.positions[0], x0)


def test_simulate_spawned_seeds_differ(rng):
    model = hk_model()
    x0 = rng.uniform(0.0, 1.0, 300)
    children = particles.spawn_seeds(7, 2)
    first = particles.simulate(model, x0, 0.01, 1e-4, seed=children[0])
    second = particles.simulate(model, x0, 0.01, 1e-4, seed=children[1])
    assert not np.any(first.positions[-1] == second.positions[-1])


def test_spawn_seeds_repeatable():
    first = [child.generate_state(2) for child in particles.spawn_seeds(11, 3)]
    second = [child.generate_state(2) for child in particles.spawn_seeds(11, 3)]
    assert np.array_equal(first, second)


def test_simulate_window_equals_prefix(rng):
    # the two drift methods differ only by round-off, which a short run keeps small
    model = mvlib.Model(LOCAL_POTENTIALS["stiff core"], L=1.0)
    x0 = rng.uniform(0.0, 1.0, 400)
    prefix = particles.simulate(model, x0, 0.002, 1e-4, seed=3, method="prefix")
    window = particles.simulate(model, x0, 0.002, 1e-4, seed=3, method="window")
    difference = np.abs(prefix.positions - window.positions)
    difference = np.minimum(difference, model.L - difference)
    assert np.max(difference) < 1e-10


def test_simulate_positions_stay_on_torus(rng):
    model = hk_model()
    result = particles.simulate(model, rng.uniform(0.0, 1.0, 500), 0.2, 1e-4, seed=5,
                                t_eval=np.linspace(0.02, 0.2, 10))
    assert np.all(result.positions >= 0.0)
    assert np.all(result.positions < model.L)


def test_simulate_kuramoto_runs(rng):
    model = mvlib.Model(mvlib.Kuramoto(gamma=3.0), L=1.0, beta=1.0)
    result = particles.simulate(model, rng.uniform(0.0, 1.0, 300), 0.1, 1e-3, seed=5)
    assert result.method == "kuramoto"
    assert result.positions.shape == (1, 300)


def test_single_particle_variance(rng):
    # Without interaction every particle is a Brownian motion with variance
    # 2t/beta, and Euler–Maruyama is exact. (N-1) s^2 / (2t/beta) is then
    # chi-squared with N-1 degrees of freedom. The two-sided acceptance region
    # at level 1e-6 gives a false failure with probability 1e-6 per time, so
    # at most 3e-6 for the three times.
    beta = 2.5
    model = mvlib.Model(mvlib.HegselmannKrause(gamma=0.0, ell=0.1), L=1.0, beta=beta)
    size = 4000
    times = [0.01, 0.02, 0.04]
    result = particles.simulate(model, rng.uniform(0.0, 1.0, size), times[-1], 1e-4, seed=21, t_eval=times,
                                track_displacement=True)
    low, high = stats.chi2.ppf([0.5e-6, 1 - 0.5e-6], size - 1)
    for time_, displacement in zip(result.t, result.displacement):
        statistic = (size - 1) * np.var(displacement, ddof=1) / (2.0 * time_ / beta)
        assert low < statistic < high, f"t = {time_}: variance ratio {statistic / (size - 1):.4f}"


def test_displacement_matches_positions(rng):
    model = hk_model()
    x0 = rng.uniform(0.0, 1.0, 200)
    result = particles.simulate(model, x0, 0.01, 1e-4, seed=2, track_displacement=True)
    wrapped = (x0 + result.displacement[-1]) % model.L
    difference = np.abs(wrapped - result.positions[-1])
    assert np.max(np.minimum(difference, model.L - difference)) < 1e-12


# --- bad input --------------------------------------------------------------


def test_rejects_one_particle():
    with pytest.raises(ValueError, match="N = 1"):
        particles.simulate(hk_model(), [0.5], 0.1, 1e-4, seed=0)


@pytest.mark.parametrize("dt", [0.0, -1e-4, float("nan"), float("inf")])
def test_rejects_bad_dt(dt):
    with pytest.raises(ValueError, match="dt"):
        particles.simulate(hk_model(), [0.1, 0.5], 0.1, dt, seed=0)


def test_rejects_dt_beyond_range():
    # sqrt(2 dt / beta) = 0.1 = ell
    with pytest.raises(ValueError, match="dt = 0.005 is invalid"):
        particles.simulate(hk_model(), [0.1, 0.5], 0.1, 0.005, seed=0)


@pytest.mark.parametrize("positions", [[0.1, -0.2], [0.1, 1.0], [0.1, 3.5]])
def test_rejects_positions_outside_torus(positions):
    with pytest.raises(ValueError, match="outside the torus"):
        particles.simulate(hk_model(), positions, 0.1, 1e-4, seed=0)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_rejects_non_finite_positions(value):
    with pytest.raises(ValueError, match="non-finite"):
        particles.simulate(hk_model(), [0.1, value], 0.1, 1e-4, seed=0)


def test_rejects_positions_not_one_dimensional():
    with pytest.raises(ValueError, match="1-D"):
        particles.simulate(hk_model(), [[0.1, 0.2], [0.3, 0.4]], 0.1, 1e-4, seed=0)


@pytest.mark.parametrize("t_final", [0.0, -1.0, float("nan")])
def test_rejects_bad_t_final(t_final):
    with pytest.raises(ValueError, match="t_final"):
        particles.simulate(hk_model(), [0.1, 0.5], t_final, 1e-4, seed=0)


@pytest.mark.parametrize("t_eval", [[0.05, 0.02], [0.2], [-0.01], [0.01, 0.01]])
def test_rejects_bad_t_eval(t_eval):
    with pytest.raises(ValueError, match="t_eval"):
        particles.simulate(hk_model(), [0.1, 0.5], 0.1, 1e-4, seed=0, t_eval=t_eval)


@pytest.mark.parametrize("seed", [-1, 1.5, "7", None])
def test_rejects_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        particles.simulate(hk_model(), [0.1, 0.5], 0.1, 1e-4, seed=seed)


def test_rejects_unknown_method():
    with pytest.raises(ValueError, match="method"):
        particles.drift(hk_model(), [0.1, 0.5], method="pairs")


def test_rejects_window_for_kuramoto():
    with pytest.raises(ValueError, match="window"):
        particles.drift(mvlib.Model(mvlib.Kuramoto(1.0)), [0.1, 0.5], method="window")


def test_max_step_message_suggests_dt():
    model = hk_model()
    with pytest.raises(ValueError) as error:
        particles.simulate(model, [0.1, 0.5], 0.1, 0.01, seed=0)
    suggested = float(str(error.value).rsplit("dt < ", 1)[1])
    slope = particles._max_slope(model.potential)
    # the message rounds dt to three digits
    assert math.sqrt(2 * suggested / model.beta) + suggested * slope == pytest.approx(model.potential.range, rel=1e-2)
