"""What routes receive from the composition root, via app.state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from dicom_node.db.engine import Database


@dataclass(frozen=True)
class ApiContext:
    db: Database
    # Named liveness probes from the other front-ends (e.g. "dicom": is the SCP
    # listening?), passed in by the composition root so api/ never imports scp/.
    probes: dict[str, Callable[[], bool]] = field(default_factory=dict)


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context
