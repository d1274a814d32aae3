"""Person Name (PN) handling for matching (PS3.5 6.2.1)."""

from __future__ import annotations

import unicodedata


def fold_person_name(name: str) -> str:
    """A form of the name for case-insensitive matching.

    NFC first so that composed and decomposed accents compare equal, then
    Unicode casefold (SQL upper()/lower() are ASCII-only in SQLite).
    """
    return unicodedata.normalize("NFC", name).casefold()
