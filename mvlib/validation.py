"""Checks of user input that raise :class:`ValueError` naming the parameter.

Every message has the form ``"<name> = <value> is invalid: <allowed range>"``
so that a reader sees the parameter, the value passed and what to pass instead.
Nothing here clamps a value.
"""

import math
import numbers

import numpy as np


def _fail(name, value, allowed):
    raise ValueError(f"{name} = {value!r} is invalid: {allowed}")


def real_number(name, value):
    """Return ``value`` as a float, or raise if it is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _fail(name, value, "expected a finite real number")
    value = float(value)
    if not math.isfinite(value):
        _fail(name, value, "expected a finite real number")
    return value


def positive(name, value):
    """Return ``value`` as a float, or raise unless it is finite and > 0."""
    value = real_number(name, value)
    if value <= 0:
        _fail(name, value, "must be > 0")
    return value


def in_interval(name, value, low, high, *, closed_low=False, closed_high=False):
    """Return ``value`` as a float, or raise unless it lies in the interval.

    The interval is open at both ends unless ``closed_low``/``closed_high``.
    """
    value = real_number(name, value)
    above = value >= low if closed_low else value > low
    below = value <= high if closed_high else value < high
    if not (above and below):
        left = "[" if closed_low else "("
        right = "]" if closed_high else ")"
        _fail(name, value, f"must lie in {left}{low:g}, {high:g}{right}")
    return value


def integers_at_least(name, values, minimum):
    """Return ``values`` as an int array, or raise unless every entry is an integer >= minimum."""
    array = np.asarray(values)
    if array.dtype.kind not in "iu" and not (array.dtype.kind == "f" and np.all(array == np.round(array))):
        raise ValueError(f"{name} = {values!r} is invalid: expected integers >= {minimum}")
    if np.any(array < minimum):
        raise ValueError(f"{name} = {values!r} is invalid: every entry must be an integer >= {minimum}")
    return array.astype(int)


def integer_at_least(name, value, minimum):
    """Return ``value`` as an int, or raise unless it is an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(name, value, f"expected an integer >= {minimum}")
    value = int(value)
    if value < minimum:
        _fail(name, value, f"must be an integer >= {minimum}")
    return value


def density(name, values, size):
    """Return ``values`` as a float array of length ``size`` holding a density.

    Raises unless every entry is finite and >= 0 and the sum is > 0.
    """
    array = np.asarray(values, dtype=float)
    if array.shape != (size,):
        raise ValueError(f"{name} has shape {array.shape}, expected ({size},): one value per grid cell")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{name} contains non-finite values at {bad.size} of {size} cells (first: {bad[:5].tolist()})")
    if np.any(array < 0):
        raise ValueError(
            f"{name} is negative at {np.count_nonzero(array < 0)} cells (minimum {array.min():.3g}): "
            "a density must be >= 0"
        )
    if not array.sum() > 0:
        raise ValueError(f"{name} has zero mass: a density must have a positive integral")
    return array
