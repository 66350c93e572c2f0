"""On-disk cache for expensive results, keyed by their parameters and mvlib's source.

An entry is a file ``<name>-<key>.pkl`` in the cache folder, where ``key`` is a
SHA-256 of the canonical JSON of the parameters together with the hash of every
mvlib source file, so a change to the library never serves an old result. The
file holds a header, the SHA-256 of the payload and the pickled payload; it is
written to a temporary file in the same folder and renamed into place, so a run
killed mid-write leaves no entry that could be read as valid. An entry that
cannot be read or fails its checksum is reported once with a warning, deleted
and recomputed.

The folder is ``MVLIB_CACHE_DIR`` if set, else ``_build/mvlib-cache`` at the
root of the repository that contains mvlib.
"""

import hashlib
import json
import logging
import os
import pickle
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ._jit import PACKAGE_DIR, SOURCE_HASH

_logger = logging.getLogger(__name__)

_MAGIC = b"mvlib-cache-v1\n"


def cache_dir():
    """Return the cache folder (not created until something is stored)."""
    chosen = os.environ.get("MVLIB_CACHE_DIR")
    if chosen:
        return Path(chosen)
    return PACKAGE_DIR.parent / "_build" / "mvlib-cache"


def _canonical(value):
    """Convert parameters to JSON-serialisable values with a stable form."""
    if isinstance(value, dict):
        return {str(key): _canonical(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "__dataclass_fields__"):
        fields = {name: getattr(value, name) for name in value.__dataclass_fields__}
        return {"type": type(value).__name__, "fields": _canonical(fields)}
    raise TypeError(f"cache parameter of type {type(value).__name__} has no stable form: use numbers, strings, lists, dicts, arrays or dataclasses")


def cache_key(name, params):
    """Return the hex key of a result ``name`` computed from ``params``."""
    text = json.dumps({"name": name, "params": _canonical(params), "mvlib": SOURCE_HASH}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read(path):
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        raise ValueError("missing header")
    digest, payload = data[len(_MAGIC) : len(_MAGIC) + 32], data[len(_MAGIC) + 32 :]
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError("checksum mismatch")
    return pickle.loads(payload)


def _write(path, value):
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(_MAGIC + hashlib.sha256(payload).digest() + payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def cached(name, params, compute):
    """Return ``compute()``, from the cache when an entry for ``(name, params)`` exists.

    Parameters
    ----------
    name : str
        A short label for the result, used in the file name.
    params : dict
        Everything the result depends on besides mvlib's code.
    compute : callable
        Called without arguments on a cache miss; its return value must pickle.
    """
    path = cache_dir() / f"{name}-{cache_key(name, params)}.pkl"
    if path.exists():
        try:
            value = _read(path)
        except Exception as error:  # any unreadable entry is recomputed
            warnings.warn(f"cache entry {path} is unreadable ({error}); recomputing it", stacklevel=2)
            path.unlink(missing_ok=True)
        else:
            _logger.info("cache hit for %s: %s", name, path)
            return value
    value = compute()
    _write(path, value)
    _logger.info("stored %s in %s", name, path)
    return value
