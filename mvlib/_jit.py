"""The one place where numba's compile options and on-disk cache are set.

Numba keys its on-disk cache on the source file of the compiled function only,
so a kernel that calls a helper from another module keeps running the old
helper after that helper changes. To rule this out, the cache lives in a folder
named after a hash of every source file of ``mvlib``: any edit to the library
starts a fresh cache, and a stale one is never loaded.
"""

import hashlib
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def source_hash(package_dir=PACKAGE_DIR):
    """Return a short SHA-256 over the names and contents of the package's Python sources."""
    digest = hashlib.sha256()
    for path in sorted(Path(package_dir).rglob("*.py")):
        digest.update(str(path.relative_to(package_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


SOURCE_HASH = source_hash()


def _numba_cache_dir():
    base = os.environ.get("MVLIB_NUMBA_CACHE_DIR")
    if base is None:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mvlib-numba"
    return str(Path(base) / SOURCE_HASH)


# numba reads NUMBA_CACHE_DIR when it is imported and config.CACHE_DIR when a
# cached function is defined. Both are set, so the order of imports in a
# notebook does not matter.
NUMBA_CACHE_DIR = _numba_cache_dir()
os.environ["NUMBA_CACHE_DIR"] = NUMBA_CACHE_DIR

import numba  # noqa: E402

numba.config.CACHE_DIR = NUMBA_CACHE_DIR


def jit(function=None, **options):
    """Compile ``function`` with numba in nopython mode, cached on disk.

    ``fastmath`` stays off: the PDE and particle kernels rely on IEEE
    semantics for exp of large negative arguments and for NaN checks.
    Extra keyword arguments are passed to :func:`numba.njit`.
    """
    settings = {"cache": True, "fastmath": False, "nogil": True}
    settings.update(options)
    if function is None:
        return lambda f: numba.njit(**settings)(f)
    return numba.njit(**settings)(function)
