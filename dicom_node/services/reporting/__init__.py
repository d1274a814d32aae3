"""Reports and what is measured of them.

- ``reports``: draft, review, sign-off, addenda, critical results.
- ``turnaround``: median, p90 and share within SLA.
"""
