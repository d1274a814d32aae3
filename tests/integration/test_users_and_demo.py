from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select

from dicom_node.db.engine import Database
from dicom_node.db.models import AuditEvent, ImagingCenter, ImagingRequest, Modality, User
from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.domain.demo import DEMO_STUDIES, DEMO_USERS
from dicom_node.domain.enums import RequestStatus, Role
from dicom_node.domain.errors import AlreadyExists, InvalidValue
from dicom_node.domain.vr import is_valid_uid
from dicom_node.services.access.users import create_user
from dicom_node.services.operations.demo import load_demo


def test_created_user_has_an_argon2_hash_and_an_audit_event(db: Database) -> None:
    with db.unit_of_work() as session:
        info = create_user(
            session,
            username="Admin",
            password="correct horse",
            role="admin",
            actor=Actor.system(SystemActor.CLI),
        )
    assert info.username == "admin"
    assert info.role is Role.ADMIN
    with db.read() as session:
        user = session.scalars(select(User)).one()
        assert user.password_hash.startswith("$argon2id$")
        assert "correct horse" not in user.password_hash
        assert PasswordHasher().verify(user.password_hash, "correct horse")
        event = session.scalars(select(AuditEvent)).one()
        assert (event.action, event.target_id, event.actor) == ("user_created", str(info.id), "cli")
        assert "correct horse" not in str(event.details)


def test_second_user_with_the_same_name_is_refused(db: Database) -> None:
    with db.unit_of_work() as session:
        create_user(
            session,
            username="ann",
            password="0123456789",
            role="radiologist",
            actor=Actor.system(SystemActor.CLI),
        )
    with pytest.raises(AlreadyExists), db.unit_of_work() as session:
        create_user(
            session,
            username="ANN",
            password="0123456789",
            role="admin",
            actor=Actor.system(SystemActor.CLI),
        )


@pytest.mark.parametrize(
    ("username", "password", "role", "message"),
    [
        ("ok", "short", "admin", "at least"),
        ("ok", "0123456789", "wizard", "unknown role"),
        ("../etc", "0123456789", "admin", "username"),
        ("x", "0123456789", "admin", "username"),
    ],
)
def test_invalid_user_input_is_refused_and_nothing_is_written(
    db: Database, username: str, password: str, role: str, message: str
) -> None:
    with pytest.raises(InvalidValue, match=message), db.unit_of_work() as session:
        create_user(
            session,
            username=username,
            password=password,
            role=role,
            actor=Actor.system(SystemActor.CLI),
        )
    with db.read() as session:
        assert session.scalar(select(func.count(User.id))) == 0
        assert session.scalar(select(func.count(AuditEvent.id))) == 0


def test_demo_loads_scheduled_orders_matching_the_sample_studies(db: Database) -> None:
    with db.unit_of_work() as session:
        summary = load_demo(session, password="demo-password-1", actor="cli")
    ordered = [study for study in DEMO_STUDIES if study.ordered]
    assert len(summary.orders_created) == len(ordered)
    assert len(summary.users_created) == len(DEMO_USERS)
    with db.read() as session:
        roles = {user.username: user.role for user in session.scalars(select(User))}
        # one user per role, the admin and the auditor included
        assert set(roles.values()) == {role.value for role in Role}
        assert {u.username: u.role.value for u in summary.users_created} == roles
        orders = {o.accession_number: o for o in session.scalars(select(ImagingRequest))}
        for study in ordered:
            order = orders[study.accession_number]
            assert order.status == RequestStatus.SCHEDULED.value
            assert order.study_instance_uid == study.study_instance_uid
            assert is_valid_uid(order.study_instance_uid)
            assert order.patient_id == study.patient_id
            assert order.scheduled_modality_id is not None
        unordered = [s for s in DEMO_STUDIES if not s.ordered]
        assert unordered and all(s.accession_number not in orders for s in unordered)
        assert session.scalar(select(func.count(ImagingCenter.id))) == 2
        assert session.scalar(select(func.count(Modality.id))) == 2


def test_loading_the_demo_twice_creates_nothing_new(db: Database) -> None:
    with db.unit_of_work() as session:
        load_demo(session, password="demo-password-1", actor="cli")
    with db.read() as session:
        events = session.scalar(select(func.count(AuditEvent.id)))
    with db.unit_of_work() as session:
        again = load_demo(session, password="demo-password-1", actor="cli")
    assert again.describe().startswith("demo data loaded: 0 centers, 0 modalities, 0 users, 0 ")
    with db.read() as session:
        assert session.scalar(select(func.count(ImagingRequest.id))) == 3
        assert session.scalar(select(func.count(AuditEvent.id))) == events
