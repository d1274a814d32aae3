"""The one PN rule (domain/names.py) on its own: folding and matching in Python."""

from __future__ import annotations

import unicodedata

import pytest

from dicom_node.domain.names import fold_person_name, person_name_matches
from dicom_node.domain.query import AnyOf, Single, Universal, Wildcard, parse_match

FOLDS = [
    ("DOE^JOHN", "doe^john"),
    # trailing empty components and groups are not part of the name (PS3.5 6.2.1.1)
    ("DOE^JOHN^^^", "doe^john"),
    ("DOE^", "doe"),
    ("DOE^JOHN==", "doe^john"),
    ("DOE^JOHN ", "doe^john"),
    # an empty alphabetic group in front stays: groups are positional
    ("=山田^太郎", "=山田^太郎"),
    ("Yamada^Tarou=山田^太郎^^=やまだ^たろう", "yamada^tarou=山田^太郎=やまだ^たろう"),
    # per value of a multi-valued element
    ("SMITH^J^\\KOCH^EVA==", "smith^j\\koch^eva"),
    # Unicode case folding, not ASCII lower(): sharp s, final sigma, Cyrillic
    ("STRAẞE^ß", "strasse^ss"),
    ("ΣΩΚΡΆΤΗΣ", "σωκράτησ"),
    ("σωκράτης", "σωκράτησ"),
    ("ИВАНОВ^ИВАН", "иванов^иван"),
    # composed and decomposed accents fold alike
    ("Mu\u0308ller", "müller"),
]


@pytest.mark.parametrize(("name", "folded"), FOLDS)
def test_fold(name: str, folded: str) -> None:
    assert fold_person_name(name) == folded
    assert unicodedata.is_normalized("NFC", fold_person_name(name))


STORED = "Yamada^Tarou=山田^太郎=やまだ^たろう"
CASES = [
    # case-insensitive single value on the whole group
    ("yamada^tarou", STORED, True),
    ("YAMADA^TAROU", STORED, True),
    ("yamada", STORED, False),  # a single value is a whole group, not a prefix
    ("yamada^tarou^^", STORED, True),
    # any one component group
    ("山田^太郎", STORED, True),
    ("やまだ^たろう", STORED, True),
    ("やまだ^*", STORED, True),
    ("*^太郎", STORED, True),
    # with "=": the whole value, every group as given
    ("Yamada^Tarou=山田^太郎=やまだ^たろう", STORED, True),
    ("YAMADA^TAROU=山田^太郎=やまだ^たろう", STORED, True),
    ("Yamada^Tarou=山田^太郎", STORED, False),
    ("=山田^太郎", "=山田^太郎", True),
    ("*=山田^太郎*", STORED, True),
    # any one value of a multi-valued name
    ("koch^eva", "Smith^John\\Koch^Eva", True),
    ("KOCH*", "Smith^John\\Koch^Eva", True),
    ("smith^john\\nobody", "Koch^Eva\\Smith^John", True),
    ("eva", "Smith^John\\Koch^Eva", False),
    # ? is one character, never none
    ("SM?TH^JOHN", "smith^john", True),
    ("SM?TH^JOHN", "smth^john", False),
    # a key that folds to nothing matches no name
    ("^", "DOE^JOHN", False),
]


@pytest.mark.parametrize(("key", "stored", "expected"), CASES)
def test_person_name_matches(key: str, stored: str, expected: bool) -> None:
    match = parse_match("PN", key, keyword="PatientName")
    assert person_name_matches(match, stored) is expected


def test_universal_matching_and_absent_names() -> None:
    assert person_name_matches(Universal(), None)
    assert person_name_matches(parse_match("PN", "*", keyword="PatientName"), None)
    assert not person_name_matches(Single("doe"), None)
    assert not person_name_matches(Wildcard("d*"), "")
    assert person_name_matches(AnyOf((Single("x"), Wildcard("d*"))), "Doe")
