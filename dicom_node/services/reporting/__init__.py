"""Reports and what is measured of them.

- ``reports``: the lifecycle, draft -> in_review -> final -> revised (the
  REPORT table of ``domain/transitions.py``): create, edit, submit, return,
  finalize, addendum.
- ``versions``: the immutable versions every transition stores.
- ``critical_results``: the communication of a critical finding, its
  deadline, acknowledgement, and the missed deadlines.
- ``escalation``: overdue work items flagged, missed critical results
  escalated (the escalation job's one call).
- ``views``: reading reports, their versions and the list, through the one
  visibility rule (``services/access/visibility.py``).
- ``records``: the report row locked for a change and its audit event.
- ``turnaround``: median, p90 and share within SLA.
"""
