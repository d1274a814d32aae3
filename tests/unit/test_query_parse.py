"""Pure matching rules of dicom_node.domain.query: DT parsing, item matching."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone

import pytest

from dicom_node.domain.query import (
    AnyOf,
    InvalidQuery,
    Range,
    Single,
    UidList,
    Universal,
    Wildcard,
    datetime_match,
    parse_match,
    value_matches,
)
from dicom_node.domain.vr import normalize_dt

PLUS_ONE = timezone(timedelta(hours=1))

# (value, local zone) -> (low, high) in UTC, at the precision given (PS3.4 C.2.2.2.5)
DT_CASES = [
    ("20260105", UTC, ("20260105000000.000000", "20260105235959.999999")),
    ("2026", UTC, ("20260101000000.000000", "20261231235959.999999")),
    ("202602", UTC, ("20260201000000.000000", "20260228235959.999999")),
    ("20260105101530.25", UTC, ("20260105101530.250000", "20260105101530.259999")),
    # a UTC offset is applied; a value without one is in the local zone
    ("202601051015+0100", UTC, ("20260105091500.000000", "20260105091559.999999")),
    ("202601051015", PLUS_ONE, ("20260105091500.000000", "20260105091559.999999")),
    ("202601050030-0130", UTC, ("20260105020000.000000", "20260105020059.999999")),
    # ranges, open ends; the offset's - is not the range separator
    ("2026010510-2026010512", UTC, ("20260105100000.000000", "20260105125959.999999")),
    ("20260105-0500", UTC, ("20260105050000.000000", "20260106045959.999999")),
    ("20260105+0100-20260106-0100", UTC, ("20260104230000.000000", "20260107005959.999999")),
    ("2026-2027", UTC, ("20260101000000.000000", "20271231235959.999999")),  # not an offset
    ("2026-", UTC, ("20260101000000.000000", None)),
    ("-20260105", UTC, (None, "20260105235959.999999")),
    ("20261231235960", UTC, ("20261231235959.999999", "20261231235959.999999")),  # leap s
]


@pytest.mark.parametrize(("value", "zone", "bounds"), DT_CASES, ids=[c[0] for c in DT_CASES])
def test_dt_values_and_ranges_become_utc_bounds_at_their_precision(
    value: str, zone: timezone, bounds: tuple[str | None, str | None]
) -> None:
    assert datetime_match(value, keyword="AcquisitionDateTime", local=zone) == Range(*bounds)


BAD_DT = ["2026010", "20261301", "20260230", "202601051060", "20260105+1500", "-", "2026-01-05",
          "20260106-20260105", "20260105.5", "abc"]  # fmt: skip


@pytest.mark.parametrize("value", BAD_DT)
def test_malformed_dt_is_refused(value: str) -> None:
    with pytest.raises(InvalidQuery):
        datetime_match(value, keyword="AcquisitionDateTime", local=UTC)


def test_parse_match_reads_dt_keys_as_utc_ranges() -> None:
    match = parse_match("DT", "20260105+0000", keyword="AcquisitionDateTime")
    assert match == Range("20260105000000.000000", "20260105235959.999999")
    assert parse_match("DT", "", keyword="AcquisitionDateTime") == Universal()


def test_normalized_dt_compares_as_text_across_offsets() -> None:
    paris = normalize_dt("20260105120000+0100")  # 11:00 UTC
    new_york = normalize_dt("20260105070000-0500")  # 12:00 UTC
    assert paris == "20260105110000.000000" and new_york is not None and paris < new_york
    assert normalize_dt("not a date") is None


@pytest.mark.parametrize(
    ("match", "value", "expected"),
    [
        (Universal(), None, True),
        (Single("ACC1"), "ACC1", True),
        (Single("ACC1"), "acc1", False),
        (Single("ACC1"), None, False),
        (Wildcard("AC?1*"), "ACX1-2", True),
        (Wildcard("A*"), "BA", False),
        (Wildcard("5%*"), "5%X", True),  # regex and LIKE characters are literal
        (Wildcard("5.*"), "5X", False),
        (UidList(("1.2", "1.3")), "1.3", True),
        (AnyOf((Single("A"), Wildcard("B*"))), "BX", True),
        (Range("20260101", None), "20251231", False),
    ],
)
def test_item_values_match_by_the_same_rules_as_the_sql(
    match: object, value: str | None, expected: bool
) -> None:
    assert value_matches(match, value) is expected  # type: ignore[arg-type]
