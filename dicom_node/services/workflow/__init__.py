"""The order-aware workflow (docs/domain.md).

- ``orders``: imaging requests and their states.
- ``reading_worklist``: the radiologists' queues and claims (not the Modality
  Worklist, which is ``query.modality_worklist``).
- ``completeness``: receiving -> quiet -> complete.
- ``matching``: tying a study to the order it fulfils.
- ``reconciliation``: unmatched and conflicting studies, unscheduled exams.
- ``mpps``: Modality Performed Procedure Step.
- ``facilities``: imaging centers and modalities.
"""
