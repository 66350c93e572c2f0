"""The pieces that keep cached results and compiled code in step with mvlib's source."""

import importlib.util
import json
import shutil
import types
from pathlib import Path

import mvlib
from mvlib import _jit

ROOT = Path(__file__).resolve().parent.parent


def test_source_hash_changes_with_any_source_file(tmp_path):
    copy = tmp_path / "mvlib"
    shutil.copytree(_jit.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = _jit.source_hash(copy)
    assert before == _jit.SOURCE_HASH
    with open(copy / "grid.py", "a") as stream:
        stream.write("\n# edited\n")
    assert _jit.source_hash(copy) != before


def test_numba_cache_folder_is_keyed_on_source():
    import numba

    assert Path(_jit.NUMBA_CACHE_DIR).name == _jit.SOURCE_HASH
    assert numba.config.CACHE_DIR == _jit.NUMBA_CACHE_DIR


def load_extension():
    spec = importlib.util.spec_from_file_location("mvlib_book", ROOT / "_ext" / "mvlib_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_app(tmp_path):
    config = types.SimpleNamespace(nb_execution_cache_path=str(tmp_path / "_build" / ".jupyter_cache"))
    return types.SimpleNamespace(outdir=str(tmp_path / "_build" / "html"), config=config), config


def test_execution_cache_cleared_when_source_changes(tmp_path, monkeypatch):
    extension = load_extension()
    app, config = fake_app(tmp_path)
    cache = Path(config.nb_execution_cache_path)

    cache.mkdir(parents=True)
    extension._clear_stale_execution_cache(app, config)
    assert not cache.exists(), "a build without a stamp must not trust an existing cache"
    stamp = json.loads((tmp_path / "_build" / "mvlib-build-stamp.json").read_text())
    assert stamp["mvlib"] == mvlib.SOURCE_HASH

    cache.mkdir(parents=True)
    extension._clear_stale_execution_cache(app, config)
    assert cache.exists(), "an unchanged library must keep the cache"

    monkeypatch.setattr(mvlib, "SOURCE_HASH", "0" * 16)
    extension._clear_stale_execution_cache(app, config)
    assert not cache.exists(), "a changed library must clear the cache"


def test_execution_cache_cleared_when_profile_changes(tmp_path, monkeypatch):
    extension = load_extension()
    app, config = fake_app(tmp_path)
    cache = Path(config.nb_execution_cache_path)
    extension._clear_stale_execution_cache(app, config)
    cache.mkdir(parents=True)
    monkeypatch.setenv("MVLIB_PROFILE", "full")
    extension._clear_stale_execution_cache(app, config)
    assert not cache.exists()
    assert json.loads(config.mvlib_build_stamp)["profile"] == "full"
