"""A ledger of the paper's claims as the book's chapters test them.

A chapter opens a :class:`ClaimLedger` under its title and states each claim
with the value it measured and the value or bound it expects. Each record is
stored at once in ``<claims folder>/<chapter slug>.json``, and a failed claim
raises :class:`ClaimFailed`, so the chapter, and with it the book build, fails.
Opening a ledger clears the chapter's earlier records, so the files always
describe the latest run of each chapter. :func:`read_all` collects them for the
"Claims and their status" page and for ``_build/claims.json``.

The folder is ``MVLIB_CLAIMS_DIR``, which the book build sets to
``_build/claims``. Without it, as when a chapter runs as a notebook outside the
build, a ledger keeps its records in memory only: a run with other parameters
never changes the claims that the built book lists.
"""

import json
import math
import os
import re
import tempfile
from pathlib import Path

from . import profiles


class ClaimFailed(AssertionError):
    """Raised when a measured value does not satisfy the claim it tests."""


def claims_dir():
    """Return the folder holding one JSON ledger per chapter, or None when MVLIB_CLAIMS_DIR is unset."""
    chosen = os.environ.get("MVLIB_CLAIMS_DIR")
    return Path(chosen) if chosen else None


def _slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "chapter"


def _number(value):
    value = float(value)
    return value if math.isfinite(value) else str(value)


class ClaimLedger:
    """The claims of one chapter.

    Parameters
    ----------
    chapter : str
        The chapter's title, as shown in the claims table.
    """

    def __init__(self, chapter):
        self.chapter = chapter
        self.records = []
        folder = claims_dir()
        self.path = folder / f"{_slug(chapter)}.json" if folder is not None else None
        self._save()

    def _save(self):
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(handle, "w") as stream:
            json.dump(self.records, stream, indent=1)
        os.replace(temporary, self.path)

    def _record(self, claim, measured, expected, tolerance, passed):
        record = {
            "chapter": self.chapter,
            "claim": claim,
            "measured": measured,
            "expected": expected,
            "tolerance": tolerance,
            "passed": bool(passed),
            "profile": profiles.current(),
        }
        self.records.append(record)
        self._save()
        if not passed:
            raise ClaimFailed(f"{self.chapter}: {claim}: measured {measured}, expected {expected}")

    def close_to(self, claim, measured, expected, *, rtol=0.0, atol=0.0):
        """Claim ``|measured - expected| <= atol + rtol*|expected|``."""
        tolerance = atol + rtol * abs(expected)
        passed = abs(measured - expected) <= tolerance
        self._record(claim, _number(measured), _number(expected), _number(tolerance), passed)

    def below(self, claim, measured, bound):
        """Claim ``measured < bound``."""
        self._record(claim, _number(measured), f"< {bound:.6g}", None, measured < bound)

    def above(self, claim, measured, bound):
        """Claim ``measured > bound``."""
        self._record(claim, _number(measured), f"> {bound:.6g}", None, measured > bound)

    def holds(self, claim, passed, *, measured, expected):
        """Claim a condition the chapter evaluated itself, described by ``measured`` and ``expected`` strings."""
        self._record(claim, str(measured), str(expected), None, bool(passed))


def read_all(folder=None):
    """Return every stored claim record, ordered by chapter file name (none without a folder)."""
    folder = Path(folder) if folder is not None else claims_dir()
    if folder is None:
        return []
    records = []
    for path in sorted(folder.glob("*.json")):
        records.extend(json.loads(path.read_text()))
    return records
