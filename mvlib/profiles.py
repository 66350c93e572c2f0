"""Run profiles: the fast ``ci`` profile and the paper-scale ``full`` profile.

The profile is read from the environment variable ``MVLIB_PROFILE`` (``ci``
when unset). Chapters pick every size, seed count and run length through
:func:`pick`, so both profiles run the same code with different numbers.
"""

import os

PROFILES = ("ci", "full")
ENVIRONMENT_VARIABLE = "MVLIB_PROFILE"


def current():
    """Return the active profile name, ``"ci"`` or ``"full"``.

    Raises
    ------
    ValueError
        If ``MVLIB_PROFILE`` is set to anything else.
    """
    name = os.environ.get(ENVIRONMENT_VARIABLE, "ci").strip().lower() or "ci"
    if name not in PROFILES:
        raise ValueError(f"{ENVIRONMENT_VARIABLE} = {name!r} is invalid: expected one of {PROFILES}")
    return name


def pick(*, ci, full):
    """Return ``ci`` or ``full`` according to the active profile."""
    return full if current() == "full" else ci
