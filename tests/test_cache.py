import os
import warnings

import numpy as np
import pytest

import mvlib
from mvlib import cache


def counting(value):
    calls = []

    def compute():
        calls.append(1)
        return value

    return compute, calls


def test_cache_stores_and_reuses(tmp_path):
    compute, calls = counting({"rho": np.arange(5.0)})
    first = cache.cached("run", {"M": 5, "gamma": 2.0}, compute)
    second = cache.cached("run", {"gamma": 2.0, "M": 5}, compute)
    assert len(calls) == 1
    assert np.array_equal(first["rho"], second["rho"])


def test_cache_key_depends_on_parameters_and_source():
    base = cache.cache_key("run", {"M": 5})
    assert cache.cache_key("run", {"M": 6}) != base
    assert cache.cache_key("other", {"M": 5}) != base
    assert cache.cache_key("run", {"model": mvlib.Model(mvlib.HegselmannKrause(1.0, 0.1))}) != cache.cache_key(
        "run", {"model": mvlib.Model(mvlib.HegselmannKrause(1.0, 0.2))}
    )


def test_corrupt_entry_is_recomputed_with_one_warning():
    compute, calls = counting([1, 2, 3])
    cache.cached("run", {"n": 3}, compute)
    (entry,) = list(cache.cache_dir().glob("run-*.pkl"))
    data = bytearray(entry.read_bytes())
    data[-5] ^= 0xFF
    entry.write_bytes(bytes(data))

    with pytest.warns(UserWarning, match="unreadable .*checksum mismatch.*recomputing") as record:
        assert cache.cached("run", {"n": 3}, compute) == [1, 2, 3]
    assert len(record) == 1
    assert len(calls) == 2

    # the rewritten entry is valid again: no warning, no recomputation
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.cached("run", {"n": 3}, compute) == [1, 2, 3]
    assert len(calls) == 2


def test_truncated_entry_is_recomputed():
    compute, calls = counting("value")
    cache.cached("run", {"n": 1}, compute)
    (entry,) = list(cache.cache_dir().glob("run-*.pkl"))
    entry.write_bytes(entry.read_bytes()[:10])
    with pytest.warns(UserWarning, match="unreadable"):
        assert cache.cached("run", {"n": 1}, compute) == "value"
    assert len(calls) == 2


def test_failed_computation_leaves_no_entry():
    def failing():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.cached("run", {"n": 2}, failing)
    assert not cache.cache_dir().exists() or not list(cache.cache_dir().iterdir())


def test_interrupted_write_leaves_no_entry(monkeypatch):
    def interrupted_replace(source, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        cache.cached("run", {"n": 4}, lambda: "value")
    assert list(cache.cache_dir().iterdir()) == []


def test_cache_rejects_unstable_parameter():
    with pytest.raises(TypeError, match="cache parameter of type object has no stable form"):
        cache.cache_key("run", {"thing": object()})


def test_cache_folder_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MVLIB_CACHE_DIR", str(tmp_path / "elsewhere"))
    cache.cached("run", {}, lambda: 1)
    assert len(list((tmp_path / "elsewhere").glob("run-*.pkl"))) == 1
