"""A field's permission, from the one permission table (domain/permissions.py).

Every root field (query, mutation, subscription) and every field that leads
from one kind of record to another (a worklist item's report) carries
``extensions=[requires(Permission.X)]``. A caller whose role (or API key's
scopes) lacks it gets a GraphQL error with ``extensions.code = "FORBIDDEN"``
for that field, never a silent null. The permission-matrix test walks the
schema for these, as the REST route-matrix test walks the routes' ``require``.

Ownership rules that depend on the record (a referring physician's
visibility, only the author edits a draft) stay in the services, as on REST.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from strawberry.extensions import FieldExtension
from strawberry.types import Info

from dicom_node.domain.errors import Forbidden
from dicom_node.domain.permissions import Permission, Principal


def check(principal: Principal, permission: Permission) -> None:
    """Raise Forbidden (code FORBIDDEN) unless ``principal`` holds ``permission``;
    the message says why, as REST's ``require`` does."""
    if principal.can(permission):
        return
    if principal.scopes is not None and permission not in principal.scopes:
        raise Forbidden(f"the API key's scopes do not allow {permission.value}")
    raise Forbidden(f"role {principal.role.value} may not {permission.value}")


class Requires(FieldExtension):
    """The field's permission, checked before its resolver runs."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    def resolve(
        self, next_: Callable[..., Any], source: Any, info: Info[Any, Any], **kwargs: Any
    ) -> Any:
        check(info.context.user, self.permission)
        return next_(source, info, **kwargs)

    async def resolve_async(
        self,
        next_: Callable[..., Awaitable[Any]],
        source: Any,
        info: Info[Any, Any],
        **kwargs: Any,
    ) -> Any:
        check(info.context.user, self.permission)
        return await next_(source, info, **kwargs)


def requires(permission: Permission) -> Requires:
    """``strawberry.field(extensions=[requires(Permission.X)])``."""
    return Requires(permission)
