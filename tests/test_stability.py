import numpy as np
import pytest

import mvlib


def test_growth_rates_match_closed_form():
    model = mvlib.Model(mvlib.HegselmannKrause(300.0, 0.1), L=1.0, beta=2.0)
    k = np.arange(1, 50)
    q = 2 * np.pi * k
    a = q * 0.1
    w_hat = 2 * 300.0 * 0.01 * (a * np.cos(a) - np.sin(a)) / a**3
    assert np.allclose(mvlib.growth_rates(model, k), -q**2 * (1 / 2.0 + w_hat), rtol=1e-12)


@pytest.mark.parametrize("ell", [0.02, 0.1, 0.3, 0.45])
def test_gamma_sharp_is_where_sigma_changes_sign(ell):
    model = mvlib.Model(mvlib.HegselmannKrause(1.0, ell), beta=0.5)
    gamma = mvlib.gamma_sharp(model)
    k = np.arange(1, 2000)
    assert np.max(mvlib.growth_rates(model.with_gamma(gamma * (1 - 1e-9)), k)) < 0
    assert np.max(mvlib.growth_rates(model.with_gamma(gamma * (1 + 1e-9)), k)) > 0


def test_gamma_sharp_of_kuramoto():
    # W_hat(q_1) = -gamma L / 2, so sigma_1 = 0 at gamma = 2 / beta
    for beta in (0.5, 1.0, 3.0):
        assert mvlib.gamma_sharp(mvlib.Model(mvlib.Kuramoto(1.0), beta=beta)) == pytest.approx(2 / beta, rel=1e-14)


def test_gamma_sharp_with_stiff_core_uses_higher_mode():
    # a strongly repulsive core makes W_hat(q_1) positive, so another mode must
    # carry the instability, and the scan over modes has to find it
    potential = mvlib.PiecewiseParabolic(1.0, 0.3, core_radius=0.5, core_stiffness=-6.0, tail_stiffness=1.0)
    model = mvlib.Model(potential)
    k = np.arange(1, 5000)
    w = potential.fourier(2 * np.pi * k)
    assert w[0] > 0
    assert mvlib.gamma_sharp(model) == pytest.approx(1.0 / np.max(-w), rel=1e-14)


def test_gamma_sharp_ignores_model_gamma():
    model = mvlib.Model(mvlib.HegselmannKrause(1.0, 0.1))
    assert mvlib.gamma_sharp(model.with_gamma(-5.0)) == mvlib.gamma_sharp(model)


class PositiveDefiniteShape(mvlib.Kuramoto):
    """A shape with W_hat(q_k) > 0 on every mode: no attraction can destabilise it."""

    def fourier(self, q):
        return abs(self.gamma) * np.ones_like(np.asarray(q, dtype=float))


def test_gamma_sharp_rejects_shape_without_unstable_mode():
    with pytest.raises(ValueError, match="gamma_sharp does not exist"):
        mvlib.gamma_sharp(mvlib.Model(PositiveDefiniteShape(1.0)))


def test_fastest_mode_is_global_maximum():
    model = mvlib.Model(mvlib.HegselmannKrause(2000.0, 0.05))
    k_max, rate = mvlib.fastest_mode(model)
    rates = mvlib.growth_rates(model, np.arange(1, 5000))
    assert k_max == 1 + int(np.argmax(rates))
    assert rate == pytest.approx(rates.max())


def test_predicted_cluster_count_below_and_above_threshold():
    model = mvlib.Model(mvlib.HegselmannKrause(1.0, 0.1))
    gamma = mvlib.gamma_sharp(model)
    assert mvlib.predicted_cluster_count(model.with_gamma(0.9 * gamma)) == 0
    assert mvlib.predicted_cluster_count(model.with_gamma(1.01 * gamma)) == 1
    assert mvlib.predicted_cluster_count(model.with_gamma(3 * gamma)) >= 2


@pytest.mark.parametrize("k", [0, -1, 1.5, [1, 2.5]])
def test_growth_rates_reject_invalid_modes(k):
    model = mvlib.Model(mvlib.HegselmannKrause(1.0, 0.1))
    with pytest.raises(ValueError, match="k = .* is invalid"):
        mvlib.growth_rates(model, k)


def hk_at(multiple):
    unit = mvlib.Model(mvlib.HegselmannKrause(1.0, 0.1))
    return unit.with_gamma(multiple * mvlib.gamma_sharp(unit))


@pytest.mark.parametrize("multiple", [1.5, 3.0, 5.0])
def test_count_probabilities_sum_to_one(multiple):
    _, probabilities = mvlib.stability.count_probabilities(hk_at(multiple), 10_000)
    assert np.all(probabilities >= 0)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-9)


def test_count_probabilities_match_sampling(rng):
    # Draw the Gaussian Fourier coefficients, grow them linearly and take the
    # largest. 2e5 samples give a standard error below 1.2e-3, and the
    # tolerance of 6e-3 is five of them.
    N = 2000
    model = hk_at(3.0)
    modes, probabilities = mvlib.stability.count_probabilities(model, N)
    rates = mvlib.growth_rates(model, modes)
    samples = 200_000
    amplitude = np.abs(rng.normal(size=(samples, modes.size)) + 1j * rng.normal(size=(samples, modes.size)))
    winners = np.argmax(amplitude * N ** (0.5 * rates / rates.max()), axis=1)
    frequencies = np.bincount(winners, minlength=modes.size) / samples
    assert np.max(np.abs(frequencies - probabilities)) < 6e-3


def test_count_probabilities_reject_stable_state():
    with pytest.raises(ValueError, match="linearly stable"):
        mvlib.stability.count_probabilities(hk_at(0.5), 1000)


def test_count_probabilities_reject_small_n():
    with pytest.raises(ValueError, match="N"):
        mvlib.stability.count_probabilities(hk_at(2.0), 1)
