"""The DICOM value rules (domain/vr.py): each rule's accepted and refused
values, at its boundaries. Pure: no database, no network."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone

import pytest

from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.vr import (
    INTEGER_RANGES,
    MAX_LENGTH,
    MODALITY_CODES,
    PATIENT_SEXES,
    date_text,
    dicom_date,
    is_calendar_date,
    is_code_string,
    is_valid_uid,
    long_string,
    modality_code,
    normalize_dt,
    normalize_tm,
    person_name,
    short_string,
    validate_ae_title,
    validate_uid,
)


def test_the_lengths_are_ps3_5s_and_the_nodes_own() -> None:
    assert MAX_LENGTH["AE"] == MAX_LENGTH["CS"] == MAX_LENGTH["SH"] == 16
    assert MAX_LENGTH["LO"] == MAX_LENGTH["UI"] == 64
    assert MAX_LENGTH["PN"] == 324  # five components of 64 and their four "^"
    assert MAX_LENGTH["TM"] == 16
    assert INTEGER_RANGES["IS"] == (-(2**31), 2**31 - 1)
    assert INTEGER_RANGES["UV"] == (0, 2**64 - 1)


# ---------------------------------------------------------------- SH, LO, CS


@pytest.mark.parametrize(("check", "limit"), [(short_string, 16), (long_string, 64)])
def test_short_and_long_strings_up_to_their_length(check: object, limit: int) -> None:
    assert callable(check)
    assert check("x" * limit, field="f") == "x" * limit
    assert check(f"  {'x' * limit}  ", field="f") == "x" * limit  # padding is not counted
    assert check("Ünïcode ok", field="f") == "Ünïcode ok"
    assert check(None, field="f") is None
    assert check("   ", field="f") is None
    for bad in ("x" * (limit + 1), "a\\b", "tab\there", "nul\x00", "del\x7f", "line\nbreak"):
        with pytest.raises(InvalidValue) as refused:
            check(bad, field="f")
        assert refused.value.field == "f"
    with pytest.raises(InvalidValue, match="must not be empty"):
        check("  ", field="f", required=True)


def test_code_strings() -> None:
    assert is_code_string("CHEST")
    assert is_code_string("LEFT_HAND 2")
    assert is_code_string("")
    assert is_code_string("A" * 16)
    assert not is_code_string("A" * 17)
    assert not is_code_string("chest")
    assert not is_code_string("CHEST-1")
    assert not is_code_string("CT\\MR")


# ------------------------------------------------------------------------ PN


@pytest.mark.parametrize(
    "name",
    [
        "Doe^Jane",
        "Doe",
        "Doe^Jane^Q^Dr^Jr",  # five components
        "Yamada^Tarou=山田^太郎=やまだ^たろう",  # three groups
        "=山田^太郎",  # no alphabetic group, not required
        "D" * 64 + "^" + "J" * 64,
        "^".join(["x" * 64] * 5),  # the longest: 324 characters
    ],
)
def test_person_names_accepted(name: str) -> None:
    assert person_name(name, field="n") == name
    assert len(name) <= MAX_LENGTH["PN"]


@pytest.mark.parametrize(
    "name",
    [
        "a^b^c^d^e^f",  # six components
        "a=b=c=d",  # four groups
        "D" * 65,  # a component over 64
        "Doe^" + "J" * 65,
        "Doe\\Roe",  # two values
        "Doe\x1b^Jane",
    ],
)
def test_person_names_refused(name: str) -> None:
    with pytest.raises(InvalidValue, match="not a DICOM person name") as refused:
        person_name(name, field="n")
    assert refused.value.field == "n"


def test_a_required_person_name_needs_its_alphabetic_group() -> None:
    assert person_name("  ", field="n") is None
    assert person_name("Doe=山田", field="n", required=True) == "Doe=山田"
    with pytest.raises(InvalidValue, match="must not be empty"):
        person_name(None, field="n", required=True)
    for name in ("=山田^太郎", "^=山田", " ^ ^=x"):
        with pytest.raises(InvalidValue, match="alphabetic form"):
            person_name(name, field="n", required=True)


# ------------------------------------------------------------------------ DA


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20260105", "20260105"),
        ("2026.01.05", "20260105"),  # ACR-NEMA
        ("20260231", "20260231"),  # the shape only: the calendar is another rule
        ("2026015", None),
        ("202601050", None),
        ("2026-01-05", None),
        ("", None),
    ],
)
def test_date_text_is_das_shape(value: str, expected: str | None) -> None:
    assert date_text(value) == expected


@pytest.mark.parametrize(
    ("value", "real"),
    [
        ("20260105", True),
        ("20240229", True),  # leap year
        ("20000229", True),  # divisible by 400
        ("19000229", False),  # divisible by 100 only
        ("20250229", False),
        ("20260431", False),
        ("20261301", False),
        ("20260100", False),
        ("00010101", True),
        ("00000101", False),  # no year 0
        ("99991231", True),
        ("2026010", False),
        ("2026.01.05", False),
    ],
)
def test_calendar_dates(value: str, real: bool) -> None:
    assert is_calendar_date(value) is real


def test_a_date_a_person_gives() -> None:
    assert dicom_date(" 19800131 ", field="d") == "19800131"
    assert dicom_date("", field="d") is None
    assert dicom_date(None, field="d") is None
    for bad in ("19800132", "1980.01.31", "31/01/1980", "1980013"):
        with pytest.raises(InvalidValue, match="YYYYMMDD") as refused:
            dicom_date(bad, field="d")
        assert refused.value.field == "d"


# ------------------------------------------------------------------------ TM


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("10", "100000.000000", "105959.999999"),
        ("1015", "101500.000000", "101559.999999"),
        ("101530", "101530.000000", "101530.999999"),
        ("101530.5", "101530.500000", "101530.599999"),
        ("101530.123456", "101530.123456", "101530.123456"),
        ("10:15:30", "101530.000000", "101530.999999"),  # the old form
        ("000000", "000000.000000", "000000.999999"),
        ("235960", "235960.000000", "235960.999999"),  # a leap second
        (" 1015\x00", "101500.000000", "101559.999999"),  # padding
    ],
)
def test_times_accepted(value: str, low: str, high: str) -> None:
    assert normalize_tm(value) == low
    assert normalize_tm(value, upper=True) == high


@pytest.mark.parametrize(
    "value",
    ["", "1", "101", "10153", "2400", "1060", "235961", "1015.5", "101530.1234567", "ab", None],
)
def test_times_refused(value: str | None) -> None:
    assert normalize_tm(value) is None


# ------------------------------------------------------------------------ DT

UTC_PLUS_1 = timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2026", "20260101000000.000000", "20261231235959.999999"),
        ("202602", "20260201000000.000000", "20260228235959.999999"),
        ("20240229", "20240229000000.000000", "20240229235959.999999"),
        ("20260105101530.25", "20260105101530.250000", "20260105101530.259999"),
        ("20260105120000+0100", "20260105110000.000000", "20260105110000.999999"),
        ("20260105070000-0500", "20260105120000.000000", "20260105120000.999999"),
        ("20260105120000+1400", "20260104220000.000000", "20260104220000.999999"),
        ("20261231235960", "20261231235959.999999", "20261231235959.999999"),  # leap
    ],
)
def test_date_times_accepted(value: str, low: str, high: str) -> None:
    assert normalize_dt(value, local=UTC_PLUS_1 if "+" not in value else None) is not None
    assert normalize_dt(value, local=UTC) == low
    assert normalize_dt(value, upper=True, local=UTC) == high


def test_a_date_time_without_offset_is_in_the_local_zone() -> None:
    assert normalize_dt("20260105120000", local=UTC_PLUS_1) == "20260105110000.000000"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "202",
        "2026013",
        "20261301",
        "20250229",
        "2026010524",
        "20260105120000+1500",  # beyond +1400
        "20260105120000+0160",
        "202601051200.5",  # a fraction only after whole seconds
        "20260105120000.1234567",
        "not a date",
    ],
)
def test_date_times_refused(value: str) -> None:
    assert normalize_dt(value, local=UTC) is None


# ------------------------------------------------------------------------ UI


@pytest.mark.parametrize("uid", ["1", "0", "1.2.840.10008.1.2", "2.25.0", "1." + "2" * 62, "1.0.3"])
def test_uids_accepted(uid: str) -> None:
    assert is_valid_uid(uid)
    assert validate_uid(uid + "\x00") == uid
    assert validate_uid(uid + " ") == uid


@pytest.mark.parametrize(
    "uid",
    [
        *("", "1.", ".1", "1..2", "1.02", "01.2", "1.2a", "1.2 .3", "-1.2"),
        "1." + "2" * 63,  # 65 characters
        "\uff11.\uff12",  # full-width digits
    ],
)
def test_uids_refused(uid: str) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidValue, match="StudyInstanceUID is not a valid DICOM UID"):
        validate_uid(uid, name="StudyInstanceUID")


# ------------------------------------------------------------------------ AE


def test_ae_titles() -> None:
    assert validate_ae_title("  STORESCU ") == "STORESCU"
    assert validate_ae_title("A" * 16) == "A" * 16
    assert validate_ae_title("lower case ok") == "lower case ok"
    for bad in ("", "    ", "A" * 17, "BACK\\SLASH", "TAB\tAE", "ÉCHO"):
        with pytest.raises(InvalidValue):
            validate_ae_title(bad)


# --------------------------------------------------------- defined terms


def test_modality_codes() -> None:
    assert modality_code(" ct ", field="m") == "CT"
    assert modality_code("XAPROTOCOL", field="m") == "XAPROTOCOL"
    assert {"CT", "MR", "US", "SR", "KO", "PR"} <= MODALITY_CODES
    for bad in ("", "CAT", "CT\\MR", "DS"):  # DS is retired
        with pytest.raises(InvalidValue, match="not a DICOM modality code") as refused:
            modality_code(bad, field="m")
        assert refused.value.field == "m"


def test_patient_sexes() -> None:
    assert PATIENT_SEXES == ("M", "F", "O")
