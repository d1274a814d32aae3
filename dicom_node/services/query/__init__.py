"""Reading the index, all through the one C-FIND compiler (``db/query.py``).

- ``find``: C-FIND Patient/Study Root answers.
- ``studies``: the HTTP study search and detail, corrections and rejection.
- ``modality_worklist``: Modality Worklist answers (RAD-5), not the reading
  worklist (that is ``workflow.reading_worklist``).
- ``retrieve``: the instances a C-MOVE or C-GET names.
- ``changes``: the change feed, filtered to what the caller may see.
"""
