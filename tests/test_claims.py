import json

import pytest

import mvlib
from mvlib import claims


def test_passing_claims_are_recorded():
    ledger = mvlib.ClaimLedger("A chapter")
    ledger.close_to("pi", 3.14159, 3.1416, atol=1e-4)
    ledger.below("small", 1e-13, 1e-10)
    ledger.above("positive", 2.0, 0.0)
    ledger.holds("loop closes", True, measured="width 3", expected="width > 0")
    records = json.loads(ledger.path.read_text())
    assert [record["claim"] for record in records] == ["pi", "small", "positive", "loop closes"]
    assert all(record["passed"] for record in records)
    assert records[0]["tolerance"] == pytest.approx(1e-4)
    assert records[1]["expected"] == "< 1e-10"
    assert records[0]["profile"] == "ci"


@pytest.mark.parametrize(
    "state",
    [
        lambda ledger: ledger.close_to("equal", 1.0, 2.0, rtol=0.1),
        lambda ledger: ledger.below("small", 1.0, 0.5),
        lambda ledger: ledger.above("large", 0.1, 0.5),
        lambda ledger: ledger.holds("true", False, measured="no", expected="yes"),
    ],
)
def test_failing_claim_raises_and_is_recorded(state):
    ledger = mvlib.ClaimLedger("A chapter")
    with pytest.raises(mvlib.ClaimFailed, match="A chapter: "):
        state(ledger)
    (record,) = claims.read_all()
    assert record["passed"] is False


def test_nan_measurement_fails():
    ledger = mvlib.ClaimLedger("A chapter")
    with pytest.raises(mvlib.ClaimFailed):
        ledger.below("error", float("nan"), 1.0)
    with pytest.raises(mvlib.ClaimFailed):
        ledger.close_to("value", float("nan"), 1.0, rtol=1.0)


def test_reopening_a_chapter_replaces_its_records():
    first = mvlib.ClaimLedger("Chapter one")
    first.above("x", 1.0, 0.0)
    first.above("y", 1.0, 0.0)
    mvlib.ClaimLedger("Chapter two").below("z", 0.0, 1.0)
    again = mvlib.ClaimLedger("Chapter one")
    again.above("x", 2.0, 0.0)
    assert sorted(record["claim"] for record in claims.read_all()) == ["x", "z"]


def test_profile_pick(monkeypatch):
    assert mvlib.profiles.pick(ci=1, full=2) == 1
    monkeypatch.setenv("MVLIB_PROFILE", "full")
    assert mvlib.profiles.pick(ci=1, full=2) == 2
    monkeypatch.setenv("MVLIB_PROFILE", "paper")
    with pytest.raises(ValueError, match=r"MVLIB_PROFILE = 'paper' is invalid: expected one of \('ci', 'full'\)"):
        mvlib.profiles.pick(ci=1, full=2)


def test_ledger_outside_build_stores_nothing(monkeypatch, tmp_path):
    # a chapter run as a notebook outside the book build must not change the
    # claims the built book lists, but a failed claim still raises
    monkeypatch.delenv("MVLIB_CLAIMS_DIR")
    monkeypatch.chdir(tmp_path)
    ledger = mvlib.ClaimLedger("Outside the build")
    ledger.below("a small number", 1.0, 2.0)
    assert ledger.path is None
    assert len(ledger.records) == 1
    assert mvlib.claims.read_all() == []
    with pytest.raises(mvlib.claims.ClaimFailed):
        ledger.below("a large number", 3.0, 2.0)
