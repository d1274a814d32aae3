"""DICOM UIDs (PS3.5 9.1): validation and generation."""

from __future__ import annotations

import re
import uuid

from dicom_node.domain.errors import InvalidValue

UID_MAX_LENGTH = 64
# Components are digits without leading zeros (a lone "0" is fine), joined by dots.
_UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_valid_uid(value: str) -> bool:
    return len(value) <= UID_MAX_LENGTH and _UID_PATTERN.fullmatch(value) is not None


def validate_uid(value: str, *, name: str = "UID") -> str:
    """Return the UID with DICOM's trailing NUL/space padding removed, or raise.

    Only a validated UID may ever become part of a file path.
    """
    stripped = value.rstrip("\x00 ")
    if not is_valid_uid(stripped):
        raise InvalidValue(f"{name} is not a valid DICOM UID")
    return stripped


def new_uid() -> str:
    """A new UID under the UUID-derived root 2.25 (PS3.5 B.2): never regenerated."""
    return f"2.25.{uuid.uuid4().int}"
