import numpy as np
import pytest

import mvlib


def test_model_defaults_and_gamma():
    model = mvlib.Model(mvlib.HegselmannKrause(5.0, 0.1))
    assert (model.L, model.beta, model.gamma) == (1.0, 1.0, 5.0)
    stronger = model.with_gamma(9.0)
    assert stronger.gamma == 9.0
    assert stronger.potential.ell == 0.1
    assert model.gamma == 5.0


@pytest.mark.parametrize(
    "L, beta, message",
    [
        (0.0, 1.0, r"L = 0.0 is invalid: must be > 0"),
        (-1.0, 1.0, r"L = -1.0 is invalid: must be > 0"),
        (np.inf, 1.0, r"L = inf is invalid: expected a finite real number"),
        (1.0, 0.0, r"beta = 0.0 is invalid: must be > 0"),
        (1.0, np.nan, r"beta = nan is invalid: expected a finite real number"),
    ],
)
def test_model_rejects_invalid_numbers(L, beta, message):
    with pytest.raises(ValueError, match=message):
        mvlib.Model(mvlib.HegselmannKrause(1.0, 0.1), L=L, beta=beta)


def test_model_rejects_range_beyond_half_torus():
    with pytest.raises(ValueError, match=r"ell = 0.5 is invalid: .* must lie in \(0, L/2\) = \(0, 0.5\)"):
        mvlib.Model(mvlib.HegselmannKrause(1.0, 0.5), L=1.0)


def test_model_accepts_range_below_half_torus():
    assert mvlib.Model(mvlib.HegselmannKrause(1.0, 0.49), L=1.0).potential.ell == 0.49


def test_model_rejects_kuramoto_of_other_length():
    with pytest.raises(ValueError, match=r"potential.L = 1.0 is invalid"):
        mvlib.Model(mvlib.Kuramoto(1.0), L=2.0)
    assert mvlib.Model(mvlib.Kuramoto(1.0, L=2.0), L=2.0).L == 2.0


def test_model_rejects_non_potential():
    with pytest.raises(TypeError, match="potential must be an mvlib potential"):
        mvlib.Model(lambda x: x)
