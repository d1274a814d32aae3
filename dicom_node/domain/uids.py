"""New DICOM UIDs (PS3.5 9.1, B.2). What a UID may be: domain/vr.py (UI)."""

from __future__ import annotations

import uuid


def new_uid() -> str:
    """A new UID under the UUID-derived root 2.25 (PS3.5 B.2): never regenerated."""
    return f"2.25.{uuid.uuid4().int}"
