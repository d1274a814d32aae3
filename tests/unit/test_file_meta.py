"""scp/file_meta.py writes what pydicom writes (its pydicom_prefix, the build
scp/store.py's part10_prefix used alone before), byte for byte, or declines."""

from __future__ import annotations

import pytest

from dicom_node.scp.file_meta import encode_prefix, part10_prefix, pydicom_prefix

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _pydicom(sop_class: str, sop_instance: str, syntax: str, ae: str) -> bytes:
    return pydicom_prefix(sop_class, sop_instance, syntax, ae)


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "syntax", "ae"),
    [
        (CT, "1.2.3", EXPLICIT_LE, "STORESCU"),
        (CT, "1.2.34", "1.2.840.10008.1.2", "A"),
        ("1.2.840.10008.5.1.4.1.1.7", "1." + "2" * 62, "1.2.840.10008.1.2.4.70", "MODALITY_CT_01"),
        (CT, "2.25.1", "1.2.840.10008.1.2.1.99", "AE WITH SPACE"),
        (CT, "1.2.3.4.5", EXPLICIT_LE, "SIXTEEN_CHARS_AE"),
    ],
)
def test_the_prefix_is_what_pydicom_writes(
    sop_class: str, sop_instance: str, syntax: str, ae: str
) -> None:
    assert encode_prefix(sop_class, sop_instance, syntax, ae) == _pydicom(
        sop_class, sop_instance, syntax, ae
    )


@pytest.mark.parametrize(
    ("sop_instance", "ae"),
    [
        ("1.2.3 ", "STORESCU"),  # not digits and dots
        ("1.2.abc", "STORESCU"),
        ("1." + "2" * 63, "STORESCU"),  # over 64 characters
        ("", "STORESCU"),
        ("1.2.3", ""),
        ("1.2.3", "BACK\\SLASH"),
        ("1.2.3", "ÄE"),
        ("1.2.3", " LEADING"),
    ],
)
def test_what_it_does_not_cover_it_declines(sop_instance: str, ae: str) -> None:
    assert encode_prefix(CT, sop_instance, EXPLICIT_LE, ae) is None


def test_what_it_declines_pydicom_builds() -> None:
    assert part10_prefix(CT, "1.2.abc", EXPLICIT_LE, "STORESCU") == _pydicom(
        CT, "1.2.abc", EXPLICIT_LE, "STORESCU"
    )
