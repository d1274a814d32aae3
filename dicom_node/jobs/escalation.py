"""The escalation job: ``services/reporting/escalation.escalate`` in one unit
of work, every ``escalation_interval_seconds`` (registered in ``node.py``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from dicom_node.db.engine import Database
from dicom_node.services.reporting.escalation import EscalationResult, escalate

log = logging.getLogger("dicom_node.jobs.escalation")


def run_escalation(db: Database, *, now: datetime | None = None) -> EscalationResult:
    with db.unit_of_work() as session:
        result = escalate(session, now=now or datetime.now(UTC))
    # counts only: no identifiers, no PHI
    log.info("escalation: %s", result)
    return result
