"""Which user an order is for: its referring physician as a user of the node.

Two ways an order gets its ``referring_physician_id`` (the visibility rule,
``services/access/visibility.py``, lets that user see the order):

- chosen: the scheduler (or an admin) picks the physician from the user list;
  the user must be an active referring physician (else 422 on the field), and
  the order's ReferringPhysicianName is filled from them when not given;
- matched: an order whose ReferringPhysicianName is set by hand (or changed)
  without a chosen user is linked to the one active referring physician whose
  DICOM name is that name; to nobody when none or several match.

A user's DICOM name is their ``display_name`` read as a PN value (PS3.5
6.2.1): an admin writes a referring physician's display name in DICOM form,
``Family^Given``, the form modalities and HL7 feeds use. Names compare by the
one PN folding rule (``domain/names.py``): case-insensitive, trailing empty
components ignored, so ``FERRER^RAY`` is ``Ferrer^Ray^^``. Exact otherwise:
no wildcards, no partial names, a guess would show a patient's record to the
wrong physician.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.models import User
from dicom_node.domain.enums import Role
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.names import fold_person_name
from dicom_node.domain.permissions import Principal
from dicom_node.domain.vr import person_name

FIELD = "referring_physician_id"


def chosen_referrer(session: Session, user_id: int) -> User:
    """The user the scheduler chose; InvalidValue (422 on the field) unless an
    active referring physician."""
    user = session.get(User, user_id)
    if user is None or not user.is_active or user.role != Role.REFERRING_PHYSICIAN.value:
        raise InvalidValue(f"user {user_id} is not an active referring physician", field=FIELD)
    return user


def dicom_name(display_name: str | None) -> str | None:
    """A user's DICOM name: their display name as a PN value; None when it is
    empty or no valid PN (then only the id links them)."""
    try:
        return person_name(display_name, field="display_name")
    except InvalidValue:
        return None


def matched_referrer(session: Session, name: str | None, *, by: Principal) -> int | None:
    """The one active referring physician whose DICOM name is ``name``; None for
    no name, no match or several (an ambiguous name links nobody).

    A referring physician writing the name (``by``) links only themselves: a
    colleague's name must not do what naming the colleague by id may not
    (403), which would show the colleague an order they never asked to see."""
    found = _matched(session, name)
    if by.role is Role.REFERRING_PHYSICIAN and found != by.user_id:
        return None
    return found


def _matched(session: Session, name: str | None) -> int | None:
    wanted = fold_person_name(name) if name else ""
    if not wanted:
        return None
    candidates = session.execute(
        select(User.id, User.display_name).where(
            User.role == Role.REFERRING_PHYSICIAN.value, User.is_active.is_(True)
        )
    ).all()
    # folded in Python by the one rule: users carry no folded copy of their name,
    # and the referring physicians are a few hundred rows at most
    found = [
        user_id
        for user_id, display in candidates
        if display and fold_person_name(display.strip()) == wanted
    ]
    return found[0] if len(found) == 1 else None
