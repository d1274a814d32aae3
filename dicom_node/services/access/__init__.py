"""Who may do what.

- ``users``, ``passwords``: accounts and argon2id hashing.
- ``auth``: sign-in, bearer tokens, lock-out.
- ``known_aes``, ``refusals``: DICOM peers the node knows, and the audited
  refusals of those it does not.
"""
