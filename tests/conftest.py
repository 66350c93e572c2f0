"""Shared test set-up: headless plotting, strict floating point, isolated caches."""

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def strict_floating_point():
    """Raise on overflow, division by zero and invalid operations; underflow is normal here."""
    with np.errstate(all="raise", under="ignore"):
        yield


@pytest.fixture(autouse=True)
def isolated_output(tmp_path, monkeypatch):
    """Keep the result cache and the claims ledger of each test in its own folder."""
    monkeypatch.setenv("MVLIB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MVLIB_CLAIMS_DIR", str(tmp_path / "claims"))
    monkeypatch.delenv("MVLIB_PROFILE", raising=False)


@pytest.fixture
def rng():
    """A seeded NumPy generator, so that random inputs are the same on every run."""
    return np.random.default_rng(20251017)
