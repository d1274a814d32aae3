"""The audit trail (PS3.15 vocabulary, append-only down to the database).

- ``record``: the only writer of audit rows, each chained to the one before.
- ``chain``: checking the hash chain and the database's refusal to rewrite it.
- ``trail``: reading the trail (itself audited).
"""
