"""Storing instances.

- ``instances``: the one path behind C-STORE, ``dicom-node import`` and reindex
  (durable file first, then the index; nothing acknowledged is lost).
- ``importing``: files from disk through that path.
- ``commitment``: Storage Commitment's view of which instances are held.
"""
