"""Use cases shared by the DICOM, HTTP and scheduler front-ends.

Each takes a session (one unit of work, opened by the caller) and returns
domain values, never ORM rows.
"""
