"""Checking what a GraphQL caller sent, as REST checks the same values.

Mutations and listings hand their arguments to REST's own request models
(``validated``), so a value REST answers 422 is refused here too, for the same
reason; the error is BAD_USER_INPUT naming the field as the caller spelt it
(errors.py turns the services' snake_case field names into camelCase).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import strawberry
from pydantic import BaseModel, ValidationError

from api.schemas.common import MAX_ID
from dicom_node.domain.errors import InvalidValue

M = TypeVar("M", bound=BaseModel)

# no control characters: PostgreSQL cannot even compare a NUL (REST's NO_CONTROLS)
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def validated(model: type[M], values: Mapping[str, Any]) -> M:
    """``values`` checked by the REST request ``model``; its first complaint
    is InvalidValue (BAD_USER_INPUT) naming the field, as REST's 422 does."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ()))
        raise InvalidValue(f"{field}: {first.get('msg', 'invalid')}", field=field) from None


def record_id(value: int, *, field: str = "id") -> int:
    """A record id as REST's path accepts it (1..MAX_ID); BAD_USER_INPUT otherwise."""
    if not 1 <= value <= MAX_ID:
        raise InvalidValue(f"{field} must be between 1 and {MAX_ID}", field=field)
    return value


def given(values: Mapping[str, Any]) -> dict[str, Any]:
    """The input fields the caller sent (an omitted one is UNSET, an explicit
    null is None): what REST's ``exclude_unset`` keeps."""
    return {name: value for name, value in values.items() if value is not strawberry.UNSET}


def given_fields(source: object) -> dict[str, Any]:
    """``given`` of an input object's fields."""
    return given({name: value for name, value in vars(source).items() if not name.startswith("_")})


def plain_text(value: str | None, *, field: str, max_length: int) -> str | None:
    """A text filter as REST accepts it: at most ``max_length`` characters,
    no control characters (BAD_USER_INPUT on ``field`` otherwise)."""
    if value is None:
        return None
    if len(value) > max_length:
        raise InvalidValue(f"{field} is longer than {max_length} characters", field=field)
    if _CONTROLS.search(value):
        raise InvalidValue(f"{field} must not contain control characters", field=field)
    return value


def camel_keys(value: Any) -> Any:
    """``value`` with every dictionary key in camelCase, at any depth."""
    if isinstance(value, dict):
        return {camel(str(key)): camel_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [camel_keys(item) for item in value]
    return value


def camel(name: str) -> str:
    """``patient_name`` -> ``patientName`` (each dotted part)."""
    parts = []
    for part in name.split("."):
        head, *rest = part.split("_")
        parts.append(head + "".join(word[:1].upper() + word[1:] for word in rest))
    return ".".join(parts)
