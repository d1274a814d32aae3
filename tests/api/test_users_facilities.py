"""Users (admin only), imaging centers and modalities over real HTTP."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from dicom_node.db.models import AuditEvent, User
from tests.api.conftest import PASSWORD, ApiServer


def events(api: ApiServer, action: str, target_id: object | None = None) -> list[AuditEvent]:
    with api.db.read() as session:
        query = select(AuditEvent).where(AuditEvent.action == action)
        if target_id is not None:
            query = query.where(AuditEvent.target_id == str(target_id))
        return list(session.scalars(query.order_by(AuditEvent.id)))


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    return body


# --------------------------------------------------------------------------- users


def test_admin_creates_a_user_who_can_sign_in_and_no_answer_or_audit_carries_the_password(
    api: ApiServer,
) -> None:
    admin = api.client("admin")
    response = admin.post(
        "/api/users",
        json={
            "username": "New.Rad",
            "password": "a long enough secret",
            "role": "radiologist",
            "display_name": "Dr New",
            "email": "new@example.org",
            "is_lead": True,
        },
    )
    assert response.status_code == 201, response.text
    user = response.json()
    assert (user["username"], user["role"], user["is_lead"]) == ("new.rad", "radiologist", True)
    assert not {"password", "password_hash"} & set(user)
    assert "argon2" not in response.text

    token = api.token("new.rad", "a long enough secret")
    assert token
    listed = admin.get("/api/users", params={"role": "radiologist"}).json()
    assert "argon2" not in str(listed) and "a long enough secret" not in str(listed)

    (event,) = events(api, "user_created", user["id"])
    assert event.actor == admin.username  # type: ignore[attr-defined]
    # the admin as every other route names a user: id, role and client address
    with api.db.read() as session:
        admin_id = session.scalar(select(User.id).where(User.username == admin.username))  # type: ignore[attr-defined]
    assert (event.actor_user_id, event.actor_role) == (admin_id, "admin")
    assert event.source_address == "127.0.0.1"
    assert event.details["after"]["role"] == "radiologist"
    assert "secret" not in str(event.details) and "argon2" not in str(event.details)


def test_user_creation_refuses_short_passwords_bad_roles_and_taken_names(api: ApiServer) -> None:
    admin = api.client("admin")
    short = admin.post(
        "/api/users", json={"username": "shorty", "password": "123456789", "role": "scheduler"}
    )
    assert error(short, 422)["field"] == "password"
    role = admin.post(
        "/api/users", json={"username": "wizard", "password": PASSWORD, "role": "wizard"}
    )
    assert error(role, 422)["field"] == "role"
    name = admin.post(
        "/api/users", json={"username": "../etc", "password": PASSWORD, "role": "admin"}
    )
    assert error(name, 422)["field"] == "username"
    taken = admin.post(
        "/api/users",
        json={"username": admin.username, "password": PASSWORD, "role": "admin"},  # type: ignore[attr-defined]
    )
    assert error(taken, 409)["code"] == "conflict"


def test_only_admins_manage_users(api: ApiServer) -> None:
    for role in ("scheduler", "technologist", "radiologist", "referring_physician", "auditor"):
        client = api.client(role)
        assert client.get("/api/users").status_code == 403
        response = client.post(
            "/api/users", json={"username": f"x-{role}", "password": PASSWORD, "role": "admin"}
        )
        assert response.status_code == 403


def test_user_listing_filters_sorts_and_pages(api: ApiServer) -> None:
    admin = api.client("admin")
    for name in ("rad-b", "rad-a", "rad-c"):
        api.user("radiologist", username=name)
    api.user("scheduler", username="sched-z")
    page = admin.get(
        "/api/users", params={"role": "radiologist", "sort": "-username", "limit": 2}
    ).json()
    assert page["total"] == 3 and page["limit"] == 2
    assert [u["username"] for u in page["items"]] == ["rad-c", "rad-b"]
    rest = admin.get(
        "/api/users", params={"role": "radiologist", "sort": "-username", "offset": 2}
    ).json()
    assert [u["username"] for u in rest["items"]] == ["rad-a"]
    found = admin.get("/api/users", params={"q": "SCHED"}).json()
    assert [u["username"] for u in found["items"]] == ["sched-z"]
    # query parameters are named with their location (api/errors.py)
    bad_sort = admin.get("/api/users", params={"sort": "password_hash"})
    assert error(bad_sort, 422)["field"] == "query.sort"
    assert admin.get("/api/users/999999").status_code == 404


def test_user_update_is_audited_with_before_and_after_and_deactivation_ends_sessions(
    api: ApiServer,
) -> None:
    admin = api.client("admin")
    rad = api.client("radiologist")
    with api.db.read() as session:
        rad_id = session.scalar(select(User.id).where(User.username == rad.username))  # type: ignore[attr-defined]
    response = admin.patch(
        f"/api/users/{rad_id}", json={"display_name": "Dr Lead", "is_lead": True}
    )
    assert response.status_code == 200, response.text
    assert (response.json()["display_name"], response.json()["is_lead"]) == ("Dr Lead", True)
    (event,) = events(api, "user_updated", rad_id)
    assert event.details["before"] == {"display_name": rad.username.title(), "is_lead": False}  # type: ignore[attr-defined]
    assert event.details["after"] == {"display_name": "Dr Lead", "is_lead": True}

    # a lead who becomes a scheduler stops being lead
    demoted = admin.patch(f"/api/users/{rad_id}", json={"role": "scheduler"}).json()
    assert (demoted["role"], demoted["is_lead"]) == ("scheduler", False)

    assert rad.get("/api/me").status_code == 200
    assert admin.patch(f"/api/users/{rad_id}", json={"is_active": False}).status_code == 200
    assert rad.get("/api/me").status_code == 401
    unchanged = admin.patch(f"/api/users/{rad_id}", json={"is_active": None, "role": None})
    assert (unchanged.json()["is_active"], unchanged.json()["role"]) == (False, "scheduler")


def test_the_last_active_admin_cannot_be_deactivated(api: ApiServer) -> None:
    admin = api.client("admin")
    with api.db.read() as session:
        admin_id = session.scalar(select(User.id).where(User.username == admin.username))  # type: ignore[attr-defined]
    body = error(admin.patch(f"/api/users/{admin_id}", json={"is_active": False}), 409)
    assert body["current_state"] == "admin"
    api.user("admin")
    assert admin.patch(f"/api/users/{admin_id}", json={"role": "auditor"}).status_code == 200


def test_password_reset_revokes_tokens_and_is_audited_without_the_secret(api: ApiServer) -> None:
    admin = api.client("admin")
    tech = api.client("technologist")
    with api.db.read() as session:
        tech_id = session.scalar(select(User.id).where(User.username == tech.username))  # type: ignore[attr-defined]
    short = admin.post(f"/api/users/{tech_id}/password", json={"password": "short"})
    assert error(short, 422)["field"] == "password"
    response = admin.post(f"/api/users/{tech_id}/password", json={"password": "brand new secret"})
    assert response.status_code == 200, response.text
    assert tech.get("/api/me").status_code == 401
    assert api.token(tech.username, "brand new secret")  # type: ignore[attr-defined]
    (event,) = events(api, "user_password_reset", tech_id)
    assert event.details == {"tokens_revoked": 1}
    assert "brand new secret" not in str(event.details)


# --------------------------------------------------------------------------- facilities


def _center(admin: httpx.Client, code: str = "MAIN") -> dict[str, Any]:
    response = admin.post(
        "/api/imaging-centers", json={"name": f"Center {code}", "code": code, "location": "Here"}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_centers_are_created_listed_and_updated_by_admins_and_read_by_staff(
    api: ApiServer,
) -> None:
    admin = api.client("admin")
    main = _center(admin, "MAIN")
    _center(admin, "NORTH")
    assert error(admin.post("/api/imaging-centers", json={"name": "X", "code": "MAIN"}), 409)
    assert error(admin.post("/api/imaging-centers", json={"name": "X", "code": "a b"}), 422)[
        "field"
    ] == ("code")

    tech = api.client("technologist")
    listed = tech.get("/api/imaging-centers", params={"sort": "-code"}).json()
    assert [c["code"] for c in listed["items"]] == ["NORTH", "MAIN"]
    assert tech.get(f"/api/imaging-centers/{main['id']}").json()["name"] == "Center MAIN"
    assert tech.post("/api/imaging-centers", json={"name": "T", "code": "T"}).status_code == 403
    assert api.client("referring_physician").get("/api/imaging-centers").status_code == 403

    updated = admin.patch(f"/api/imaging-centers/{main['id']}", json={"location": "There"})
    assert updated.status_code == 200 and updated.json()["location"] == "There"
    (event,) = events(api, "imaging_center_updated", main["id"])
    assert event.details == {"before": {"location": "Here"}, "after": {"location": "There"}}
    assert len(events(api, "imaging_center_created")) == 2


def test_modalities_validate_ae_title_type_and_status_and_refuse_a_taken_ae_title(
    api: ApiServer,
) -> None:
    admin = api.client("admin")
    center = _center(admin)

    def create(**fields: Any) -> httpx.Response:
        body = {"imaging_center_id": center["id"], "name": "CT 1", "type": "CT"} | fields
        return admin.post("/api/modalities", json=body)

    created = create(dicom_ae_title="CT_MAIN_1", station_name="CTSTATION")
    assert created.status_code == 201, created.text
    modality = created.json()
    assert (modality["type"], modality["status"]) == ("CT", "active")

    assert error(create(dicom_ae_title="CT_MAIN_1"), 409)["code"] == "conflict"
    assert error(create(dicom_ae_title="A" * 17), 422)["field"] == "dicom_ae_title"
    assert error(create(dicom_ae_title="BAD\\AE"), 422)["field"] == "dicom_ae_title"
    assert error(create(dicom_ae_title="   "), 422)["field"] == "dicom_ae_title"
    assert error(create(dicom_ae_title="MR_1", type="MRI"), 422)["field"] == "type"
    assert error(create(dicom_ae_title="MR_1", status="broken"), 422)["field"] == "status"
    assert error(create(dicom_ae_title="MR_1", type="mr"), 422)["field"] == "type"
    unknown_center = create(dicom_ae_title="MR_1", imaging_center_id=999999)
    assert "imaging center" in error(unknown_center, 404)["message"]

    changed = admin.patch(f"/api/modalities/{modality['id']}", json={"status": "maintenance"})
    assert changed.status_code == 200 and changed.json()["status"] == "maintenance"
    (event,) = events(api, "modality_updated", modality["id"])
    assert event.details == {"before": {"status": "active"}, "after": {"status": "maintenance"}}
    assert event.event_code == "110113"

    other = create(dicom_ae_title="MR_1", type="MR").json()
    assert other["type"] == "MR"
    clash = admin.patch(f"/api/modalities/{other['id']}", json={"dicom_ae_title": "CT_MAIN_1"})
    assert error(clash, 409)["code"] == "conflict"

    radiologist = api.client("radiologist")
    listed = radiologist.get("/api/modalities", params={"status": "maintenance"}).json()
    assert [m["dicom_ae_title"] for m in listed["items"]] == ["CT_MAIN_1"]
    by_type = radiologist.get("/api/modalities", params={"type": "MR"}).json()
    assert by_type["total"] == 1
    assert radiologist.patch(f"/api/modalities/{other['id']}", json={"name": "x"}).status_code == (
        403
    )
