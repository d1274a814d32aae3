"""Person Name (PN) matching: one rule for every PN key (PS3.4 C.2.2.2, PS3.5 6.2.1).

What a PN value may be is domain/vr.py; this module is how PN values compare.

Every PN attribute the node matches (PatientName, ReferringPhysicianName, the
worklist's ScheduledPerformingPhysicianName...) is compared the same way, chosen
by its VR alone:

- case-insensitively: both sides are folded (``fold_person_name``); PS3.4
  C.2.2.2.1 and C.2.2.2.4 leave PN case to the SCP, and SQL ``upper()`` is
  ASCII-only in SQLite, so the index keeps a folded copy of each PN column;
- a key without ``=`` matches when it matches any one component group
  (alphabetic, ideographic, phonetic) of any one value of the attribute:
  ``山田^太郎`` finds ``Yamada^Tarou=山田^太郎=やまだ^たろう``;
- a key with ``=`` matches a whole value, all its component groups;
- ``*`` and ``?`` are wildcards in both (PS3.4 C.2.2.2.4 leaves PN wildcard
  matching to the implementation: a wildcard may also match across the ``=``
  between component groups, or the ``\\`` between values, see
  ``name_pattern``);
- an empty key or a lone ``*`` is universal matching (the parser's business).

The database (``db/query.py``, LIKE) and Python (sequence items, here) apply
the same patterns to the same forms of the stored name, so both agree.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from dicom_node.domain.query import AnyOf, Match, Single, Universal, Wildcard, wildcard_matches
from dicom_node.domain.vr import PN_COMPONENT_DELIMITER, PN_GROUP_DELIMITER, VALUE_DELIMITER


def fold_person_name(name: str) -> str:
    """The form of a PN value (or of several, backslash-separated) that matching
    compares: case-folded, and without what PS3.5 6.2.1 says is not part of it.

    NFC first so that composed and decomposed accents compare equal, then
    Unicode casefold (``ß`` and ``ss``, Greek final sigma), then NFC again (a
    fold may decompose). Per value, trailing empty components and component
    groups are dropped with trailing spaces (PS3.5 6.2.1.1: ``SMITH^JOHN^^``
    is ``SMITH^JOHN``, ``SMITH^`` is ``SMITH``).
    """
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())
    return VALUE_DELIMITER.join(_trimmed(value) for value in folded.split(VALUE_DELIMITER))


def _trimmed(value: str) -> str:
    groups = [
        group.rstrip(PN_COMPONENT_DELIMITER + " ") for group in value.split(PN_GROUP_DELIMITER)
    ]
    while groups and not groups[-1]:
        groups.pop()
    return PN_GROUP_DELIMITER.join(groups)


class NameForm(StrEnum):
    """The form of a stored folded name a key is compared with."""

    # each component group of each value, between "=": "=a=b=\=c=" for "a=b\c"
    GROUPS = "groups"
    # each whole value, between "\": "\a=b\c\" for "a=b\c"
    VALUES = "values"


@dataclass(frozen=True, slots=True)
class NamePattern:
    form: NameForm
    # DICOM wildcard syntax: * and ? are wildcards, every other character itself
    pattern: str


def name_pattern(key: str) -> NamePattern | None:
    """What one value of a PN key is matched as; None when it matches no name
    (a key that folds to nothing, like ``^``: no stored name is empty, those
    are absent).

    The stored form is delimited on both sides, so the pattern matches a whole
    group (or value), never part of one: ``*=smith=*`` does not match
    ``=smithson=``. Inside the key, a ``*`` or ``?`` is free to match the
    delimiters too (``s*k`` matches ``smith\\koch`` as ``=smith=\\=koch=``
    reads): both LIKE and ``wildcard_matches`` know no character classes.
    """
    folded = fold_person_name(key)
    if not folded:
        return None
    if PN_GROUP_DELIMITER in folded:
        return NamePattern(NameForm.VALUES, f"*{VALUE_DELIMITER}{folded}{VALUE_DELIMITER}*")
    return NamePattern(NameForm.GROUPS, f"*{PN_GROUP_DELIMITER}{folded}{PN_GROUP_DELIMITER}*")


def name_form(folded: str, form: NameForm) -> str:
    """The stored folded name in ``form`` (what the SQL builds with replace())."""
    if form is NameForm.GROUPS:
        between = f"{PN_GROUP_DELIMITER}{VALUE_DELIMITER}{PN_GROUP_DELIMITER}"
        return f"{PN_GROUP_DELIMITER}{folded.replace(VALUE_DELIMITER, between)}{PN_GROUP_DELIMITER}"
    return f"{VALUE_DELIMITER}{folded}{VALUE_DELIMITER}"


def person_name_matches(match: Match, stored: str | None) -> bool:
    """Whether a stored PN value (as sent, one value or several) matches a PN
    key, by the rule above; the Python twin of db/query.py's SQL."""
    if isinstance(match, Universal):
        return True
    if not stored:
        return False
    if isinstance(match, AnyOf):
        return any(person_name_matches(part, stored) for part in match.matches)
    if not isinstance(match, Single | Wildcard):
        raise TypeError(f"not a PN match: {match!r}")
    key = match.value if isinstance(match, Single) else match.pattern
    pattern = name_pattern(key)
    if pattern is None:
        return False
    return wildcard_matches(pattern.pattern, name_form(fold_person_name(stored), pattern.form))
